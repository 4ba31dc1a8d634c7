import { defineConfig } from "drizzle-kit";

// `npm run audit:generate` writes a migration for every change to schema/audit.ts; the
// audit store applies them when it opens (PGlite or Postgres alike).
export default defineConfig({
  dialect: "postgresql",
  schema: "./schema/audit.ts",
  out: "./audit/migrations",
});
