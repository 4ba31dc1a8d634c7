import { createHash } from "node:crypto";
import { useNativeSha256 } from "../lib/chain";

// partykit dev always enables nodejs_compat, so workerd has node:crypto's native SHA-256:
// the hash chain and the signatures of calls and errors use it instead of the JavaScript
// digest (same bytes, a fifth of the CPU). Imported for its effect by the gateway and the
// session actor; all parties share one bundle, so either import covers the isolate.
useNativeSha256(createHash);
