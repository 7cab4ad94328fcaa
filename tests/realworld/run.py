#!/usr/bin/env python3
"""Practice-corpus runner for Repo Runner (stdlib only).

For each selected repository of corpus.toml: copy its unpacked tree (CORPUS_DIR/<owner>__<name>) to a fresh
temporary directory, run the given reporunner binary embedded with a fresh REPORUNNER_DATA_DIR (cold caches),
and judge the run:

  serve   `reporunner run DIR -o json`: reached when the run reaches RUNNING and a printed URL answers with a
          status below 500; the run is then stopped (SIGINT to its process group, SIGKILL after a grace period).
  test    `reporunner run DIR --tests -o json`: reached when it exits 0 with >= 1 passed test and none failed
          (a service keeps running after its tests: then when its RUNNING Run line carries them).
  expect = "refusal": the run should end early (FAILED) with an error naming why; reported as "refused".

Results: reached / failed / refused / timeout / missing. Prints a markdown table and writes it to --out. The
table has each run's time to healthy (the run's own events, from its first to its first HEALTHY health event)
and, per binary, the median and p90 of it over the web apps that reached RUNNING; the progress lines show the
seconds each step took. `make realworld` runs every repository with this checkout's release build.
Several binaries may be given (--binary LABEL=PATH, repeatable): each repository is then run with each binary in
turn, one run at a time, so that a partial measurement is still a paired comparison.

Usage:
  tests/realworld/run.py --binary before=/path/to/reporunner --binary after=/path/to/reporunner \
      --only dtolnay/semver,madler/zlib --timeout 240 --out results.md
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURRENT = []  # [Popen, temp dir] of the run in progress, for clean-up on SIGTERM / Ctrl-C


def on_term(signum, frame):
    if CURRENT:
        proc, tmp = CURRENT
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        kill_leftovers(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(130)


def load_corpus(path):
    with open(path, "rb") as f:
        return tomllib.load(f)["repo"]


KEY = re.compile(r"(?i)(error|denied|not permitted|permission|cannot|can't|refus|unsatisf|not found|no such|read-only)")


EXC = re.compile(r"(\b\w*(Error|Exception):|bad option|Read-only file system|Permission denied|not permitted|unsatisfiable)")


def summarize(text):
    """A multi-line error in one line: its first line, then the first lines after it that say what went wrong."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    exc = [l for l in lines[1:] if EXC.search(l)][:1]
    keys = exc + [l for l in lines[1:] if KEY.search(l) and l not in exc][: 2 - len(exc)]
    return " … ".join([lines[0]] + keys) if keys else lines[0] + " … " + lines[-1]


WORKSPACE = re.compile(r"/tmp/rr-corpus-[^/\s]+/data/workspaces/[0-9a-f-]+/[0-9a-f]{64}")
TMP = re.compile(r"/tmp/rr-corpus-[^/\s'`]+")


def one_line(text, limit=260):
    text = TMP.sub("<tmp>", WORKSPACE.sub("<workspace>", str(text)))
    text = " ".join(summarize(text).split())
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def probe(url, deadline):
    """Status of a GET on url (HTTP errors count as their status); None when it never answered."""
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, None
        except urllib.error.HTTPError as e:
            return e.code, None
        except Exception as e:  # connection refused, timeout, bad URL ...
            last = e
            time.sleep(1)
    return None, last


