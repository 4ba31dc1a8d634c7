// `npm run demo`: a stuck agent that keeps appending to its context, written with the
// official openai package and pointed at Governor. Governor runs locally (partykit dev)
// in front of a stand-in provider the demo starts, so no key or network is needed.
import OpenAI from "openai";
import { usdDecimal } from "../lib/money";
import type { SessionSummary } from "../schema/protocol";
import { client, startGovernor, TOKENS } from "../test/support/server";
import { startUpstream } from "../test/support/upstream";

// Exact amounts (to the nano-dollar the actor counts in), so the figures printed add up.
const usd = (n: number) => `$${usdDecimal(n)}`;

/** Where the budget stands, from one summary: spent + reserved (calls in flight, approvals) + remaining = budget. */
const money = (s: SessionSummary) =>
  `spent ${usd(s.spentUsd)} + reserved ${usd(s.reservedUsd)} + remaining ${usd(s.remainingUsd ?? 0)} = budget ${usd(s.budgetUsd ?? 0)}`;

async function main() {
  const upstream = await startUpstream();
  upstream.setDefault({ chunks: 12 });
  console.log(`stand-in provider on ${upstream.url}`);
  const gov = await startGovernor({ vars: { OPENAI_BASE_URL: `${upstream.url}/v1`, OPENAI_API_KEY: "sk-demo-provider-key" } });
  console.log(`Governor (partykit dev) on ${gov.url}\n`);
  const stop = async () => {
    await gov.stop();
    await upstream.close();
  };
  process.on("SIGINT", () => void stop().then(() => process.exit(130)));

  try {
    const op = client(gov.url, TOKENS.operator);
    const summary = async (): Promise<SessionSummary> => (await op(`/v1/sessions/${sessionId}`)).json;
    /** The summary once the call just answered is settled (its settle may trail the answer), or as it stands after 2 s. */
    const settled = async (): Promise<SessionSummary> => {
      let s = await summary();
      for (let i = 0; i < 40 && s.reservations.length; i++) {
        await new Promise((r) => setTimeout(r, 50));
        s = await summary();
      }
      return s;
    };
    const sessionId = `demo-${Date.now().toString(36)}`;
    const policy = { budget: { session_usd: 0.05, alert_at: 0.8, on_exceed: "kill" }, runaway: { growth_ratio: 1.4, consecutive: 3, window: 5, on_detect: "alert" } };
    await op("/v1/sessions", { body: { id: sessionId, policy, agent: "demo-agent" } });
    console.log(`session ${sessionId}: budget $0.05, runaway alert after 3 prompts growing > 1.4x, kill when the budget is exceeded\n`);

    // The one-line change: baseURL points at Governor, apiKey is the Governor token.
    const openai = new OpenAI({
      apiKey: TOKENS.agent,
      baseURL: `${gov.url}/v1/proxy/openai/v1`,
      defaultHeaders: { "X-Session-ID": sessionId, "X-Agent-ID": "demo-agent" },
      maxRetries: 0,
    });

    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: "system", content: "You are a helpful agent. ".repeat(20) }];
    let lastState = "active";
    let spent = 0;
    for (let call = 1; call <= 50; call++) {
      // A stuck agent: the tool output it appends grows every turn.
      messages.push({ role: "user", content: `tool output ${call}: ${"lorem ipsum dolor ".repeat(40 * 1.6 ** call)}` });
      try {
        const data = await openai.chat.completions.create({ model: "gpt-4o", messages, max_tokens: 200 });
        messages.push({ role: "assistant", content: data.choices[0].message.content ?? "" });
        const s = await settled();
        console.log(`call ${String(call).padStart(2)}: ${String(data.usage?.prompt_tokens).padStart(6)} prompt tokens  cost ${usd(s.spentUsd - spent)}  ${money(s)}  state ${s.state}`);
        spent = s.spentUsd;
        if (s.state !== lastState) {
          const log = (await op(`/v1/sessions/${sessionId}/log`)).text.trim().split("\n").map((l) => JSON.parse(l));
          for (const e of log.filter((e: any) => e.type === "anomaly.detected" || e.type === "alert.raised").slice(-2)) console.log(`  !! ${e.type}: ${e.data.reason}`);
          lastState = s.state;
        }
      } catch (e) {
        if (e instanceof OpenAI.APIError) {
          console.log(`call ${String(call).padStart(2)}: refused by Governor: ${e.status} ${e.code}: ${e.message}`);
          const s = await settled();
          console.log(`\nsession is ${s.state}${s.killed ? ` (${s.killed.reason})` : ""}; ${money(s)}`);
          if (s.state !== "killed") {
            console.log(`one more call after the refusal:`);
            continue;
          }
          const again = await openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).catch((x) => x);
          console.log(`a new call after the kill: ${again.status} ${again.code}`);
          break;
        }
        throw e;
      }
    }
    console.log(`\nthe provider saw ${upstream.requests.length} calls; every one was reserved before and settled after.`);
  } finally {
    await stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
