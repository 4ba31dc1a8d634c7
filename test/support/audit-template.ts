import { createHash, randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MIGRATIONS, openDatabase } from "../../audit/db";
import { ROOT } from "./server";

// A new PGlite store runs initdb in WebAssembly: seconds on an idle machine, tens of
// seconds on a busy one. Tests start from a copy of one migrated store instead (a copy
// opens in well under a second). The template is a cache in the temp folder, named by
// the migrations and the PGlite version, so it is never stale; racing creators each build
// one and the first rename wins.

function templateKey(): string {
  const h = createHash("sha256");
  const walk = (dir: string) => {
    for (const name of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, name.name);
      if (name.isDirectory()) walk(path);
      else h.update(name.name).update(readFileSync(path));
    }
  };
  walk(MIGRATIONS);
  const pkg = JSON.parse(readFileSync(join(ROOT, "node_modules/@electric-sql/pglite/package.json"), "utf8")) as { version: string };
  return h.update(pkg.version).digest("hex").slice(0, 16);
}

let template: string | undefined;

async function ensureTemplate(): Promise<string> {
  if (template && existsSync(template)) return template;
  const path = join(tmpdir(), `governor-audit-template-${templateKey()}`);
  if (!existsSync(join(path, "PG_VERSION"))) {
    const building = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
    const db = await openDatabase({ dir: building });
    await db.close();
    try {
      renameSync(building, path);
    } catch {
      rmSync(building, { recursive: true, force: true });
    }
  }
  template = path;
  return path;
}

/** A fresh, migrated PGlite folder; inside `parent` when given, else a new temp folder. */
export async function freshStoreDir(parent?: string): Promise<string> {
  const from = await ensureTemplate();
  const target = join(parent ?? mkdtempSync(join(tmpdir(), "governor-audit-")), "store");
  cpSync(from, target, { recursive: true });
  return target;
}
