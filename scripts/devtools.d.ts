/** TCP ports the process `pid` listens on: /proc on Linux, lsof elsewhere; [] if neither works. */
export function listeningPorts(pid: number): number[];
/** Turns partykit dev's DevTools network events off; true once workerd confirmed it. */
export function quietDevtools(pid: number, opts?: { timeoutMs?: number }): Promise<boolean>;
