import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // A connection per request in every test file: see the file for why.
    setupFiles: ["test/support/connections.ts"],
    testTimeout: 30_000,
    hookTimeout: 90_000,
    // Integration files each start their own partykit dev; two at a time fits 2 cores.
    maxWorkers: 2,
  },
});
