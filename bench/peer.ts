import { freePort, ROOT } from "../test/support/server";
import { startChild, type Child } from "./harness";

// The peer gateway the proxy is measured against: Portkey's open-source AI gateway, run as
// its Node server on loopback. It routes by headers: the provider, and a custom host
// pointing at the same stand-in Governor forwards to. It needs nothing from the network.
//
// package.json pins its @hono/node-server to 1.13.5 (the version Portkey's own lockfile
// uses): with the 1.19 line that npm would pick, every streamed answer fails with a 500
// ("immutable" headers), so the peer could not be measured on streams at all.

export interface Peer extends Child {
  url: string;
  /** Headers that make the peer forward an OpenAI-shaped call to `upstream`. */
  headers: (upstream: string, apiKey: string) => Record<string, string>;
}

export async function startPeer(): Promise<Peer> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = await startChild(process.execPath, ["node_modules/@portkey-ai/gateway/build/start-server.js", `--port=${port}`, "--headless"], {
    cwd: ROOT,
    ready: async () => {
      const res = await fetch(`${url}/`);
      return res.ok && (await res.text()).includes("AI Gateway");
    },
  });
  return {
    ...child,
    url,
    headers: (upstream, apiKey) => ({
      authorization: `Bearer ${apiKey}`,
      "x-portkey-provider": "openai",
      "x-portkey-custom-host": `${upstream}/v1`,
    }),
  };
}
