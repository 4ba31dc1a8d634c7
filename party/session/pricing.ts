import type { PricedAt } from "../../machines/money";
import { declaredPriceFor, declaredRates } from "../../schema/declared-prices";
import type { Policy } from "../../schema/policy";
import { reserveRates } from "../../schema/pricing";
import type { ReserveRequest } from "../ops";

// Where a proxied call's price comes from. The gateway prices it from the built-in table
// (party/proxy/call.ts); a price the session's policy declares for the model takes
// precedence, and only the actor knows the policy, so it is applied here.

export interface CallRates {
  price: ReserveRequest["price"];
  premium?: ReserveRequest["premium"];
  /** Set when the policy declares the price: recorded on the reservation, and what its settle is charged at. */
  rates?: PricedAt;
}

export function callRates(policy: Policy | null | undefined, req: ReserveRequest): CallRates {
  const declared = declaredPriceFor(policy?.pricing, req.provider, req.model);
  if (!declared) return { price: req.price, ...(req.premium && { premium: req.premium }) };
  const rates = declaredRates(req.provider, req.model, declared.price);
  const { price, premium } = reserveRates(req.provider, rates, req.cacheWrite ?? "none", req.context);
  return { price, ...(premium && { premium }), rates: { ...rates, source: "policy", key: declared.key } };
}
