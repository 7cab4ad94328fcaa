import { useEffect, useState } from "preact/hooks";
import { admin, message } from "../api";
import { time, tierLabel } from "../format";
import type { AuditEvent, User } from "../gen/reporunner/auth/v1/auth_pb";
import { Tier } from "../gen/reporunner/common/v1/tier_pb";

const TIERS = [Tier.FREE, Tier.TESTER, Tier.ADVANCED, Tier.PREMIUM];

export function Admin() {
  const [users, setUsers] = useState<User[] | null>(null);
  const [audit, setAudit] = useState<AuditEvent[]>([]);
  const [error, setError] = useState("");
  const [status, setStatus] = useState("");

  const load = async () => {
    try {
      const [u, a] = await Promise.all([admin.listUsers({ pageSize: 500 }), admin.listAuditEvents({ pageSize: 100 })]);
      setUsers(u.users);
      setAudit(a.events);
    } catch (err) {
      setError(message(err));
    }
  };
  useEffect(() => {
    load();
  }, []);

  const act = async (what: string, f: () => Promise<unknown>) => {
    setError("");
    setStatus("");
    try {
      await f();
      setStatus(what);
      await load();
    } catch (err) {
      setError(message(err));
    }
  };
  const names = new Map((users ?? []).map((u) => [u.id, u.username]));

  return (
    <section>
      <h1>Users</h1>
      {error && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      {status && <p role="status">{status}</p>}
      <form
        class="row"
        aria-label="Create a user"
        onSubmit={(e) => {
          e.preventDefault();
          const formEl = e.currentTarget as HTMLFormElement;
          const form = new FormData(formEl);
          const username = String(form.get("new-username") ?? "");
          act(`Created ${username}.`, async () => {
            await admin.createUser({
              username,
              password: String(form.get("new-password") ?? ""),
              tier: Number(form.get("new-tier")) as Tier,
            });
            formEl.reset();
          });
        }}
      >
        <label for="new-username">Username</label>
        <input id="new-username" name="new-username" required autocomplete="off" />
        <label for="new-password">Password</label>
        <input id="new-password" name="new-password" type="password" required autocomplete="new-password" />
        <label for="new-tier">Tier</label>
        <select id="new-tier" name="new-tier">
          {TIERS.map((t) => (
            <option key={t} value={t}>
              {tierLabel(t)}
            </option>
          ))}
        </select>
        <button type="submit">Create user</button>
      </form>
      {users === null ? (
        <p aria-busy="true">Loading users…</p>
      ) : (
        <table>
          <caption class="visually-hidden">Every user</caption>
          <thead>
            <tr>
              <th scope="col">User</th>
              <th scope="col">Tier</th>
              <th scope="col">Status</th>
              <th scope="col">Created</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {users.map((u) => (
              <tr key={u.id} data-user={u.username}>
                <td>{u.username}</td>
                <td>
                  {u.tier === Tier.ADMIN ? (
                    tierLabel(u.tier)
                  ) : (
                    <select
                      aria-label={`Tier of ${u.username}`}
                      value={u.tier}
                      onChange={(e) => {
                        const tier = Number((e.target as HTMLSelectElement).value) as Tier;
                        act(`${u.username} is now ${tierLabel(tier)}.`, () => admin.setTier({ userId: u.id, tier }));
                      }}
                    >
                      {TIERS.map((t) => (
                        <option key={t} value={t}>
                          {tierLabel(t)}
                        </option>
                      ))}
                    </select>
                  )}
                </td>
                <td>{u.blocked ? <span class="badge bad">blocked</span> : <span class="badge good">active</span>}</td>
                <td>{time(u.createdAt)}</td>
                <td class="actions">
                  {u.tier !== Tier.ADMIN && (
                    <>
                      {u.blocked ? (
                        <button
                          type="button"
                          class="secondary"
                          onClick={() => act(`Unblocked ${u.username}.`, () => admin.unblockUser({ userId: u.id }))}
                        >
                          Unblock <span class="visually-hidden">{u.username}</span>
                        </button>
                      ) : (
                        <button
                          type="button"
                          class="secondary"
                          onClick={() =>
                            act(`Blocked ${u.username}.`, () =>
                              admin.blockUser({ userId: u.id, reason: "blocked from the dashboard" }),
                            )
                          }
                        >
                          Block <span class="visually-hidden">{u.username}</span>
                        </button>
                      )}
                      <button
                        type="button"
                        class="danger"
                        onClick={() => {
                          if (confirm(`Delete ${u.username} and their runs' access? This cannot be undone.`)) {
                            act(`Deleted ${u.username}.`, () => admin.deleteUser({ userId: u.id }));
                          }
                        }}
                      >
                        Delete <span class="visually-hidden">{u.username}</span>
                      </button>
                    </>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Audit log</h2>
      <table>
        <caption class="visually-hidden">The newest 100 audit events</caption>
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Actor</th>
            <th scope="col">Action</th>
            <th scope="col">Target</th>
            <th scope="col">Detail</th>
          </tr>
        </thead>
        <tbody>
          {audit.map((e) => (
            <tr key={e.id}>
              <td>{time(e.time)}</td>
              <td>{names.get(e.actorId) ?? e.actorId}</td>
              <td>{e.action}</td>
              <td>{names.get(e.targetId) ?? e.targetId}</td>
              <td>{e.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
