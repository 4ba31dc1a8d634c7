import { spawn, type ChildProcess } from "node:child_process";
import { ROOT, type client } from "./server";

// The audit service beside a Governor under test, as npm start runs it: a child process a
// test can stop gently, kill outright (a crash) and start again on the same store.

/** `argv` (after node) is read at each start, so it may name ports and folders set up later. */
export function auditService(argv: () => string[], env: Record<string, string>) {
  let child: ChildProcess | undefined;
  return {
    /** Resolves once the service says it listens; rejects with its output if it exits first. */
    start(): Promise<void> {
      const started = spawn(process.execPath, argv(), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      // Known at once, so stop() ends it even when the rest of the set-up fails.
      child = started;
      let out = "";
      return new Promise((ok, fail) => {
        started.stdout!.on("data", (d) => {
          out += d;
          if (/audit service listening/.test(out)) ok();
        });
        started.stderr!.on("data", (d) => (out += d));
        started.once("exit", (code) => fail(new Error(`audit serve exited (${code}):\n${out}`)));
      });
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      const running = child;
      child = undefined;
      if (!running || running.exitCode !== null) return;
      const gone = new Promise((r) => running.once("exit", r));
      running.kill(signal);
      await gone;
    },
  };
}

/** Waits until the audit store holds every session `who` can list, each up to its head. */
export async function caughtUp(who: ReturnType<typeof client>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const heads = (await who("/v1/sessions?limit=500")).json.sessions as Array<{ session: string; seq: number }>;
    const res = await who("/v1/audit/sessions");
    if (res.status === 200) {
      const stored = new Map((res.json.sessions as Array<{ session: string; storedSeq: number }>).map((s) => [s.session, s.storedSeq]));
      if (heads.every((h) => stored.get(h.session) === h.seq)) return;
    }
    if (Date.now() > deadline) throw new Error(`not caught up: ${res.text.slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
