import { groupMembers } from "./group";

// CPU time, for timing assertions that must hold on a loaded CI machine. Wall-clock time there
// measures the other processes as much as the code under test (at a load average of 13 on two
// cores, a bare budget-check took a median 40-57 ms); the CPU time a piece of work takes barely
// moves with load, and it is exactly what a super-linear algorithm (a backtracking regex, a
// quadratic tokenizer) inflates. Linux only: read from /proc.

/** USER_HZ: the unit of /proc's utime and stime, 100 on every Linux architecture Node runs on. */
const TICK_MS = 10;

/**
 * User + system CPU time, in ms, of every live process in a process group: for a Governor
 * from startGovernor(), pass its `pid` (partykit dev leads the group; workerd and esbuild are
 * in it). Resolution is 10 ms per process, so measure many requests at a time.
 */
export function processGroupCpuMs(pgid: number): number {
  const members = groupMembers(pgid);
  if (!members.length) throw new Error(`no process in group ${pgid} (CPU time is read from Linux's /proc)`);
  return members.reduce((sum, m) => sum + m.cpuTicks, 0) * TICK_MS;
}

/** CPU time of this process (all its threads), in ms, while `work` runs synchronously. */
export function cpuMsOf(work: () => void): number {
  const start = process.cpuUsage();
  work();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}
