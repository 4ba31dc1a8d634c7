// Whether partykit dev logs every request it serves ("GET /v1/... 200 OK (3ms)").
//
// miniflare's entry worker, inside workerd, sends each request's log line to partykit's
// Node process over HTTP: about 0.5 ms of CPU per request on the two processes together,
// on the same cores that serve the calls (README, "Where the time goes"). A governance
// proxy's own record of every call is its event log, so Governor runs partykit dev with
// that line off unless GOVERNOR_REQUEST_LOG=on. partykit 0.0.115 fixes miniflare's log
// level, so the switch is a patch of miniflare (patches/, applied on install by
// scripts/patch-deps.js) that reads this variable from partykit's environment; it leaves
// the "Ready on" line, workers' console output and errors as they are.

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const REQUEST_LOG_VAR = "GOVERNOR_REQUEST_LOG";
export const REQUEST_LOG_DEFAULT = "off";

/** "on" or "off" from `env` (unset or empty: the default), or undefined when the value is neither. */
export function requestLog(env) {
  const raw = (env[REQUEST_LOG_VAR] ?? "").trim().toLowerCase();
  if (raw === "") return REQUEST_LOG_DEFAULT;
  return raw === "on" || raw === "off" ? raw : undefined;
}

/** The environment for a `partykit dev` child: `env` with the switch set to what it decides. */
export function withRequestLog(env, mode = requestLog(env) ?? REQUEST_LOG_DEFAULT) {
  return { ...env, [REQUEST_LOG_VAR]: mode };
}

/**
 * Whether the patched miniflare under `root` reads the switch. An install with scripts turned
 * off (`npm install --ignore-scripts`, or npm refusing them) leaves it unpatched, and the
 * line per request stays on whatever the variable says.
 */
export function requestLogSwitchInstalled(root) {
  const file = join(root, "node_modules", "partykit", "node_modules", "miniflare", "dist", "src", "index.js");
  return existsSync(file) && readFileSync(file, "utf8").includes(REQUEST_LOG_VAR);
}
