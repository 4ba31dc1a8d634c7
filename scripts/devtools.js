// `partykit dev` keeps a DevTools session open on workerd and turns its Network domain on,
// so workerd reports every subrequest (each gateway-to-actor call, each upstream fetch) as
// inspector events, which partykit's Node process parses and, with no DevTools window
// attached, keeps in memory. That costs ~1 ms of workerd CPU and ~1 ms of partykit's per
// proxied call, for an instrument nobody is looking at. partykit serves that session on a
// port of its own (9229 when free); through it we send `Network.disable` once workerd is
// up. A DevTools window opened later turns the events back on for itself.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import WebSocket from "ws";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** TCP ports the process `pid` listens on: /proc on Linux, lsof elsewhere; [] if neither works. */
export function listeningPorts(pid) {
  if (process.platform === "linux") {
    const inodes = new Set();
    let fds = [];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      return [];
    }
    for (const fd of fds) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch {
        /* closed while we looked */
      }
    }
    const ports = [];
    for (const table of ["tcp", "tcp6"]) {
      let text = "";
      try {
        text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
      } catch {
        continue;
      }
      for (const line of text.split("\n").slice(1)) {
        const cols = line.trim().split(/\s+/);
        // State 0A is LISTEN; column 9 is the socket's inode.
        if (cols.length > 9 && cols[3] === "0A" && inodes.has(cols[9])) ports.push(parseInt(cols[1].split(":")[1], 16));
      }
    }
    return ports;
  }
  try {
    const out = execFileSync("lsof", ["-nP", "-a", "-p", String(pid), "-iTCP", "-sTCP:LISTEN", "-Fn"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return [...out.matchAll(/^n.*:(\d+)$/gm)].map((m) => Number(m[1]));
  } catch {
    return [];
  }
}

/** The port of partykit's DevTools proxy, among the ports of its process. */
async function findProxy(pid) {
  for (const port of listeningPorts(pid)) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/json`, { signal: AbortSignal.timeout(1_000) });
      const targets = await res.json();
      const t = Array.isArray(targets) ? targets[0] : undefined;
      if (t && typeof t.webSocketDebuggerUrl === "string" && t.description === "workers") return port;
    } catch {
      /* another of its servers (the loopback for workerd's logs) */
    }
  }
  return undefined;
}

/** Sends one DevTools command through the proxy and waits for workerd's answer to it. */
function command(port, method, timeoutMs) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const id = 900_000_000 + Math.floor(Math.random() * 1_000_000);
    const done = (ok) => {
      clearTimeout(timer);
      clearInterval(resend);
      ws.removeAllListeners();
      ws.on("error", () => {});
      ws.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    // The proxy wires the two sockets together on its next render: until then a command is dropped.
    let resend;
    ws.on("open", () => {
      const send = () => ws.send(JSON.stringify({ id, method, params: {} }));
      send();
      resend = setInterval(send, 250);
    });
    ws.on("message", (raw) => {
      try {
        if (JSON.parse(String(raw)).id === id) done(true);
      } catch {
        /* not ours */
      }
    });
    // Another client is attached (a DevTools window): leave its session alone.
    ws.on("close", () => done(false));
    ws.on("error", () => done(false));
  });
}

/**
 * Turns partykit dev's DevTools network events off for the server whose partykit process is
 * `pid`. Resolves true once workerd confirmed it, false if it could not be done in time
 * (no proxy found, another DevTools client attached): the server works the same either way.
 */
export async function quietDevtools(pid, { timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let found = false;
  while (Date.now() < deadline) {
    const port = await findProxy(pid);
    found ||= port !== undefined;
    // No proxy among its ports after a few seconds: this partykit has none, or ports cannot be listed here.
    if (!found && Date.now() - started > 3_000) return false;
    // Until partykit has reached workerd's inspector, commands are dropped: sent again until answered.
    if (port !== undefined && (await command(port, "Network.disable", Math.max(500, deadline - Date.now())))) return true;
    await sleep(100);
  }
  return false;
}
