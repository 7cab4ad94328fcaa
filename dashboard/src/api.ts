// The clients of the public services, generated from proto/ (npm run generate)
// and spoken over the gateway's Connect JSON on the same origin. The session
// (access and refresh token) lives in sessionStorage: one tab, gone when it
// closes; requests carry it as a bearer header, never as a cookie, so no other
// site can make the browser call with it (no CSRF), and the strict
// Content-Security-Policy of every page keeps foreign script out.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdminService, AuthService } from "./gen/reporunner/auth/v1/auth_pb";
import { Tier } from "./gen/reporunner/common/v1/tier_pb";
import { OrchestratorService } from "./gen/reporunner/orchestrator/v1/orchestrator_pb";

export interface Session {
  access: string;
  refresh: string;
  username: string;
  userId: string;
  tier: Tier;
}

const KEY = "reporunner.session";
const listeners = new Set<() => void>();

export function session(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return null;
  }
}

export function saveSession(value: Session | null) {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
  listeners.forEach((f) => f());
}

export function onSession(f: () => void): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

const bearer: Interceptor = (next) => async (req) => {
  const s = session();
  if (s) req.header.set("authorization", `Bearer ${s.access}`);
  return next(req);
};

// One refresh at a time: a refresh token is spent by its use.
let refreshing: Promise<boolean> | null = null;

async function refresh(): Promise<boolean> {
  const s = session();
  if (!s?.refresh) return false;
  refreshing ??= (async () => {
    try {
      const reply = await plainAuth.refresh({ refreshToken: s.refresh });
      const tokens = reply.tokens;
      if (!tokens) return false;
      saveSession({ ...s, access: tokens.accessToken, refresh: tokens.refreshToken });
      return true;
    } catch {
      saveSession(null);
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

// An expired access token is refreshed once, and the call made again.
const renew: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (req.stream || !(err instanceof ConnectError) || err.code !== Code.Unauthenticated) throw err;
    if (!(await refresh())) throw err;
    req.header.set("authorization", `Bearer ${session()?.access ?? ""}`);
    return next(req);
  }
};

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  interceptors: [renew, bearer],
});
const plainTransport = createConnectTransport({ baseUrl: window.location.origin });

const plainAuth = createClient(AuthService, plainTransport);
export const auth = createClient(AuthService, transport);
export const admin = createClient(AdminService, transport);
export const orchestrator = createClient(OrchestratorService, transport);

/** Makes sure the access token is fresh before a long stream starts. */
export async function freshen(): Promise<void> {
  try {
    await auth.whoAmI({});
  } catch {
    // the stream reports the error itself
  }
}

/** An error as one line for people. */
export function message(err: unknown): string {
  if (err instanceof ConnectError) {
    const what = Code[err.code]?.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase() ?? "error";
    return `${err.rawMessage || what} (${what})`;
  }
  return err instanceof Error ? err.message : String(err);
}

export function isCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}
