import { useState } from "preact/hooks";
import { message, orchestrator } from "../api";
import { ArchiveFormat } from "../gen/reporunner/agents/source/v1/source_pb";
import { type RepoSource, RunGoal } from "../gen/reporunner/orchestrator/v1/orchestrator_pb";

/** The largest archive the server takes with a run (MAX_UPLOAD_BYTES). */
const MAX_UPLOAD = 32 * 1024 * 1024;

/** An archive's format by its file name. */
export function archiveFormat(name: string): ArchiveFormat | null {
  const lower = name.toLowerCase();
  if (lower.endsWith(".zip")) return ArchiveFormat.ZIP;
  if (lower.endsWith(".tar.gz") || lower.endsWith(".tgz")) return ArchiveFormat.TAR_GZ;
  if (lower.endsWith(".tar")) return ArchiveFormat.TAR;
  return null;
}

async function repoSource(kind: string, form: FormData): Promise<RepoSource["source"]> {
  const where = String(form.get("where") ?? "").trim();
  if (kind === "git") return { case: "gitUrl", value: where };
  if (kind === "path") return { case: "localPath", value: where };
  const file = form.get("archive");
  if (!(file instanceof File) || file.size === 0) throw new Error("choose an archive to upload");
  const format = archiveFormat(file.name);
  if (format === null) throw new Error(`${file.name} is not a .zip, .tar, .tar.gz or .tgz archive`);
  if (file.size > MAX_UPLOAD) {
    throw new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; an upload may have 32 MiB`);
  }
  const content = new Uint8Array(await file.arrayBuffer());
  return { case: "archive", value: { $typeName: "reporunner.orchestrator.v1.UploadedArchive", content, format, fileName: file.name } };
}
import { navigate } from "../router";

/** KEY=VALUE lines as a map; a bad line is an error naming it. */
export function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`env line ${i + 1} is not KEY=VALUE: ${line}`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  return env;
}

export function NewRun() {
  const [kind, setKind] = useState<"git" | "path" | "archive">("git");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  return (
    <section>
      <h1>New run</h1>
      <form
        class="stack"
        onSubmit={async (e) => {
          e.preventDefault();
          const form = new FormData(e.currentTarget as HTMLFormElement);
          setBusy(true);
          setError("");
          try {
            const run = await orchestrator.createRun({
              source: {
                source: await repoSource(kind, form),
                ref: kind === "git" ? String(form.get("ref") ?? "").trim() : "",
              },
              goal: Number(form.get("goal")) as RunGoal,
              env: parseEnv(String(form.get("env") ?? "")),
              index: form.get("index") === "on",
            });
            if (run.run) navigate(`/runs/${encodeURIComponent(run.run.id)}`);
          } catch (err) {
            setError(message(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        <fieldset>
          <legend>Repository</legend>
          <label class="inline">
            <input type="radio" name="kind" value="git" checked={kind === "git"} onChange={() => setKind("git")} /> Git
            URL
          </label>
          <label class="inline">
            <input type="radio" name="kind" value="path" checked={kind === "path"} onChange={() => setKind("path")} />{" "}
            Path on the server (allowed roots only)
          </label>
          <label class="inline">
            <input
              type="radio"
              name="kind"
              value="archive"
              checked={kind === "archive"}
              onChange={() => setKind("archive")}
            />{" "}
            Upload an archive
          </label>
          {kind === "archive" ? (
            <>
              <label for="archive">Archive (.zip, .tar, .tar.gz; at most 32 MiB)</label>
              <input id="archive" name="archive" type="file" accept=".zip,.tar,.tar.gz,.tgz" required />
            </>
          ) : (
            <>
              <label for="where">{kind === "git" ? "Git URL" : "Path"}</label>
              <input
                id="where"
                name="where"
                required
                placeholder={kind === "git" ? "https://github.com/owner/name.git" : "/srv/repos/app"}
              />
              <label for="ref">Branch, tag or commit (optional)</label>
              <input id="ref" name="ref" disabled={kind !== "git"} />
            </>
          )}
        </fieldset>
        <label for="goal">Goal</label>
        <select id="goal" name="goal">
          <option value={RunGoal.START}>Start and keep healthy</option>
          <option value={RunGoal.START_AND_TEST}>Start, then run the tests</option>
          <option value={RunGoal.TEST}>Run the tests only</option>
          <option value={RunGoal.ANALYZE}>Analyze only</option>
        </select>
        <label for="env">Environment (KEY=VALUE, one per line)</label>
        <textarea id="env" name="env" rows={4} spellcheck={false} />
        <label class="inline">
          <input type="checkbox" name="index" /> Index the code for search
        </label>
        <button type="submit" disabled={busy}>
          {busy ? "Starting…" : "Start run"}
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
