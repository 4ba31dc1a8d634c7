import { openDatabase, storeGone, type OpenOptions } from "./db";
import { reapplyErasures } from "./erase";
import { startAuditService, type AuditService } from "./service";
import { AuditStore } from "./store";
import { TenantSync, type Problem } from "./sync";

// The audit service and the syncs that feed it, in one process: PGlite belongs to one
// process, so whoever writes the store also answers its queries. `npm start` runs this.

export interface SyncTarget {
  tenant: string;
  token: string;
}

/**
 * One token per tenant to follow it with, from a GOVERNOR_TOKENS map: an auditor's when
 * there is one (it may read, nothing else), else an operator's. No map: the local dev token.
 */
export function syncTargets(tokensJson: string | undefined): SyncTarget[] {
  if (!tokensJson?.trim()) return [{ tenant: "local", token: "dev" }];
  const parsed = JSON.parse(tokensJson) as unknown;
  const grants: Array<{ token: string; tenant: string; role: string }> = Array.isArray(parsed)
    ? (parsed as Array<{ token: string; tenant: string; role: string }>)
    : Object.entries(parsed as Record<string, { tenant: string; role: string }>).map(([token, g]) => ({ token, ...g }));
  const best = new Map<string, { token: string; role: string }>();
  for (const g of grants) {
    if (g.role !== "auditor" && g.role !== "operator") continue;
    const had = best.get(g.tenant);
    if (!had || (had.role === "operator" && g.role === "auditor")) best.set(g.tenant, { token: g.token, role: g.role });
  }
  return [...best].map(([tenant, { token }]) => ({ tenant, token }));
}

export interface ServeOptions extends OpenOptions {
  /** Governor's base URL, to sync from. */
  url: string;
  targets: SyncTarget[];
  secret: string;
  host?: string;
  port?: number;
  concurrency?: number;
  sockets?: number;
  log?: (m: string) => void;
  onProblem?: (tenant: string, p: Problem) => void;
}

export interface Running {
  service: AuditService;
  store: AuditStore;
  syncs: Map<string, TenantSync>;
  /** Resolves with why if the store fails (its database thread died): nothing can be answered or stored any more. */
  failed: Promise<Error>;
  stop(): Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<Running> {
  const log = opts.log ?? (() => {});
  const store = new AuditStore(await openDatabase(opts));
  // Erasures recorded here apply again before anything is read or synced: rows restored
  // from a backup cannot bring an erased subject back.
  const changed = await reapplyErasures(store.db);
  if (changed) log(`erasures applied again: ${changed} rows restored since were blanked`);
  const syncs = new Map<string, TenantSync>();
  let fail!: (e: Error) => void;
  const failed = new Promise<Error>((r) => (fail = r));
  // Also with no tenant followed, or none writing: the service answers from the store.
  void store.database.gone?.then(fail);
  const service = await startAuditService({ store, secret: opts.secret, host: opts.host, port: opts.port, syncStatus: (t) => syncs.get(t)?.status() ?? null });
  for (const target of opts.targets) {
    const sync = new TenantSync({
      store,
      url: opts.url,
      token: target.token,
      tenant: target.tenant,
      // Only when given: an undefined here would replace the sync's defaults (and leave it no read slots).
      ...(opts.concurrency !== undefined && { concurrency: opts.concurrency }),
      ...(opts.sockets !== undefined && { sockets: opts.sockets }),
      log: (m) => log(`[${target.tenant}] ${m}`),
      onProblem: (p) => opts.onProblem?.(target.tenant, p),
      onFailure: fail,
    });
    syncs.set(target.tenant, sync);
    // Governor may still be starting: the sync keeps trying; a refused token is reported.
    sync.start().catch((e) => {
      const gone = storeGone(e);
      if (gone) fail(gone);
      else log(`[${target.tenant}] not following this tenant: ${(e as Error).message}`);
    });
  }
  return {
    service,
    store,
    syncs,
    failed,
    async stop() {
      await service.close();
      await Promise.all([...syncs.values()].map((s) => s.stop()));
      await store.close();
    },
  };
}
