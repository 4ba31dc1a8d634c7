// The audit store's PGlite, on its own thread (see pglite-thread.ts for why). This side
// owns the database and only runs what the main thread's client hands it: wire-protocol
// messages and the COPY blob. Plain JavaScript on purpose: it imports nothing of the
// project, so it starts the same under node, tsx and vitest without a TypeScript loader.
import { parentPort, workerData } from "node:worker_threads";
import { messages, PGlite } from "@electric-sql/pglite";

/** A database error as plain fields: an Error's own properties do not survive postMessage. */
function plainError(e) {
  if (!e || typeof e !== "object") return { message: String(e) };
  return { ...e, message: e.message, name: e.name, database: e instanceof messages.DatabaseError };
}

let pg;
try {
  const settings = (workerData.settings ?? []).flatMap((s) => ["-c", s]);
  pg = await PGlite.create(workerData.dataDir ?? undefined, { startParams: [...PGlite.defaultStartParams, ...settings] });
} catch (e) {
  parentPort.postMessage({ type: "failed", error: plainError(e) });
  process.exit(1);
}

// COPY FROM '/dev/blob' reads the blob through an Emscripten device whose read copies one
// byte at a time (about a kilobyte per event, ~2 us). The same bytes, copied at once: the
// blob is kept here as PGlite is handed it, and the device's read takes from it.
let blobBytes;
{
  const handleBlob = pg._handleBlob.bind(pg);
  const cleanupBlob = pg._cleanupBlob.bind(pg);
  pg._handleBlob = async (blob) => {
    blobBytes = blob ? new Uint8Array(await blob.arrayBuffer()) : undefined;
    // PGlite keeps the blob's bytes too (its device's seek measures them): the same ones, not a second copy.
    const bytes = blobBytes;
    return handleBlob(bytes && { arrayBuffer: async () => bytes.buffer });
  };
  pg._cleanupBlob = async () => {
    blobBytes = undefined;
    return cleanupBlob();
  };
  const FS = pg.mod?.FS;
  const device = FS?.devices?.[FS.makedev(64, 0)];
  if (device?.stream_ops?.read) {
    device.stream_ops.read = (_stream, buffer, offset, length, position) => {
      if (!blobBytes) throw new Error("No /dev/blob File or Blob provided to read from");
      if (position >= blobBytes.length) return 0;
      const n = Math.min(blobBytes.length - position, length);
      buffer.set(blobBytes.subarray(position, position + n), offset);
      return n;
    };
  }
}

const methods = {
  // With the blob a COPY TO wrote, if any: fetched here so it costs no message of its own.
  execProtocolStream: async (message, opts) => ({ messages: await pg.execProtocolStream(message, opts), written: await pg._getWrittenBlob() }),
  execProtocol: (message, opts) => pg.execProtocol(message, opts),
  execProtocolRaw: (message, opts) => pg.execProtocolRaw(message, opts),
  handleBlob: (blob) => pg._handleBlob(blob),
  cleanupBlob: () => pg._cleanupBlob(),
  syncToFs: () => pg.syncToFs(),
  close: () => pg.close(),
  // A read in one message, its rows as arrays (a query through the client costs about six
  // round trips, each waiting behind whatever the database thread is running).
  rows: async (sql, params) => (await pg.query(sql, params, { rowMode: "array" })).rows,
  // A whole transaction in one message (see PGliteThread.atomically): the index of the
  // first step that had to return rows and returned none (then rolled back), else -1.
  atomically: (steps) =>
    pg.transaction(async (tx) => {
      for (let i = 0; i < steps.length; i++) {
        const { sql, params, blob, mustReturnRows } = steps[i];
        const r = await tx.query(sql, params, blob ? { blob } : undefined);
        if (mustReturnRows && r.rows.length === 0) {
          await tx.rollback();
          return i;
        }
      }
      return -1;
    }),
};

// One call at a time, in the order sent: the client's locks already order them, and the
// database is one connection.
let queue = Promise.resolve();
parentPort.on("message", ({ id, method, args }) => {
  queue = queue.then(async () => {
    try {
      const result = await methods[method](...args);
      parentPort.postMessage({ id, result });
    } catch (e) {
      parentPort.postMessage({ id, error: plainError(e) });
    }
    if (method === "close") parentPort.close();
  });
});
parentPort.postMessage({ type: "ready" });
