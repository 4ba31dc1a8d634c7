import http from "node:http";
import { Agent, setGlobalDispatcher } from "undici";

// Loaded by vitest before every test file (vitest.config.ts `setupFiles`): every HTTP client
// in the test process (fetch, and through it the openai, Anthropic, MCP and AI SDKs; and
// node:http's default agent) opens a connection per request instead of reusing idle ones.
//
// Why: `partykit dev` (workerd) closes an idle keep-alive connection 5 s after its last
// response and does not say so (no `Keep-Alive: timeout=` header), while Node's fetch keeps
// an idle socket for 4 s. On a loaded machine the client learns of a finished response late
// and its 4 s timer fires late, so it sends a request on a socket workerd is closing at that
// moment: the request dies with ECONNRESET or "other side closed" (the SDKs' "Connection
// error."), which our tests see because they set `maxRetries: 0` to count attempts exactly.
// Reproduced with 200 concurrent SDK calls per round: 24 to 119 of 200 failed while the
// machine's load average was 8-16, all on sockets reused 4.2-5.4 s after their last
// response; none failed with a connection per request. A new loopback connection costs far
// less than any request here, and no test is about connection reuse (the one that is, in
// test/fuzz/hardening.test.ts, brings its own keep-alive agent).
setGlobalDispatcher(new Agent({ pipelining: 0 }));
http.globalAgent = new http.Agent({ keepAlive: false });
