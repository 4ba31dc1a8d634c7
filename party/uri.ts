// Percent-decoding that cannot take a request down.
//
// PartyKit's own request handler decodes the path with decodeURIComponent to look for a
// static asset, before any of our code runs, and answers 500 when that throws (say for
// `/v1/sessions/%E0%A4%A`). Nothing of ours can run earlier, so when this module loads
// the global is replaced by one that leaves an undecodable string as it is: the asset
// lookup then finds nothing and the request reaches the gateway, which decodes with the
// original (strict) function and answers 400 naming the path.

const strict = globalThis.decodeURIComponent;

/** The standard decoder: throws URIError on a malformed escape. */
export const decodeStrict: (s: string) => string = strict;

/** Undefined for a malformed escape, instead of a throw. */
export function tryDecode(s: string): string | undefined {
  try {
    return strict(s);
  } catch {
    return undefined;
  }
}

const lenient = (s: string) => tryDecode(s) ?? s;
if (globalThis.decodeURIComponent === strict) globalThis.decodeURIComponent = lenient;
