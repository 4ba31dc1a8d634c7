import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventHash } from "../../lib/chain";
import { describeKey, generateSigningKey, importPublicKey, signCheckpoint, verifyCheckpoint, type SigningKey } from "../../lib/checkpoint";
import type { GovernorEvent } from "../../schema/events";
import { Recorder } from "../support/recorder";

// `governor replay` against a signed log and every way of cutting or rewriting one. The
// logs are built by the engine the actor runs and signed with the same code; the CLI runs
// as users run it, a child process through the bin shim.

const ROOT = resolve(import.meta.dirname, "../..");
const BIN = join(ROOT, "sdk/bin/governor.js");
const run = promisify(execFile);

async function governor(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, "--url", "http://127.0.0.1:9", ...args], { cwd: ROOT });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

let dir: string;
let key: SigningKey;
let other: SigningKey;
let pubFile: string;
let log: GovernorEvent[];
const lines = (events: GovernorEvent[]) => events.map((e) => JSON.stringify(e));
const file = (name: string, ls: string[]) => {
  const p = join(dir, name);
  writeFileSync(p, `${ls.join("\n")}\n`);
  return p;
};
const sign = (k: SigningKey, e: GovernorEvent, who = { tenant: "acme", session: "s1" }) => signCheckpoint(k, { ...who, seq: e.seq, hash: e.hash, ts: 1_700_000_999_000 });

/** Edits event `from` and re-hashes it and every event after it, so the chain holds. */
function rewriteFrom(events: GovernorEvent[], from: number): GovernorEvent[] {
  const out = structuredClone(events);
  for (let i = from; i < out.length; i++) {
    if (i === from) (out[i] as { ts: number }).ts += 1;
    if (i > 0) out[i].prev = out[i - 1].hash;
    out[i].hash = eventHash(out[i]);
  }
  return out;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "governor-checkpoint-"));
  key = (await generateSigningKey()).key;
  other = (await generateSigningKey()).key;
  pubFile = join(dir, "governor.pub");
  writeFileSync(pubFile, (await describeKey(key)).pem);
  const r = new Recorder({ budget: { session_usd: 5 } }, { session: "s1", signingKid: key.kid });
  for (let i = 0; i < 6; i++) r.call(1000 + i * 100, 50, { maxTokens: 100 });
  r.action("search", 0.01);
  r.end("close");
  log = r.log;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("checkpoints", () => {
  it("sign and verify round-trip; every public key form imports to the same kid", async () => {
    const c = await sign(key, log.at(-1)!);
    expect(await verifyCheckpoint(c, key)).toBe(true);
    expect(await verifyCheckpoint({ ...c, checkpoint: { ...c.checkpoint, seq: c.checkpoint.seq + 1 } }, key)).toBe(false);
    expect(await verifyCheckpoint(c, other)).toBe(false);
    const d = await describeKey(key);
    for (const form of [d.x, d.pem, JSON.stringify(d.jwk), JSON.stringify(d)]) expect((await importPublicKey(form)).kid).toBe(key.kid);
  });
});

