// Who the console signs in as. The token lives in this tab only (sessionStorage) and is
// taken off the address bar as soon as it is read, so it stays out of history and screenshots.

const KEY = { token: "governor.token", tenant: "governor.tenant" };

export const config = { token: null as string | null, tenant: "local" };

export function readConfig(): void {
  const url = new URL(location.href);
  const q = url.searchParams;
  const token = q.get("token");
  if (token) {
    sessionStorage.setItem(KEY.token, token);
    q.delete("token");
    history.replaceState(history.state, "", url);
  }
  const tenant = q.get("tenant");
  if (tenant) sessionStorage.setItem(KEY.tenant, tenant);
  config.token = sessionStorage.getItem(KEY.token);
  config.tenant = tenant || sessionStorage.getItem(KEY.tenant) || "local";
}

export function signIn(token: string, tenant: string): void {
  sessionStorage.setItem(KEY.token, token);
  sessionStorage.setItem(KEY.tenant, tenant);
  const url = new URL(location.href);
  url.searchParams.set("tenant", tenant);
  history.replaceState(history.state, "", url);
  readConfig();
}

export function signOut(): void {
  sessionStorage.removeItem(KEY.token);
  config.token = null;
}
