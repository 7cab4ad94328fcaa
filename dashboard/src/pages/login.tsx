import { useEffect, useRef, useState } from "preact/hooks";
import { auth, message, saveSession } from "../api";
import { navigate } from "../router";

export function Login() {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const first = useRef<HTMLInputElement>(null);
  useEffect(() => first.current?.focus(), []);
  return (
    <section class="login">
      <h1>Log in to Repo Runner</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          const form = new FormData(e.currentTarget as HTMLFormElement);
          setBusy(true);
          setError("");
          try {
            const reply = await auth.login({
              username: String(form.get("username") ?? ""),
              password: String(form.get("password") ?? ""),
            });
            if (!reply.tokens || !reply.user) throw new Error("the server returned no session");
            saveSession({
              access: reply.tokens.accessToken,
              refresh: reply.tokens.refreshToken,
              username: reply.user.username,
              userId: reply.user.id,
              tier: reply.user.tier,
            });
            navigate("/runs", true);
          } catch (err) {
            setError(message(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <label for="username">Username</label>
        <input id="username" name="username" autocomplete="username" required ref={first} />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required />
        <button type="submit" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
      </form>
    </section>
  );
}
