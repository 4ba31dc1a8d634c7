import { Observable } from "./signal";

// Views live in the hash, so a reload or a shared link opens the same view. A session's
// link is `#session=<id>`, the form notifications already send.

export type Route =
  | { view: "overview" }
  | { view: "sessions"; params: URLSearchParams }
  | { view: "approvals" }
  | { view: "audit"; params: URLSearchParams }
  | { view: "session"; id: string };

export function parseHash(hash: string): Route {
  const h = hash.replace(/^#/, "");
  const [name, query = ""] = h.split("?");
  // The audit search takes a session filter of its own: `#audit?session=…` is not a session's page.
  if (name === "audit") return { view: "audit", params: new URLSearchParams(query) };
  const session = /(?:^|&)session=([^&]*)/.exec(h);
  if (session && !h.startsWith("sessions")) return { view: "session", id: decodeURIComponent(session[1]) };
  if (name === "sessions") return { view: "sessions", params: new URLSearchParams(query) };
  if (name === "approvals") return { view: "approvals" };
  return { view: "overview" };
}

export function hrefOf(r: Route): string {
  switch (r.view) {
    case "overview":
      return "#overview";
    case "approvals":
      return "#approvals";
    case "session":
      return `#session=${encodeURIComponent(r.id)}`;
    case "sessions":
    case "audit": {
      const q = r.params.toString();
      return q ? `#${r.view}?${q}` : `#${r.view}`;
    }
  }
}

export const route = new Observable<Route>(parseHash(location.hash));
window.addEventListener("hashchange", () => route.set(parseHash(location.hash)));

export function go(r: Route, { replace = false } = {}): void {
  const href = hrefOf(r);
  if (replace) {
    history.replaceState(history.state, "", `${location.pathname}${location.search}${href}`);
    route.set(r);
  } else location.hash = href;
}
