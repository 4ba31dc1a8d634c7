#!/usr/bin/env node
// The `governor` CLI, from the built package (sdk/dist; `npm run build` in the repository).
import { main } from "../dist/sdk/cli.js";

process.exitCode = await main(process.argv);
