// What in a policy grants access: notification URLs (a Slack webhook URL is its own
// credential; a generic webhook's often carries a token) and the headers sent to upstream
// MCP servers. Operators, who set them, see them; agents and auditors see them masked.

import { MASKED, maskMcpSecrets } from "./mcp";

export const MASK = MASKED;

/** Scheme and host only: enough to tell which service, nothing to call it with. */
export function maskUrl(url: unknown): unknown {
  if (typeof url !== "string") return url;
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/${MASK}`;
  } catch {
    return MASK;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A copy of a policy (parsed or as stored, any shape) with its secrets masked. */
export function maskPolicySecrets(policy: unknown): unknown {
  if (!isObject(policy)) return policy;
  const out: Record<string, unknown> = { ...policy };
  if (Array.isArray(policy.notify)) {
    out.notify = policy.notify.map((t) => {
      if (!isObject(t)) return t;
      const masked: Record<string, unknown> = { ...t };
      for (const k of ["slack", "webhook"]) if (k in masked) masked[k] = maskUrl(masked[k]);
      return masked;
    });
  }
  // One definition of where the MCP section's secrets are: schema/mcp.ts (MCP_SECRET_PATHS).
  return maskMcpSecrets(out);
}

/** Delivery records name the URL they were sent to: masked for whoever may not see it. */
export function maskDeliveries(body: unknown): unknown {
  if (!isObject(body) || !Array.isArray(body.deliveries)) return body;
  return { ...body, deliveries: body.deliveries.map((d) => (isObject(d) ? { ...d, url: maskUrl(d.url) } : d)) };
}
