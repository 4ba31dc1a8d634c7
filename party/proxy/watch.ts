import type { Usage } from "../../schema/pricing";

// While a proxied call is in flight the gateway keeps one progress report open at the
// session's actor. The actor holds it for up to HOLD_MS and answers early when the session
// ends (kill, close) or the reservation is gone: that answer is how a kill reaches calls in
// flight within a second. Each report also carries what the call has produced so far, so
// if this request dies with its client the actor settles at the last cost it heard.

export const HOLD_MS = 900;
const RETRY_MS = 1_000;

export interface Produced {
  costUsd: number;
  usage: Usage;
}

type Send = (op: { op: "progress"; requestId: string; costUsd: number; usage: Usage; holdMs: number }) => Promise<Response>;

export interface Watch {
  stop(): void;
  /** Sends the latest figures now (e.g. when the provider's usage arrived), without waiting for the loop. */
  report(): void;
}

export function watchCall(opts: { requestId: string; send: Send; produced: () => Promise<Produced>; onAbort: (reason: string, code: string) => void; startAfterMs: number }): Watch {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  type Answer = { abort?: boolean; gone?: boolean; reason?: string; code?: string };
  const once = async (holdMs: number): Promise<Answer | undefined> => {
    const p = await opts.produced();
    const res = await opts.send({ op: "progress", requestId: opts.requestId, costUsd: p.costUsd, usage: p.usage, holdMs });
    return res.ok ? ((await res.json()) as Answer) : undefined;
  };
  const loop = async () => {
    while (!stopped) {
      let answer: Awaited<ReturnType<typeof once>>;
      try {
        answer = await once(HOLD_MS);
      } catch {
        answer = undefined;
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
      if (stopped) return;
      if (answer?.abort) {
        stopped = true;
        opts.onAbort(answer.reason ?? "the session ended", answer.code ?? "session_killed");
        return;
      }
      if (answer?.gone) return;
    }
  };
  timer = setTimeout(() => {
    timer = undefined;
    void loop();
  }, opts.startAfterMs);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    report() {
      if (!stopped) void once(0).catch(() => undefined);
    },
  };
}