def kill_group(proc, grace):
    """SIGINT the run's process group (Ctrl-C), then SIGKILL it after grace seconds."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and proc.poll() is None:
        try:
            os.killpg(pgid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def kill_leftovers(marker):
    """Kill processes (started by this run, e.g. a sandboxed app in its own session) whose command line or
    working directory lies under this run's temporary directory."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        if marker in cmd or cwd.startswith(marker):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def run_one(binary, repo, src_root, timeout, grace, logs_dir, label):
    name = repo["name"]
    goal = repo["goal"]
    expect = repo.get("expect", "reach")
    src = Path(src_root) / name.replace("/", "__")
    res = {"repo": name, "goal": goal, "expect": expect, "binary": label, "result": "", "seconds": 0.0, "cause": ""}
    if not src.is_dir():
        res.update(result="missing", cause=f"no unpacked tree at {src}")
        return res

    tmp = tempfile.mkdtemp(prefix="rr-corpus-")
    # mkdtemp makes it 0700; a private database server the run provisions runs under its own uid and must be
    # able to traverse the parents of the data dir, as it can below any ordinary directory.
    os.chmod(tmp, 0o755)
    work = Path(tmp) / "repo"
    data = Path(tmp) / "data"
    shutil.copytree(src, work, symlinks=True)
    data.mkdir()
    env = dict(os.environ)
    env["REPORUNNER_DATA_DIR"] = str(data)
    cmd = [binary, "run", str(work), "-o", "json"]
    if goal == "test":
        cmd.append("--tests")
    if logs_dir:
        # The install, build, setup, app and test output, as log events in the JSON lines kept below.
        cmd.append("--logs")

    events = []
    lines = []
    stderr_path = Path(tmp) / "stderr.txt"
    start = time.monotonic()
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)

        def reader():
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                lines.append(line)
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"raw": line})

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        CURRENT[:] = [proc, tmp]

        deadline = start + timeout
        urls, last_notice, last_state, last_step = [], "", "", ""
        seen = 0
        outcome = None  # (result, cause)
        while True:
            while seen < len(events):
                ev = events[seen]
                seen += 1
                if "url" in ev:
                    urls.append(ev["url"])
                if "notice" in ev:
                    last_notice = ev["notice"]
                if "step" in ev and isinstance(ev["step"], dict):
                    s = ev["step"]
                    step = s.get("step", "").removeprefix("STEP_").lower()
                    status = s.get("status", "").removeprefix("STEP_STATUS_").lower()
                    last_step = f'{step} {status} {s.get("detail", "")}'.strip()
                if "state" in ev and "runId" in ev:
                    last_state = ev["state"]
                if goal == "serve" and ev.get("state") == "RUN_STATE_RUNNING" and "runId" in ev and outcome is None:
                    if not urls:
                        time.sleep(2)  # a URL event may trail the state
                        urls.extend(e["url"] for e in events[seen:] if "url" in e)
                    if not urls:
                        outcome = ("failed", "RUNNING but no URL was printed")
                    else:
                        codes = []
                        for u in urls:
                            code, exc = probe(u, min(deadline, time.monotonic() + 30))
                            codes.append(f"{u} -> {code if code is not None else one_line(exc, 80)}")
                            if code is not None and code < 500:
                                outcome = ("reached", f"RUNNING; {u} answered {code}")
                                break
                        if outcome is None:
                            outcome = ("failed", "RUNNING but no URL answered < 500: " + "; ".join(codes))
                # A service with tests keeps running after them (`--tests` is
                # start-and-test): its Run line with the results is the end.
                if (goal == "test" and outcome is None and "id" in ev and "runId" not in ev
                        and ev.get("state") == "RUN_STATE_RUNNING" and ev.get("testResults")):
                    results = ev["testResults"]
                    passed = sum(int(r.get("counts", {}).get("passed", 0)) for r in results)
                    failed = sum(int(r.get("counts", {}).get("failed", 0)) + int(r.get("counts", {}).get("errors", 0))
                                 for r in results)
                    summary = "; ".join(f'{r.get("component", "")}: {r.get("framework", "")} {r.get("summary", "")}'
                                        .strip() for r in results)
                    if passed >= 1 and failed == 0:
                        outcome = ("reached", f"{passed} passed, app still running ({summary})")
                    else:
                        outcome = ("failed", summary)
            if outcome is not None:
                break
            if proc.poll() is not None:
                t.join(timeout=5)
                if seen < len(events):
                    continue
                break
            if time.monotonic() > deadline:
                outcome = ("timeout", f"no end after {timeout}s; last state {last_state or '-'}; "
                                      f"last step {last_step or '-'}; last notice {last_notice or '-'}")
                break
            time.sleep(0.2)

        res["seconds"] = round(time.monotonic() - start, 1)
        if proc.poll() is None:
            kill_group(proc, grace)
        kill_leftovers(tmp)
        t.join(timeout=5)
        CURRENT[:] = []

    rc = proc.returncode
    final = None
    for ev in reversed(events):
        if "id" in ev and "state" in ev and "runId" not in ev:
            final = ev
            break
    if outcome is None:
        error = (final or {}).get("error", "")
        if goal == "test":
            results = (final or {}).get("testResults", [])
            passed = sum(int(r.get("counts", {}).get("passed", 0)) for r in results)
            failed = sum(int(r.get("counts", {}).get("failed", 0)) + int(r.get("counts", {}).get("errors", 0))
                         for r in results)
            summary = "; ".join(f'{r.get("component", "")}: {r.get("framework", "")} {r.get("summary", "")}'.strip()
                                for r in results)
            if rc == 0 and passed >= 1 and failed == 0:
                outcome = ("reached", f"{passed} passed ({summary})")
            else:
                cause = error or summary or last_notice or f"exit {rc}"
                if summary and error and summary not in error:
                    cause = f"{error} [{summary}]"
                outcome = ("failed", cause)
        else:
            cause = error or last_notice or f"exited {rc} in state {last_state or '-'}"
            outcome = ("failed", cause)
        if outcome[0] == "failed" and not events:
            tail = stderr_path.read_text("utf-8", "replace").strip().splitlines()
            outcome = ("failed", f"exit {rc}; no events; stderr: {tail[-1] if tail else '-'}")
    result, cause = outcome
    if expect == "refusal" and result == "failed":
        result = "refused"
    res["result"] = result
    res["cause"] = one_line(cause)
    res["notice"] = one_line(last_notice) if last_notice else ""
    res["healthy"], res["steps"] = timeline(events)

    if logs_dir:
        d = Path(logs_dir)
        d.mkdir(parents=True, exist_ok=True)
        stem = f'{label}__{name.replace("/", "__")}'
        (d / f"{stem}.jsonl").write_text("\n".join(lines) + "\n")
        shutil.copy(stderr_path, d / f"{stem}.stderr")
    shutil.rmtree(tmp, ignore_errors=True)
    if Path(tmp).exists():
        subprocess.run(["rm", "-rf", tmp], check=False)
    return res