describe("governor replay proves a log complete", () => {
  it("an intact signed log verifies with the key from a file, from --key, and names the signed head", async () => {
    const cp = await sign(key, log.at(-1)!);
    const f = file("ok.ndjson", [...lines(log), JSON.stringify(cp)]);
    const [byFile, byValue, json] = await Promise.all([
      governor("replay", f, "--key", pubFile),
      governor("replay", f, "--key", (await describeKey(key)).x),
      governor("--json", "replay", f, "--key", pubFile),
    ]);
    expect(byFile.code, byFile.stderr).toBe(0);
    expect(byFile.stdout).toMatch(new RegExp(`checkpoint\\s+signed head seq ${log.length} \\(key ${key.kid}`));
    expect(byValue.code, byValue.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, checkpoint: { seq: log.length, kid: key.kid }, warnings: [] });
  });

  it("each kind of tampering is caught and named", async () => {
    const n = log.length;
    const genuine = JSON.stringify(await sign(key, log.at(-1)!));
    const rehashedTail = rewriteFrom(log, n - 1);
    const rewritten = rewriteFrom(log, 3);
    const elsewhere = JSON.stringify(await sign(key, log.at(-1)!, { tenant: "acme", session: "s2" }));
    const ownKey = JSON.stringify(await sign(other, rewritten.at(-1)!));
    const claimed = JSON.stringify({ ...(await sign(other, rewritten.at(-1)!)), kid: key.kid });
    const cases: Array<[string, string[], string[], RegExp, string]> = [
      ["drop the tail", [...lines(log.slice(0, n - 3)), genuine], ["--key", pubFile], new RegExp(`log is NOT complete: missing tail after seq ${n - 3}: the signed checkpoint covers the log up to seq ${n}`), "missing_tail"],
      ["drop the tail and the checkpoint", lines(log.slice(0, n - 3)), ["--key", pubFile], new RegExp(`missing checkpoint: .*tail after seq ${n - 3} may be missing`), "missing_checkpoint"],
      ["rehash the tail", [...lines(rehashedTail), genuine], ["--key", pubFile], new RegExp(`does not match its checkpoint: event seq ${n} has hash ${rehashedTail.at(-1)!.hash}`), "checkpoint_mismatch"],
      ["rewrite from the middle", [...lines(rewritten), genuine], ["--key", pubFile], /NOT the one Governor signed: the log does not match its checkpoint/, "checkpoint_mismatch"],
      ["a checkpoint from another session", [...lines(log), elsewhere], ["--key", pubFile], /checkpoint of another session: it was signed for acme:s2, and this log is acme:s1/, "other_session"],
      ["a rewrite signed with another key", [...lines(rewritten), ownKey], ["--key", pubFile], new RegExp(`key unknown: the checkpoint was signed with key ${other.kid}; trusted: ${key.kid}`), "key_unknown"],
      ["another key claiming ours", [...lines(rewritten), claimed], ["--key", pubFile], /checkpoint signature invalid/, "signature_invalid"],
      ["verified with a wrong key", [...lines(log), genuine], ["--key", (await describeKey(other)).x], new RegExp(`key unknown: the checkpoint was signed with key ${key.kid}; trusted: ${other.kid}`), "key_unknown"],
      ["no key and no server", [...lines(log), genuine], [], /key unknown: .*no --key was given, and the server at http:\/\/127\.0\.0\.1:9 did not give its key .*: give --key .*--url \/ GOVERNOR_URL/, "key_unknown"],
    ];
    const results = await Promise.all(
      cases.map(async ([name, ls, extra], i) => {
        const f = file(`case-${i}.ndjson`, ls);
        return { name, human: await governor("replay", f, ...extra), json: await governor("--json", "replay", f, ...extra) };
      }),
    );
    for (const [i, { name, human, json }] of results.entries()) {
      expect(human.code, name).toBe(1);
      expect(human.stdout, name).toMatch(cases[i][3]);
      expect(JSON.parse(json.stdout), name).toMatchObject({ ok: false, problem: cases[i][4] });
    }
  });

  it("an old log without checkpoints still replays, with a warning", async () => {
    // Written before checkpoints: session.opened names no signing key.
    const r = new Recorder({}, { session: "s1" });
    r.call(100, 10, { maxTokens: 10 });
    const res = await governor("replay", file("old.ndjson", lines(r.log)));
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/checkpoint\s+none/);
    expect(res.stdout).toMatch(/warning: no checkpoint: the log replays, but that it is complete cannot be proven/);
  });

  it("a malformed key or checkpoint line is named", async () => {
    const bad = JSON.stringify({ ...(await sign(key, log.at(-1)!)), sig: "abc" });
    const [k, c] = await Promise.all([governor("replay", file("k.ndjson", lines(log)), "--key", "not-a-key"), governor("--json", "replay", file("c.ndjson", [...lines(log), bad]), "--key", pubFile)]);
    expect(k.code).toBe(2);
    expect(k.stderr).toMatch(/--key: an Ed25519 public key is 32 bytes/);
    expect(JSON.parse(c.stdout)).toMatchObject({ ok: false, problem: "bad_checkpoint", reason: expect.stringMatching(/^the checkpoint line is malformed: sig/) });
  });
});
