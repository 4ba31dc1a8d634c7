import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { freePort } from "./server";
import { stopGroup } from "./group";

// A throwaway Postgres for the tests: a fresh cluster in a temp folder on a free port,
// stopped and removed afterwards. initdb refuses to run as root, so as root the cluster
// belongs to the `postgres` system user (Debian's package makes it). When no server can
// be had, the caller skips with the reason this gives.

export interface TestPostgres {
  /** A new, empty database on the cluster. */
  database(name: string): Promise<string>;
  stop(): Promise<void>;
}

function binDir(): string | undefined {
  if (process.env.PG_BIN && existsSync(join(process.env.PG_BIN, "initdb"))) return process.env.PG_BIN;
  const base = "/usr/lib/postgresql";
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => existsSync(join(base, v, "bin", "initdb"))).sort((a, b) => Number(b) - Number(a));
    if (versions.length) return join(base, versions[0], "bin");
  }
  const found = spawnSync("sh", ["-c", "command -v initdb"], { encoding: "utf8" }).stdout.trim();
  return found ? join(found, "..") : undefined;
}

export async function startPostgres(): Promise<TestPostgres | { skip: string }> {
  const bin = binDir();
  if (!bin) return { skip: "no Postgres binaries (initdb) found: install Debian's postgresql package to run the Postgres tests" };
  const root = process.getuid?.() === 0;
  if (root && spawnSync("id", ["-u", "postgres"]).status !== 0) return { skip: "running as root and there is no `postgres` user to own a cluster" };
  const dir = mkdtempSync(join(tmpdir(), "governor-pg-"));
  const data = join(dir, "data");
  // The cluster's user needs the folder; the folder is ours to remove afterwards.
  const as = (cmd: string, args: string[]) => (root ? ["runuser", ["-u", "postgres", "--", cmd, ...args]] : [cmd, args]) as [string, string[]];
  if (root) spawnSync("chown", ["postgres", dir]);
  chmodSync(dir, 0o700);
  const [initCmd, initArgs] = as(join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "governor", "-E", "UTF8", "--no-sync", "--no-instructions"]);
  const init = spawnSync(initCmd, initArgs, { encoding: "utf8" });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: `initdb failed: ${(init.stderr || init.stdout || "").trim().split("\n").slice(-2).join(" ")}` };
  }
  const port = await freePort();
  const settings = ["-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${dir}`, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"];
  const [cmd, args] = as(join(bin, "postgres"), ["-D", data, "-p", String(port), ...settings]);
  const child: ChildProcess = spawn(cmd, args, { detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (d) => (log += d));
  const admin = `postgres://governor@127.0.0.1:${port}/postgres`;
  const stop = async () => {
    // SIGINT is Postgres's fast shutdown; the group holds runuser and the server.
    await stopGroup(child.pid, { signal: "SIGINT" });
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      return { skip: `postgres exited: ${log.trim().split("\n").slice(-2).join(" ")}` };
    }
    const sql = postgres(admin, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      await sql`select 1`;
      await sql.end();
      break;
    } catch {
      await sql.end({ timeout: 1 }).catch(() => {});
      if (Date.now() > deadline) {
        await stop();
        return { skip: "postgres did not accept connections within 30 s" };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    async database(name: string) {
      const sql = postgres(admin, { max: 1, onnotice: () => {} });
      await sql.unsafe(`create database "${name.replace(/[^a-z0-9_]/gi, "_")}"`);
      await sql.end();
      return `postgres://governor@127.0.0.1:${port}/${name.replace(/[^a-z0-9_]/gi, "_")}`;
    },
    stop,
  };
}
