import { z } from "zod";
import { TenantId } from "./api";
import { Role } from "./protocol";

/**
 * `GET /v1/whoami`: who a token is, so a client takes the tenant from the token instead of
 * asking the user for it. Never the token itself.
 */
export const WhoAmI = z.object({
  tenant: TenantId,
  role: Role,
  /** What the log records as who approved or killed. */
  name: z.string(),
});
export type WhoAmI = z.infer<typeof WhoAmI>;
