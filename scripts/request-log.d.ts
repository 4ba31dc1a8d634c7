export const REQUEST_LOG_VAR: "GOVERNOR_REQUEST_LOG";
export const REQUEST_LOG_DEFAULT: "off";
/** "on" or "off" from `env` (unset or empty: the default), or undefined when the value is neither. */
export function requestLog(env: Record<string, string | undefined>): "on" | "off" | undefined;
/** The environment for a `partykit dev` child: `env` with the switch set to what it decides. */
export function withRequestLog<E extends Record<string, string | undefined>>(env: E, mode?: "on" | "off"): E & { GOVERNOR_REQUEST_LOG: "on" | "off" };
/** Whether the patched miniflare under `root` reads the switch (an install without scripts leaves it unpatched). */
export function requestLogSwitchInstalled(root: string): boolean;
