import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { auth, onSession, saveSession, session } from "./api";
import { Tier } from "./gen/reporunner/common/v1/tier_pb";
import { tierLabel } from "./format";
import { Admin } from "./pages/admin";
import { Login } from "./pages/login";
import { NewRun } from "./pages/new-run";
import { RunPage } from "./pages/run";
import { Runs } from "./pages/runs";
import { Search } from "./pages/search";
import { Usage } from "./pages/usage";
import { Link, navigate, usePath } from "./router";
import "./style.css";

function useSession() {
  const [s, setS] = useState(session());
  useEffect(() => onSession(() => setS(session())), []);
  return s;
}

function Page(props: { path: string }) {
  const { path } = props;
  const run = path.match(/^\/runs\/([^/]+)$/);
  if (run && path !== "/runs/new") return <RunPage id={decodeURIComponent(run[1])} />;
  switch (path) {
    case "/runs/new":
      return <NewRun />;
    case "/search":
      return <Search />;
    case "/usage":
      return <Usage />;
    case "/admin":
      return <Admin />;
    default:
      return <Runs />;
  }
}

function App() {
  const path = usePath();
  const s = useSession();
  useEffect(() => {
    if (!s && path !== "/login") navigate("/login", true);
    if (s && (path === "/login" || path === "/")) navigate("/runs", true);
  }, [s, path]);
  useEffect(() => {
    const title = path.startsWith("/runs/") && path !== "/runs/new" ? "Run" : path.slice(1) || "runs";
    document.title = `${title.charAt(0).toUpperCase()}${title.slice(1).replace("runs/new", "New run")} · Repo Runner`;
    // After a navigation, focus goes to the new page's content (screen
    // readers announce it); the login page focuses its username instead.
    if (s && path !== "/login") document.getElementById("main")?.focus();
  }, [path, s]);
  if (!s || path === "/login") {
    return (
      <main id="main" tabIndex={-1}>
        <Login />
      </main>
    );
  }
  const nav = [
    ["/runs", "Runs"],
    ["/runs/new", "New run"],
    ["/search", "Search"],
    ["/usage", "Usage"],
    ...(s.tier === Tier.ADMIN ? [["/admin", "Admin"]] : []),
  ];
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Repo Runner</span>
        <nav aria-label="Main">
          {nav.map(([href, label]) => (
            <Link key={href} href={href} current={path === href || (href === "/runs" && /^\/runs\/(?!new)/.test(path))}>
              {label}
            </Link>
          ))}
        </nav>
        <span class="who">
          {s.username} · {tierLabel(s.tier)}
        </span>
        <button
          type="button"
          class="secondary"
          onClick={async () => {
            try {
              await auth.logout({ refreshToken: s.refresh });
            } catch {
              // logged out locally either way
            }
            saveSession(null);
          }}
        >
          Log out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} />
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
