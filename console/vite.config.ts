import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The console is a static site: Vite bundles console/src into console/dist, which
// partykit serves (`serve` in partykit.json). Preact's JSX through Vite's own oxc
// transform, so no Babel preset is needed.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/",
  logLevel: "warn",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  resolve: { alias: { react: "preact/compat", "react-dom": "preact/compat" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
  },
});
