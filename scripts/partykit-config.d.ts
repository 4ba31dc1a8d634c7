/** A private partykit config file holding `vars`; pass its path as `partykit dev --config`. */
export function devConfig(root: string, vars: Record<string, string>): { path: string; remove(): void };
