#!/usr/bin/env node
// Runs before `npm test`: the console's browser test needs Debian's Chromium. On a fresh
// machine where we are root with apt, install it; anywhere else, say how.
import { execSync } from "node:child_process";
import { existsSync } from "node:fs";

const path = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
if (existsSync(path)) process.exit(0);
const root = typeof process.getuid === "function" && process.getuid() === 0;
if (root && existsSync("/usr/bin/apt-get")) {
  console.log("Chromium is missing: installing Debian's chromium for the console test...");
  execSync("apt-get update -qq && apt-get install -y -qq chromium", { stdio: "inherit" });
  process.exit(0);
}
console.error(`Chromium is missing at ${path}: install it (Debian: sudo apt-get install -y chromium) or set CHROMIUM_PATH.`);
process.exit(1);
