import { describe, expect, it } from "vitest";
import { maskMcpSecrets, MCP_SECRET_PATHS } from "../../schema/mcp";
import { parsePolicy } from "../../schema/policy";
import { maskPolicySecrets } from "../../schema/secrets";

// The `mcp` section of a policy: what is accepted, and what is a secret.

const server = (extra: Record<string, unknown> = {}) => ({ mcp: { servers: { files: { url: "https://mcp.example.com/mcp", ...extra } } } });

describe("mcp servers in a policy", () => {
  it("accepts a server with headers, tool costs and a timeout, with defaults", () => {
    const p = parsePolicy(server({ headers: { Authorization: "Bearer x" }, tool_costs: { read: 0.01 }, timeout: "5s" }));
    expect(p.mcp?.servers.files).toEqual({ url: "https://mcp.example.com/mcp", headers: { Authorization: "Bearer x" }, tool_costs: { read: 0.01 }, timeout: 5000 });
    expect(parsePolicy(server()).mcp?.servers.files.timeout).toBe(60_000);
  });

  it("refuses what would break the protocol or leak, naming the field", () => {
    expect(() => parsePolicy({ mcp: { servers: { "a.b": { url: "https://x.example/" } } } })).toThrow(/policy.mcp.servers.a.b/);
    expect(() => parsePolicy(server({ url: "ftp://x.example/" }))).toThrow(/policy.mcp.servers.files.url/);
    expect(() => parsePolicy(server({ headers: { "Content-Type": "text/plain" } }))).toThrow(/set by the MCP transport itself/);
    expect(() => parsePolicy(server({ headers: { Authorization: "a\r\nX-Evil: 1" } }))).toThrow(/line breaks/);
    expect(() => parsePolicy(server({ tool_costs: { read: -1 } }))).toThrow(/policy.mcp.servers.files.tool_costs.read/);
    expect(() => parsePolicy({ runaway: { repeat: { same_call: 5, window: 5000 } } })).toThrow(/policy.runaway.repeat.window: at most 1000/);
  });

  it("masks every header value and a URL's credentials, in one place for every policy shown", () => {
    const policy = server({ url: "https://user:pw@mcp.example.com/mcp?key=k", headers: { Authorization: "Bearer s3cr3t", "X-Team": "blue" } });
    const masked = maskMcpSecrets(policy);
    expect(masked.mcp.servers.files).toEqual({ url: "https://mcp.example.com/mcp?***", headers: { Authorization: "***", "X-Team": "***" } });
    expect(JSON.stringify(maskPolicySecrets(policy))).toBe(JSON.stringify(masked));
    expect(maskMcpSecrets(server()).mcp.servers.files.url).toBe("https://mcp.example.com/mcp");
    expect(MCP_SECRET_PATHS).toContain("mcp.servers.*.headers.*");
  });
});
