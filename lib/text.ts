// Well-formed text. JSON (and so every body, message and policy) can carry a lone UTF-16
// surrogate ("\ud800"), which no UTF-8 encoder, hash input or downstream system takes
// faithfully; the edge refuses it, and code that meets stored text accepts it anyway.

type WithWellFormed = string & { isWellFormed?: () => boolean; toWellFormed?: () => string };

export function isWellFormed(s: string): boolean {
  const w = s as WithWellFormed;
  if (typeof w.isWellFormed === "function") return w.isWellFormed();
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
  }
  return true;
}

/** Each lone surrogate becomes U+FFFD, as a UTF-8 encoder would write it. */
export function toWellFormed(s: string): string {
  const w = s as WithWellFormed;
  if (typeof w.toWellFormed === "function") return w.toWellFormed();
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += s[i] + s[i + 1];
        i++;
      } else out += "\ufffd";
    } else if (c >= 0xdc00 && c <= 0xdfff) out += "\ufffd";
    else out += s[i];
  }
  return out;
}

/** At most `max` UTF-16 units, never cutting a surrogate pair in half. */
export function truncate(s: string, max: number): string {
  if (s.length <= max) return s;
  let end = max;
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return s.slice(0, end);
}

/** Bytes of the UTF-8 encoding (lone surrogates count as the 3 bytes of U+FFFD). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

export interface BadText {
  /** Where, as a path of keys and indexes from the value's root. */
  path: Array<string | number>;
  message: string;
}

/**
 * The first string (value or object key) in a JSON value that is not well-formed, or
 * longer than `maxString` units. Iterative, so depth costs no stack.
 */
export function findBadText(value: unknown, maxString = Infinity): BadText | undefined {
  // Each entry links to its parent; a path is only built for the one bad string found.
  type Node = { v: unknown; key?: string | number; parent?: Node };
  const pathOf = (n: Node): Array<string | number> => {
    const out: Array<string | number> = [];
    for (let at: Node | undefined = n; at?.parent; at = at.parent) out.push(at.key!);
    return out.reverse();
  };
  const stack: Node[] = [{ v: value }];
  while (stack.length) {
    const node = stack.pop()!;
    const { v, key } = node;
    if (typeof key === "string" && !isWellFormed(key)) {
      const path = pathOf(node);
      path[path.length - 1] = toWellFormed(key);
      return { path, message: "this key holds a lone UTF-16 surrogate: not well-formed text" };
    }
    if (typeof v === "string") {
      if (!isWellFormed(v)) return { path: pathOf(node), message: "holds a lone UTF-16 surrogate: not well-formed text" };
      if (v.length > maxString) return { path: pathOf(node), message: `is longer than ${maxString} characters` };
      continue;
    }
    if (v === null || typeof v !== "object") continue;
    // Pushed in reverse, so the first bad string in document order is the one named.
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], key: i, parent: node });
    } else {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) stack.push({ v: (v as Record<string, unknown>)[keys[i]], key: keys[i], parent: node });
    }
  }
  return undefined;
}
