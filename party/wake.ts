import type * as Party from "partykit/server";
import { knownTenants } from "./auth";
import { callTenant } from "./calls";

// The first request an isolate serves wakes, through each tenant's index, every session
// with something due (open reservations, pending approvals). A session's alarm is what
// settles a reservation whose call never came back; after `partykit dev` restarts, the
// runtime does not fire the alarms of objects it has not started again, so without this
// such reservations would stay open until someone wrote to the session.

let woken = false;

export function wakeOnce(lobby: Party.FetchLobby, ctx: Party.ExecutionContext) {
  if (woken) return;
  woken = true;
  let tenants: string[];
  try {
    tenants = knownTenants((lobby.env as Record<string, unknown>).GOVERNOR_TOKENS as string | undefined);
  } catch {
    return; // misconfigured tokens: every request says so already
  }
  ctx.waitUntil(
    Promise.all(
      tenants.map((t) =>
        callTenant(lobby, t, { op: "wake-sessions" })
          .then((r) => r.body?.cancel())
          .catch((e) => console.error(`tenant ${t}: sessions not woken`, e)),
      ),
    ),
  );
}
