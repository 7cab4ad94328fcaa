"""The real `reporunner serve` on a free loopback port, for the suites that drive it over HTTP."""

import contextlib
import io
import json
import os
import shutil
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
# Not REPORUNNER_BIN: every REPORUNNER_* variable is configuration to the server.
BINARY = pathlib.Path(os.environ.get("REPO_RUNNER_BINARY") or TARGET / "debug" / "reporunner")
ADMIN_PASSWORD = "plover-quince-47-ravine"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(tmp_path_factory, allowed_roots=(), config=None, metrics=False):
    """Yields {"base": "http://127.0.0.1:<port>", "addr": "127.0.0.1:<port>", "data": dir, "log": path} (and
    "metrics", the /metrics URL, with `metrics`) of a server whose admin is `admin` (ADMIN_PASSWORD), whose
    runs may read local paths under `allowed_roots`, with the settings file `config` if given; stops it
    after, and fails unless it stopped cleanly within 15 s of SIGTERM."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("data")
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    # A file, not a pipe: a pipe nobody reads fills up and stalls the server.
    log_file = open(log_path, "w+")
    env = dict(os.environ)
    # Hermetic: no registry probes from the env-detector.
    env["REPORUNNER_ENV_DETECTOR__REGISTRIES"] = "[]"
    env["REPORUNNER_ADMIN__USERNAME"] = "admin"
    env["REPORUNNER_ADMIN__PASSWORD"] = ADMIN_PASSWORD
    if allowed_roots:
        env["REPORUNNER_SOURCE__ALLOWED_LOCAL_ROOTS"] = json.dumps([str(r) for r in allowed_roots])
    args = [str(BINARY)]
    if config:
        args += ["--config", str(config)]
    args += ["serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    running = {"base": f"http://127.0.0.1:{port}", "addr": f"127.0.0.1:{port}", "data": data_dir, "log": log_path}
    if metrics:
        metrics_port = free_port()
        args += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
        running["metrics"] = f"http://127.0.0.1:{metrics_port}/metrics"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log_file, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{running['base']}/openapi.json", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                log_file.seek(0)
                pytest.fail(f"reporunner serve exited: {log_file.read()}")
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("reporunner serve did not answer HTTP within 30 s")
    try:
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("reporunner serve did not stop within 15 s of SIGTERM")
        log_file.close()
    assert proc.returncode == 0, log_path.read_text()[-5000:]


def post(base, method, body, token=None, timeout=30):
    """POSTs `body` as JSON to <base>/<method>: (HTTP status, headers, JSON body)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}/{method}", data=json.dumps(body).encode(), headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


@contextlib.contextmanager
def serve_app(tmp_path_factory):
    """serve() with one app allowed: a copy of the fixture plugin-node-app (a Node web app with no
    dependencies) at "app"."""
    repos = tmp_path_factory.mktemp("repos")
    app = repos / "web"
    shutil.copytree(ROOT / "tests" / "fixtures" / "plugin-node-app", app)
    with serve(tmp_path_factory, [repos]) as running:
        yield {**running, "app": app}


def zip_tree(root, extra=()):
    """The files under `root` as zip bytes, relative to it, then the (name, bytes) pairs of `extra`."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root))
        for name, data in extra:
            archive.writestr(name, data)
    return packed.getvalue()
