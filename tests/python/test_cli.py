"""The `reporunner` command line as a user drives it: one data dir shared by every command, the app's
output, progress that stays on a terminal, errors with their own exit codes, and the conventions users
expect. Each test names the numbered defect of the CLI issue it covers; all of them drive the real
binary (terminal tests under tmux, asserting on the captured screen)."""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
BINARY = pathlib.Path(os.environ.get("REPORUNNER_BIN") or TARGET / "debug" / "reporunner")
FIXTURES = ROOT / "tests" / "fixtures"
ADMIN_PASSWORD = "plover-quince-47-ravine"
UP_WITHIN = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class User:
    """One user's machine: their own config dir, stored login and data dir (short, for the socket)."""

    def __init__(self, tmp_path):
        self.home = tmp_path
        self.data = pathlib.Path(tempfile.mkdtemp(prefix="rr-"))
        self.env = dict(os.environ)
        for key in ("REPORUNNER_SERVER", "REPORUNNER_DATA_DIR", "REPORUNNER_CONFIG", "NO_COLOR"):
            self.env.pop(key, None)
        self.env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
        self.env["REPORUNNER_CREDENTIALS"] = str(tmp_path / "config" / "reporunner" / "credentials.json")
        self.env["REPORUNNER_ENV_DETECTOR__REGISTRIES"] = "[]"
        # PATH keeps the test venv first (as `make test-python` sets it): a venv's python stands for its
        # base interpreter, and apps' environments are built from that.

    def run(self, *args, stdin=None, timeout=180, data_dir=True, env=None):
        argv = [str(BINARY), *args]
        if data_dir:
            argv += ["--data-dir", str(self.data)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL,
                              env={**self.env, **(env or {})})

    def start(self, *args, env=None):
        """A long-running command (an embedded `run`), its output read line by line."""
        return subprocess.Popen([str(BINARY), *args, "--data-dir", str(self.data)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env={**self.env, **(env or {})})

    def cleanup(self):
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture
def user(tmp_path):
    u = User(tmp_path)
    yield u
    u.cleanup()


def until_line(proc, needle, within=UP_WITHIN):
    """Reads `proc`'s stdout until a line holds `needle`; every line read."""
    seen = []
    deadline = time.monotonic() + within
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"no {needle!r} within {within} s:\n{''.join(seen)}\n{proc.stderr.read()}")


def run_id_of(lines):
    for line in lines:
        m = re.match(r"run ([0-9a-f-]{36})", line)
        if m:
            return m.group(1)
    pytest.fail(f"no run id in {lines}")


