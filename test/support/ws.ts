import WS from "ws";

/** A socket that buffers every message, so a test can wait for the n-th one of a kind. */
export class Socket {
  readonly messages: any[] = [];
  private waiters: Array<() => void> = [];
  status?: number;
  closed = false;

  constructor(readonly ws: WS) {
    ws.on("message", (m) => {
      this.messages.push(JSON.parse(String(m)));
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on("close", () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static open(url: string): Promise<Socket> {
    return new Promise((ok, fail) => {
      const ws = new WS(url);
      const s = new Socket(ws);
      ws.once("open", () => ok(s));
      ws.once("unexpected-response", (_req, res) => {
        s.status = res.statusCode;
        fail(Object.assign(new Error(`socket refused with ${res.statusCode}`), { status: res.statusCode }));
      });
      ws.once("error", (e) => fail(e));
    });
  }

  send(m: unknown) {
    this.ws.send(typeof m === "string" ? m : JSON.stringify(m));
  }

  of(type: string) {
    return this.messages.filter((m) => m.type === type);
  }

  async waitFor(pred: (msgs: any[]) => boolean, timeoutMs = 10_000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.messages)) {
      if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(this.messages.slice(-5))}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.messages;
  }

  close() {
    this.ws.close();
  }
}
