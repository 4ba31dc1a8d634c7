// Variables for `partykit dev` without putting them on its command line, where every local
// user sees them (`ps`, /proc/<pid>/cmdline). partykit takes vars from --var, a .env file
// found from its working directory, or the config file named by --config; the last is the
// one a caller can make per server: a copy of partykit.json with `vars` added, in a
// private temporary folder (0700, file 0600), removed when the server stops. workerd gets
// its configuration from partykit over a pipe, not its arguments.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";

/** Writes the config; `remove()` deletes it (safe to call twice). */
export function devConfig(root, vars) {
  const project = JSON.parse(readFileSync(join(root, "partykit.json"), "utf8"));
  // Paths in a config file are read relative to the file: the copy names them absolutely.
  const abs = (p) => (isAbsolute(p) ? p : join(root, p));
  const config = {
    ...project,
    main: abs(project.main),
    parties: Object.fromEntries(Object.entries(project.parties ?? {}).map(([k, v]) => [k, abs(v)])),
    vars: { ...project.vars, ...vars },
  };
  const dir = mkdtempSync(join(tmpdir(), "governor-config-"));
  const path = join(dir, "partykit.json");
  writeFileSync(path, JSON.stringify(config), { mode: 0o600 });
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
