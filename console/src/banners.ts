import { Observable } from "./signal";

// Messages for the operator: errors stay until dismissed, news goes by itself.

export interface Banner {
  id: number;
  kind: "error" | "warn" | "info";
  text: string;
}

export const banners = new Observable<Banner[]>([]);
let next = 1;

export function banner(text: string, kind: Banner["kind"] = "error"): void {
  const b = { id: next++, kind, text };
  banners.set([...banners.value, b].slice(-4));
  if (kind === "info") setTimeout(() => dismiss(b.id), 6000);
}

export function dismiss(id: number): void {
  banners.set(banners.value.filter((b) => b.id !== id));
}
