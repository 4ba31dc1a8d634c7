import type { Role } from "../../schema/protocol";

// Who the console signs in as. The token lives in this tab only (sessionStorage) and is
// taken off the address bar as soon as it is read, so it stays out of history and
// screenshots. The tenant, role and name are the token's, from GET /v1/whoami: a
// `?tenant=` in the address (a notification's link) is only what the link expected.

const KEY = { token: "governor.token" };

export const config = {
  token: null as string | null,
  /** The token's tenant; empty until whoami has answered. */
  tenant: "",
  role: null as Role | null,
  name: "",
  /** The tenant the address asked for, when it named one. */
  asked: null as string | null,
};

export function readConfig(): void {
  const url = new URL(location.href);
  const q = url.searchParams;
  const token = q.get("token");
  if (token) {
    sessionStorage.setItem(KEY.token, token);
    q.delete("token");
    history.replaceState(history.state, "", url);
  }
  config.asked = q.get("tenant");
  config.token = sessionStorage.getItem(KEY.token);
}

export function signIn(token: string): void {
  sessionStorage.setItem(KEY.token, token);
  config.token = token;
}

export function signOut(): void {
  sessionStorage.removeItem(KEY.token);
  config.token = null;
  config.tenant = "";
  config.role = null;
  config.name = "";
}

/** Approving, denying and killing are an operator's; auditors read. */
export const mayDecide = () => config.role === "operator";
