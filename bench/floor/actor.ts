import type * as Party from "partykit/server";

// The Durable Object of the floor (gateway.ts): answers at once, or after writing one small
// record (awaited, or left to the output gate).

export default class FloorActor implements Party.Server {
  private seq = 0;
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request): Promise<Response> {
    const op = (await req.json()) as { mode: string; bytes: number };
    const seq = ++this.seq;
    const record = { seq, ts: Date.now(), bytes: op.bytes, hash: "0".repeat(64) };
    if (op.mode === "put") await this.room.storage.put(`e:${String(seq).padStart(12, "0")}`, record);
    else if (op.mode === "put-gated") void this.room.storage.put(`e:${String(seq).padStart(12, "0")}`, record);
    return new Response(JSON.stringify({ seq }), { headers: { "content-type": "application/json" } });
  }
}
