import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, onUnauthorized } from "./api";
import { banner, banners, dismiss } from "./banners";
import { config, readConfig, signIn, signOut } from "./config";
import { identify } from "./identity";
import { route } from "./route";
import { useNow, useObservable } from "./signal";
import { sessions, startTenant, stopTenant, tenantStatus, tenantVersion } from "./tenant";
import { Link } from "./ui/bits";
import { Approvals } from "./views/approvals";
import { Audit } from "./views/audit";
import { Overview } from "./views/overview";
import { SessionDetail } from "./views/session";
import { Sessions } from "./views/sessions";
import "./style.css";

type Phase = { kind: "signed-out" } | { kind: "identifying"; why?: string } | { kind: "ready" };

function App() {
  const [phase, setPhase] = useState<Phase>({ kind: "signed-out" });
  // Each sign-in gets a number, so a whoami answer that arrives after a sign-out is dropped.
  const attempt = useRef(0);

  const leave = () => {
    attempt.current++;
    stopTenant();
    signOut();
    setPhase({ kind: "signed-out" });
  };

  /** Learns the token's tenant and role, then goes live; an unreachable server is tried again. */
  const enter = async () => {
    const mine = ++attempt.current;
    setPhase({ kind: "identifying" });
    for (let n = 0; ; n++) {
      const r = await identify();
      if (mine !== attempt.current) return;
      if (r.ok) {
        startTenant();
        setPhase({ kind: "ready" });
        return;
      }
      if (!r.retry) {
        banner(r.why);
        return leave();
      }
      setPhase({ kind: "identifying", why: r.why });
      await new Promise((ok) => setTimeout(ok, Math.min(30_000, 1000 * 2 ** n)));
      if (mine !== attempt.current) return;
    }
  };

  useEffect(() => {
    readConfig();
    const refused = (e: ApiError) => {
      banner(e.toString());
      leave();
    };
    onUnauthorized.add(refused);
    if (config.token) void enter();
    return () => void onUnauthorized.delete(refused);
  }, []);

  return (
    <>
      <TopBar signedIn={phase.kind === "ready"} onSignOut={leave} />
      <main>
        {phase.kind === "ready" && <View />}
        {phase.kind === "signed-out" && <SignIn onDone={() => void enter()} />}
        {phase.kind === "identifying" && (
          <div class="card login" id="identifying">
            <h2>Connecting…</h2>
            <p class="muted small">{phase.why ? <>Governor did not answer ({phase.why}); trying again.</> : "Asking Governor who this token is."}</p>
          </div>
        )}
      </main>
      <Banners />
    </>
  );
}

const TABS = [
  ["overview", "Overview"],
  ["sessions", "Sessions"],
  ["approvals", "Approvals"],
  ["audit", "Audit"],
] as const;

function TopBar({ signedIn, onSignOut }: { signedIn: boolean; onSignOut: () => void }) {
  const r = useObservable(route);
  const status = useObservable(tenantStatus);
  useObservable(tenantVersion);
  const now = useNow(5000);
  const pending = [...sessions.values()].reduce((n, s) => n + s.pendingApprovals.filter((a) => a.deadline > now).length, 0);
  const current = r.view === "session" ? "sessions" : r.view;
  useEffect(() => {
    const name = signedIn && config.tenant ? `Governor · ${config.tenant}` : "Governor";
    document.title = pending ? `(${pending}) ${name}` : name;
  }, [pending, signedIn]);
  return (
    <header class="topbar">
      <h1>
        <span class="logo" aria-hidden="true">
          ◉
        </span>{" "}
        Governor
      </h1>
      {signedIn && (
        <>
          <nav class="tabs" aria-label="Views">
            {TABS.map(([v, label]) => (
              <a key={v} href={`#${v}`} class={current === v ? "on" : ""} aria-current={current === v ? "page" : undefined} data-tab={v}>
                {label}
                {v === "approvals" && pending > 0 && <span class="count hot">{pending}</span>}
              </a>
            ))}
          </nav>
          <span class="topbar-right">
            <span class="tenant" id="tenant-label" title={`signed in as ${config.name} (${config.role}) of tenant ${config.tenant}`}>
              <span class="tenant-word">tenant </span>
              <strong>{config.tenant}</strong>
              {config.role !== "operator" && (
                <span class="role" id="role-label" title="Auditors read everything and decide nothing">
                  {config.role} · read-only
                </span>
              )}
            </span>
            <span id="conn-wrap">
              <Link status={status} label="the tenant socket" />
              {status.state === "refused" && (
                <button type="button" class="ghost retry" id="reconnect" onClick={() => startTenant()}>
                  Retry
                </button>
              )}
            </span>
            <button type="button" class="ghost" id="logout" onClick={onSignOut}>
              Sign out
            </button>
          </span>
        </>
      )}
    </header>
  );
}

function View() {
  const r = useObservable(route);
  switch (r.view) {
    case "overview":
      return <Overview />;
    case "sessions":
      return <Sessions params={r.params} />;
    case "approvals":
      return <Approvals />;
    case "audit":
      return <Audit params={r.params} />;
    case "session":
      return <SessionDetail key={r.id} id={r.id} />;
  }
}

function SignIn({ onDone }: { onDone: () => void }) {
  const [token, setToken] = useState("");
  return (
    <form
      id="login"
      class="card login"
      onSubmit={(e) => {
        e.preventDefault();
        signIn(token.trim());
        setToken("");
        onDone();
      }}
    >
      <h2>Sign in</h2>
      <p class="muted">Use an operator's or an auditor's token; the tenant is the token's. It is kept in this tab only (sessionStorage).</p>
      <label>
        Token <input name="token" type="password" autoComplete="off" required autoFocus value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" class="primary">
        Connect
      </button>
    </form>
  );
}

function Banners() {
  const list = useObservable(banners);
  return (
    <div class="banners" aria-live="assertive">
      {list.map((b) => (
        <div key={b.id} class={`banner ${b.kind}`} role={b.kind === "error" ? "alert" : "status"}>
          <span>{b.text}</span>
          <button type="button" class="ghost" aria-label="Dismiss" onClick={() => dismiss(b.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

render(<App />, document.getElementById("root")!);
