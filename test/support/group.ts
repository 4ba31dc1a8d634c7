import { readdirSync, readFileSync } from "node:fs";

// A process group as Linux's /proc shows it. The servers the tests and benchmarks start
// (partykit dev with its workerd and esbuild, Postgres under runuser, the peer gateway)
// each lead a group of their own, and are measured and stopped as that group.

export interface GroupMember {
  pid: number;
  comm: string;
  /** "R", "S", ... "Z" for a zombie (exited, not reaped yet). */
  state: string;
  /** User + system CPU, in USER_HZ ticks (1/100 s on every Linux architecture Node runs on). */
  cpuTicks: number;
}

/** The members of process group `pgid`, zombies included; [] where there is no /proc. */
export function groupMembers(pgid: number): GroupMember[] {
  if (process.platform !== "linux") return [];
  const out: GroupMember[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // gone while we looked
    }
    // "pid (comm) state ppid pgrp ... utime stime ...": comm may hold spaces and parentheses.
    const close = stat.lastIndexOf(")");
    const f = stat.slice(close + 2).split(" ");
    if (Number(f[2]) !== pgid) continue;
    out.push({ pid: Number(entry), comm: stat.slice(stat.indexOf("(") + 1, close), state: f[0], cpuTicks: Number(f[11]) + Number(f[12]) });
  }
  return out;
}

/**
 * Members that still run ("pid name"). A zombie holds no port or file and does not count:
 * workerd and esbuild outlive a killed partykit as zombies until init reaps them (here: up
 * to ~2 s), and signalling the group succeeds all that while. Without /proc, any member
 * the kernel still knows counts.
 */
export function runningIn(pgid: number): string[] {
  if (process.platform !== "linux") {
    try {
      process.kill(-pgid, 0);
      return [`group ${pgid}`];
    } catch {
      return [];
    }
  }
  return groupMembers(pgid)
    .filter((m) => m.state !== "Z" && m.state !== "X")
    .map((m) => `${m.pid} ${m.comm}`);
}

/**
 * Stops a whole process group and waits until nothing of it runs, so its ports and folders
 * are free. Waits on the group, not on the leader's "exit" event (which may have fired
 * already, or the leader may be gone while a child outlives it). SIGKILL after
 * `killAfterMs`; an error naming what still runs after `giveUpAfterMs`, never a hang.
 */
export async function stopGroup(pgid: number | undefined, { signal = "SIGTERM" as NodeJS.Signals, killAfterMs = 5_000, giveUpAfterMs = 15_000 } = {}): Promise<void> {
  if (pgid === undefined) return;
  const send = (s: NodeJS.Signals) => {
    try {
      process.kill(-pgid, s);
    } catch {
      /* nothing of it is left */
    }
  };
  send(signal);
  const started = Date.now();
  let killed = false;
  for (;;) {
    const left = runningIn(pgid);
    if (!left.length) return;
    const waited = Date.now() - started;
    if (!killed && waited > killAfterMs) {
      send("SIGKILL");
      killed = true;
    }
    if (waited > giveUpAfterMs) throw new Error(`process group ${pgid} still runs ${waited} ms after ${signal} (SIGKILL at ${killAfterMs} ms): ${left.join(", ")}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
