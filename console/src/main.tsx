import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { onUnauthorized } from "./api";
import { banners, dismiss } from "./banners";
import { config, readConfig, signIn, signOut } from "./config";
import { route } from "./route";
import { useObservable } from "./signal";
import { sessions, startTenant, stopTenant, tenantStatus, tenantVersion } from "./tenant";
import { Link } from "./ui/bits";
import { Approvals } from "./views/approvals";
import { Audit } from "./views/audit";
import { Overview } from "./views/overview";
import { SessionDetail } from "./views/session";
import { Sessions } from "./views/sessions";
import "./style.css";

function App() {
  const [signedIn, setSignedIn] = useState(false);

  useEffect(() => {
    readConfig();
    const refused = () => {
      stopTenant();
      signOut();
      setSignedIn(false);
    };
    onUnauthorized.add(refused);
    if (config.token) {
      startTenant(refused);
      setSignedIn(true);
    }
    return () => onUnauthorized.delete(refused);
  }, []);

  return (
    <>
      <TopBar signedIn={signedIn} onSignOut={() => (stopTenant(), signOut(), setSignedIn(false))} />
      <main>{signedIn ? <View /> : <SignIn onDone={() => (startTenant(() => (stopTenant(), signOut(), setSignedIn(false))), setSignedIn(true))} />}</main>
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
  const pending = [...sessions.values()].reduce((n, s) => n + s.pendingApprovals.length, 0);
  const current = r.view === "session" ? "sessions" : r.view;
  useEffect(() => {
    document.title = pending ? `(${pending}) Governor · ${config.tenant}` : `Governor · ${config.tenant}`;
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
            <span class="tenant" id="tenant-label">
              tenant {config.tenant}
            </span>
            <span id="conn-wrap">
              <Link status={status} label="the tenant socket" />
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
  const [tenant, setTenant] = useState(config.tenant);
  return (
    <form
      id="login"
      class="card login"
      onSubmit={(e) => {
        e.preventDefault();
        signIn(token.trim(), tenant.trim());
        setToken("");
        onDone();
      }}
    >
      <h2>Sign in</h2>
      <p class="muted">Use an operator or auditor token. It is kept in this tab only (sessionStorage).</p>
      <label>
        Token <input name="token" type="password" autoComplete="off" required autoFocus value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
      </label>
      <label>
        Tenant <input name="tenant" pattern="[A-Za-z0-9._~\-]{1,128}" required value={tenant} onInput={(e) => setTenant((e.target as HTMLInputElement).value)} />
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