def stop_with_ctrl_c(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stdout.read(), proc.stderr.read()


def alive(pid):
    return pathlib.Path(f"/proc/{pid}").exists()


def serving(port):
    """The pids whose command line serves `port` (`... --port PORT`), from /proc."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a == b"--port" and b == str(port).encode() for a, b in zip(argv, argv[1:])):
            pids.append(int(proc.name))
    return pids


# ---- 1 and 2: one owner per data dir; the other commands talk to it --------------------------------------


def test_2_with_a_run_active_list_follow_and_stop_work_from_a_second_shell(user):
    """Defect 2: a second command on the data dir of an active `run` was refused. Now `runs list`,
    `runs logs -f` and `runs stop` (with a run id prefix and --data-dir) go to the owner through its
    control socket, and the stop leaves no process."""
    first = user.start("run", str(FIXTURES / "run-flask"))
    lines = until_line(first, "press Ctrl-C to stop")
    run_id = run_id_of(lines)
    owner = json.loads((user.data / "reporunner.lock").read_text())
    assert owner["pid"] == first.pid and owner["command"] == "run", owner
    assert owner["address"].startswith("http://127.0.0.1:"), owner
    sock = pathlib.Path(owner["socket"])
    assert sock.is_socket() and oct(sock.stat().st_mode & 0o777) == "0o600"

    listed = user.run("runs", "list")
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout and "running" in listed.stdout, listed.stdout

    shown = user.run("runs", "show", run_id[:8], "-o", "json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout.split("\n}\n")[0] + "\n}")
    component = run["components"][0]
    url = component["url"]
    pids = serving(component["port"])
    assert pids, f"the app serves port {component['port']}"

    follow = subprocess.Popen([str(BINARY), "runs", "logs", run_id[:8], "-f", "--source", component["name"],
                               "--data-dir", str(user.data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=user.env, stdin=subprocess.DEVNULL)
    time.sleep(1)
    import urllib.request
    assert "hello from run-flask" in urllib.request.urlopen(url, timeout=10).read().decode()

    stopped = user.run("runs", "stop", run_id[:8])
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout and "error" not in stopped.stdout + stopped.stderr, stopped
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert '"GET / HTTP/1.1" 200' in out, out
    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, pids)), "runs stop left the app running"
    # The first shell's `run` ends with its stopped run, and the data dir is free again.
    first.wait(timeout=60)
    again = user.run("runs", "stop", run_id)
    assert again.returncode == 0 and "already" in again.stdout, again
    assert not sock.exists()


@pytest.fixture
def serve(user):
    """`reporunner serve` on the user's data dir, with an admin, local paths under tests/fixtures allowed."""
    port = free_port()
    log = open(user.home / "serve.log", "w+")
    env = {**user.env, "REPORUNNER_ADMIN__USERNAME": "admin", "REPORUNNER_ADMIN__PASSWORD": ADMIN_PASSWORD,
           "REPORUNNER_SOURCE__ALLOWED_LOCAL_ROOTS": json.dumps([str(FIXTURES)])}
    proc = subprocess.Popen([str(BINARY), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen",
                             f"127.0.0.1:{free_port()}", "--data-dir", str(user.data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (user.data / "reporunner.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"serve did not start: {log.read()}")
        time.sleep(0.1)
    yield {"proc": proc, "addr": f"http://127.0.0.1:{port}", "log": log}
    proc.terminate()
    proc.wait(timeout=30)


def test_1_commands_without_server_talk_to_serve_and_never_interrupt_its_runs(user, serve):
    """Defect 1: with `serve` up, `runs list` without --server opened the data dir itself and marked the
    server's live run interrupted; `runs stop` then killed nothing. Now serve owns the data dir: every
    command on it goes through serve's control socket."""
    first = user.start("run", str(FIXTURES / "run-flask"))
    lines = until_line(first, "press Ctrl-C to stop")
    run_id = run_id_of(lines)
    for _ in range(2):
        listed = user.run("runs", "list")
        assert listed.returncode == 0, listed.stderr
        assert run_id in listed.stdout and "running" in listed.stdout, listed.stdout
    shown = json.loads(user.run("runs", "show", run_id, "-o", "json").stdout.split("\n}\n")[0] + "\n}")
    assert shown["state"] == "RUN_STATE_RUNNING", shown
    pids = serving(shown["components"][0]["port"])
    assert pids
    # A second server on the same data dir is refused, naming the owner.
    clash = subprocess.run([str(BINARY), "serve", "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen",
                            f"127.0.0.1:{free_port()}", "--data-dir", str(user.data)], env=user.env,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert clash.returncode != 0 and "reporunner serve" in clash.stderr and "in use" in clash.stderr, clash
    stopped = user.run("runs", "stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, pids))
    first.wait(timeout=60)
    serve["log"].seek(0)
    assert "interrupted" not in serve["log"].read().lower()


# ---- 3: the app's output everywhere ---------------------------------------------------------------------


@pytest.mark.parametrize("fixture,first_line", [
    ("run-flask", "Serving Flask app"),
    ("run-express-pnpm", "Listening on http://127.0.0.1:"),
])
def test_3_the_apps_own_output_is_in_runs_logs_after_the_run(user, fixture, first_line):
    """Defect 3: `run --logs` streamed install lines only and `runs logs --source <app>` printed nothing
    after the run. Now the app's output is part of the run's history."""
    proc = user.start("run", str(FIXTURES / fixture), "--logs")
    lines = until_line(proc, "press Ctrl-C to stop")
    run_id = run_id_of(lines)
    out, err = stop_with_ctrl_c(proc)
    text = "".join(lines) + out
    assert first_line in text, f"run --logs shows the app's lines:\n{text}"
    # Defect 9: Ctrl-C says "stopped", exit 130, and no "error:".
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip().endswith("stopped") and "error" not in err, err

    sources = user.run("runs", "logs", run_id[:6], "--sources")
    assert sources.returncode == 0, sources.stderr
    names = [line.split()[0] for line in sources.stdout.splitlines()[1:]]
    assert "install" in names, sources.stdout
    app = [n for n in names if n not in ("install", "build")][0]
    logs = user.run("runs", "logs", run_id, "--source", app)
    assert logs.returncode == 0, logs.stderr
    assert first_line in logs.stdout, logs.stdout
    assert all(line.startswith(f"{app} | ") for line in logs.stdout.splitlines()), logs.stdout


# ---- 4: progress that stays -----------------------------------------------------------------------------


def tmux(*args):
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30)


def test_4_a_finished_run_keeps_its_step_history_on_a_terminal(user):
    """Defect 4: on a terminal only the last step and the URL were left. Under tmux, every finished step
    stays with its time."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed (apt install tmux; .ci/run installs it)")
    session = f"rr-{os.getpid()}"
    exports = " ".join(f"{k}={json.dumps(v)}" for k, v in user.env.items() if k.startswith(("REPORUNNER_", "XDG_")))
    command = (f"env {exports} {BINARY} run {FIXTURES / 'run-flask'} --goal start-and-test "
               f"--data-dir {user.data} --skip-agents resolver; echo EXIT=$?")
    assert tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "50").returncode == 0
    try:
        tmux("send-keys", "-t", session, command, "Enter")
        deadline = time.monotonic() + UP_WITHIN
        screen = ""
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", session).stdout
            if "press Ctrl-C to stop" in screen or re.search(r"EXIT=\d", screen):
                break
            time.sleep(1)
        tmux("send-keys", "-t", session, "C-c")
        while time.monotonic() < deadline and not re.search(r"EXIT=\d", screen):
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", session).stdout
        (user.home / "screen.txt").write_text(screen)
    finally:
        tmux("kill-session", "-t", session)
    for step in ("fetch", "detect", "analyze", "install", "start", "probe"):
        assert re.search(rf"✓ {step} +\d+\.\ds", screen), f"{step} is gone from the screen:\n{screen}"
    assert "→ http://127.0.0.1:" in screen, screen
    assert "EXIT=130" in screen, screen


# ---- 5: quickstart, then serve --------------------------------------------------------------------------


def test_5_quickstart_then_serve_with_an_admin_works(user):
    """Defect 5: embedded use made the local owner the admin, and `serve` with an admin then failed. Now
    the admin takes over; the local owner stays, as premium."""
    quick = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze")
    assert quick.returncode == 0, quick.stderr
    port = free_port()
    env = {**user.env, "REPORUNNER_ADMIN__USERNAME": "admin", "REPORUNNER_ADMIN__PASSWORD": ADMIN_PASSWORD}
    proc = subprocess.Popen([str(BINARY), "serve", "--listen", f"127.0.0.1:{port}", "--metrics-listen",
                             f"127.0.0.1:{free_port()}", "--data-dir", str(user.data)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (user.data / "reporunner.sock").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server = f"http://127.0.0.1:{port}"
        login = user.run("login", "admin", "--password-stdin", "--server", server, stdin=ADMIN_PASSWORD + "\n",
                         data_dir=False)
        assert login.returncode == 0, login.stderr
        users = user.run("admin", "users", "list", "--server", server, data_dir=False)
        assert users.returncode == 0, users.stderr
        rows = {line.split()[0]: line for line in users.stdout.splitlines()[1:] if line.strip()}
        assert "admin" in rows["admin"] and "premium" in rows["local"], users.stdout
        audit = user.run("admin", "audit", "--server", server, data_dir=False)
        assert "admin.takeover" in audit.stdout, audit.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_5_quickstart_then_admin_init_takes_over_once(user):
    assert user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze").returncode == 0
    first = user.run("admin", "init", "--username", "boss", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert first.returncode == 0 and "created the admin `boss`" in first.stdout, first
    second = user.run("admin", "init", "--username", "other", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    assert second.returncode == 1 and "already exists (`boss`)" in second.stderr, second


# ---- 6: output into a closed pipe -----------------------------------------------------------------------


def test_6_output_into_a_closed_pipe_ends_quietly(user):
    """Defect 6: `runs logs ID | head -3` panicked with exit 101 on a broken pipe."""
    ran = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "-o", "json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout.strip().splitlines()[-1])["id"]
    for args in (["runs", "logs", run_id], ["runs", "list"], ["analyze", str(FIXTURES / "flask-factory")],
                 ["completions", "bash"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first line
        proc = subprocess.run([str(BINARY), *args, "--data-dir", str(user.data)], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=user.env, timeout=120, stdin=subprocess.DEVNULL)
        os.close(write)
        assert proc.returncode == 0, (args, proc.returncode, proc.stderr)
        assert "panicked" not in proc.stderr and proc.stderr == "", (args, proc.stderr)


# ---- 7 and 9: errors a user can act on ------------------------------------------------------------------


def test_7_not_logged_in_is_not_an_outage_and_a_dead_server_is_named(user):
    """Defect 7: `whoami` without a login said the server was not serving."""
    for command in (["whoami"], ["usage"], ["limits"]):
        out = user.run(*command, data_dir=False)
        assert out.returncode == 4, (command, out.returncode, out.stderr)
        assert "not logged in" in out.stderr and "reporunner login" in out.stderr, out.stderr
        assert "not serving" not in out.stderr and "tcp connect" not in out.stderr, out.stderr
    port = free_port()
    down = user.run("limits", "--all", "--server", f"127.0.0.1:{port}", data_dir=False)
    assert down.returncode == 5, down
    assert f"127.0.0.1:{port}" in down.stderr and "cannot be reached" in down.stderr, down.stderr
    help_text = user.run("--help", data_dir=False).stdout
    for code in ("3 ", "4 ", "5 ", "6 ", "130 "):
        assert f"\n  {code}" in help_text, help_text


def test_9_an_unreachable_git_host_is_named_with_its_own_exit_code(user):
    """Defect 9: an unreachable git host read "the source agent is unavailable"."""
    out = user.run("run", "https://git.reporunner-test.invalid/o/r.git", "--goal", "analyze")
    assert out.returncode == 6, (out.returncode, out.stdout, out.stderr)
    assert "the git host git.reporunner-test.invalid cannot be reached" in out.stderr, out.stderr
    assert "agent is unavailable" not in out.stdout + out.stderr


# ---- 10: conventions ------------------------------------------------------------------------------------


def test_10_completions_for_each_shell(user):
    bash = user.run("completions", "bash", data_dir=False)
    assert bash.returncode == 0 and "_reporunner" in bash.stdout
    script = user.home / "completion.bash"
    script.write_text(bash.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for shell in ("zsh", "fish"):
        out = user.run("completions", shell, data_dir=False)
        assert out.returncode == 0 and "reporunner" in out.stdout, shell
    assert user.run("completions", "tcsh", data_dir=False).returncode == 2


def test_10_every_subcommand_has_examples_and_bad_flags_are_refused(user):
    for command in ("run", "runs", "analyze", "index", "search", "serve", "login", "completions"):
        out = user.run(command, "--help", data_dir=False)
        assert out.returncode == 0 and "Examples:" in out.stdout, command
    bogus = user.run("run", str(FIXTURES / "run-flask"), "--skip-agents", "bogus")
    assert bogus.returncode == 2 and "possible values" in bogus.stderr, bogus.stderr


def test_10_quiet_verbose_colour_and_the_config_file(user):
    # The config file in $XDG_CONFIG_HOME is read: its data dir is used.
    configured = user.home / "from-config"
    config = user.home / "config" / "reporunner" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'data_dir = "{configured}"\n')
    out = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "-q", data_dir=False)
    assert out.returncode == 0, out.stderr
    assert (configured / "runs.db").exists() or any(configured.iterdir()), "the config's data dir was used"
    assert "✓" not in out.stdout and "…" not in out.stdout, f"-q prints results only:\n{out.stdout}"
    assert "succeeded" in out.stdout, out.stdout
    loud = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "-v")
    assert loud.returncode == 0 and "✓ analyze" in loud.stdout, loud.stdout
    assert user.run("run", ".", "-q", "-v", data_dir=False).returncode == 2
    never = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "--color", "always")
    assert "\x1b[32m✓" in never.stdout, never.stdout
    plain = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "--color", "always",
                     env={"NO_COLOR": "1"})
    assert "\x1b[" in plain.stdout, "--color always wins over NO_COLOR"
    auto = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", env={"NO_COLOR": "1"})
    assert "\x1b[" not in auto.stdout


def test_10_run_takes_archives_and_run_id_prefixes(user, tmp_path):
    archive = tmp_path / "flask-factory.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(FIXTURES / "flask-factory", arcname="flask-factory")
    out = user.run("run", str(archive), "--goal", "analyze", "-o", "json")
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout.strip().splitlines()[-1])
    assert run["state"] == "RUN_STATE_SUCCEEDED", run
    assert any(c["name"] for c in run["plan"]["components"]), run["plan"]
    shown = user.run("runs", "show", run["id"][:5])
    assert shown.returncode == 0 and run["id"] in shown.stdout, shown.stderr
    missing = user.run("runs", "show", "zzzz")
    assert missing.returncode == 1 and "no run of yours" in missing.stderr, missing.stderr


def test_10_search_looks_where_index_indexed_last(user):
    """`search` after `index` looked in the newest run, not the workspace just indexed."""
    first = user.run("run", str(FIXTURES / "flask-factory"), "--goal", "analyze", "-o", "json")
    first_id = json.loads(first.stdout.strip().splitlines()[-1])["id"]
    newer = user.run("run", str(FIXTURES / "run-flask"), "--goal", "analyze", "--index")
    assert newer.returncode == 0, newer.stderr
    indexed = user.run("index", first_id[:8])
    assert indexed.returncode == 0, indexed.stderr
    found = user.run("search", "create_app")
    assert found.returncode == 0, found.stderr
    assert "app/__init__.py" in found.stdout, found.stdout