def parse_time(stamp):
    """An RFC 3339 timestamp of a RunEvent (`2026-12-06T21:00:01.123456789Z`) as epoch seconds."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", stamp or "")
    if not m:
        return None
    import calendar
    whole = calendar.timegm(tuple(int(x) for x in m.groups()[:6]))
    return whole + (float("0." + m.group(7)) if m.group(7) else 0.0)


def timeline(events):
    """Time to healthy (the run's own events: its first to the first HEALTHY health event) and the seconds each
    step took, in order, from the step events' durations (`install 12.3 s, start 1.0 s, ...`)."""
    times = [parse_time(e.get("time")) for e in events if "runId" in e]
    times = [t for t in times if t is not None]
    healthy = None
    for e in events:
        h = e.get("health")
        if isinstance(h, dict) and h.get("health") == "COMPONENT_HEALTH_HEALTHY" and times:
            t = parse_time(e.get("time"))
            if t is not None:
                healthy = round(t - times[0], 1)
                break
    steps = []
    for e in events:
        s = e.get("step")
        if isinstance(s, dict) and s.get("durationMs") and s.get("status", "").endswith(("FINISHED", "FAILED")):
            name = s.get("step", "").removeprefix("STEP_").lower()
            status = "" if s["status"].endswith("FINISHED") else " failed"
            steps.append(f'{name}{status} {int(s["durationMs"]) / 1000:.1f}')
    return healthy, ", ".join(steps)


def quantile(values, q):
    """The q-quantile of `values` by linear interpolation (q = 0.5 is the median)."""
    v = sorted(values)
    if not v:
        return None
    at = (len(v) - 1) * q
    lo = int(at)
    hi = min(lo + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (at - lo), 1)


def healthy_summary(rows, label):
    """Median and p90 of the time to healthy of the web apps that reached RUNNING."""
    got = [r["healthy"] for r in rows if r["binary"] == label and r["goal"] == "serve" and r["result"] == "reached"
           and r.get("healthy") is not None]
    if not got:
        return "No web app reached RUNNING."
    return (f"Time to healthy of the {len(got)} web apps that reached RUNNING: median {quantile(got, 0.5)} s, "
            f"p90 {quantile(got, 0.9)} s.")


def verdict(r):
    want = "refused" if r["expect"] == "refusal" else "reached"
    return "yes" if r["result"] == want else "no"


def table(rows, label):
    out = [f"| repository | goal | result | as expected | seconds | to healthy | cause |",
           "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        if r["binary"] != label:
            continue
        goal = r["goal"] + (" (refusal)" if r["expect"] == "refusal" else "")
        out.append(f'| {r["repo"]} | {goal} | {r["result"]} | {verdict(r)} | {r["seconds"]} | {r.get("healthy") or "-"} | {r["cause"]} |')
    out.append("")
    out.append(healthy_summary(rows, label))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", required=True,
                    help="reporunner binary, PATH or LABEL=PATH; repeat to compare binaries repository by repository")
    ap.add_argument("--only", default="", help="comma-separated owner/name list (default: all of corpus.toml)")
    ap.add_argument("--out", default="", help="write the markdown table(s) here (and FILE.jsonl with the raw rows)")
    ap.add_argument("--timeout", type=float, default=240, help="wall-clock limit per run, seconds (default 240)")
    ap.add_argument("--grace", type=float, default=20, help="seconds between SIGINT and SIGKILL when stopping")
    ap.add_argument("--corpus", default=str(HERE / "corpus.toml"))
    ap.add_argument("--corpus-dir", default="/tmp/corpus", help="unpacked trees, one <owner>__<name> per repository")
    ap.add_argument("--logs", default="", help="keep each run's JSON events, its log lines included, and its stderr in this directory")
    ap.add_argument("--allow-unsandboxed", action="store_true",
                    help="run even without bubblewrap (the embedded CLI then runs every step unsandboxed, as this "
                         "user: results are not comparable with sandboxed ones)")
    args = ap.parse_args()
    if not shutil.which("bwrap") and not args.allow_unsandboxed:
        # Without it the embedded CLI falls back to running the repositories' code as this user (root, here):
        # tests that check file permissions pass or fail for the wrong reason.
        sys.exit("bubblewrap (bwrap) is not installed, so runs would not be sandboxed: install it "
                 "(tests/tools.sh does) or pass --allow-unsandboxed")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    binaries = []
    for b in args.binary:
        label, _, path = b.partition("=") if "=" in b else ("run", "", b)
        binaries.append((label, os.path.abspath(path)))
    corpus = load_corpus(args.corpus)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        by_name = {r["name"]: r for r in corpus}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            sys.exit(f"not in the corpus: {', '.join(unknown)}")
        corpus = [by_name[w] for w in wanted]

    rows = []
    jsonl = open(args.out + ".jsonl", "a") if args.out else None

    def write_out():
        if not args.out:
            return
        parts = []
        for label, path in binaries:
            parts.append(f"### {label}: `{path}`\n\n" + table(rows, label) + "\n")
        Path(args.out).write_text("\n".join(parts))

    for repo in corpus:
        for label, path in binaries:
            print(f"[{time.strftime('%H:%M:%S')}] {label}: {repo['name']} ({repo['goal']}) ...", flush=True)
            r = run_one(path, repo, args.corpus_dir, args.timeout, args.grace, args.logs, label)
            rows.append(r)
            print(f"    -> {r['result']} in {r['seconds']}s: {r['cause']}", flush=True)
            if r.get("healthy") is not None:
                print(f"       healthy after {r['healthy']}s", flush=True)
            if r.get("steps"):
                print(f"       steps: {r['steps']}", flush=True)
            if jsonl:
                jsonl.write(json.dumps(r) + "\n")
                jsonl.flush()
            write_out()

    for label, path in binaries:
        print(f"\n### {label}: `{path}`\n")
        print(table(rows, label))
    write_out()


if __name__ == "__main__":
    main()
