"""HTTP/JSON only, from outside the process: the real `reporunner serve` on a free port, called with
nothing but Python's standard library (and schemathesis against its OpenAPI document).

- the OpenAPI 3.1 document at /openapi.json passes openapi-spec-validator;
- schemathesis, with a bounded number of examples per operation, finds no 5xx and no answer that
  breaks the document;
- a whole run over HTTP: log in, create, watch it as server-sent events until the app is up, read
  its logs, open the app, stop it.
"""

import base64
import json
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from serve import ADMIN_PASSWORD, post, serve_app, zip_tree

USER_PASSWORD = "correct-horse-battery-staple-41"
AUTH = "reporunner.auth.v1.AuthService"
ORCHESTRATOR = "reporunner.orchestrator.v1.OrchestratorService"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_app(tmp_path_factory) as running:
        yield running


def call(server, method, body, token=None, timeout=30):
    """POSTs `body` as JSON to /<method>: (HTTP status, headers, JSON body)."""
    return post(server["base"], method, body, token, timeout)


def events(server, method, body, token, timeout=300):
    """Yields (event name, data) of a server stream, read as server-sent events as they come."""
    request = urllib.request.Request(
        f"{server['base']}/{method}", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", "accept": "text/event-stream",
                 "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        assert reply.headers["content-type"] == "text/event-stream"
        name, data = "message", []
        for raw in reply:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
            elif line == "" and data:
                yield name, json.loads("".join(data))
                name, data = "message", []


def login(server, username, password):
    status, _, body = call(server, f"{AUTH}/Login", {"username": username, "password": password})
    assert status == 200, body
    return body["tokens"]["accessToken"]


def test_the_openapi_document_is_valid_openapi_3_1(server):
    from openapi_spec_validator import validate

    with urllib.request.urlopen(f"{server['base']}/openapi.json", timeout=10) as reply:
        assert reply.headers["content-type"] == "application/json"
        document = json.loads(reply.read())
    validate(document)
    assert document["openapi"] == "3.1.0"
    paths = set(document["paths"])
    assert f"/{ORCHESTRATOR}/CreateRun" in paths and f"/{AUTH}/Login" in paths
    assert "/reporunner.auth.v1.AdminService/BlockUser" in paths
    assert f"/{AUTH}/Authorize" not in paths, "only services call Authorize"
    assert not any(p.startswith("/reporunner.agents.") for p in paths), "agents are not public"


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(server, tmp_path):
    # A Free user: generated CreateRun calls can reach nothing on the host.
    status, _, body = call(server, f"{AUTH}/Register", {"username": "fuzzer", "password": USER_PASSWORD})
    assert status == 200, body
    token = login(server, "fuzzer", USER_PASSWORD)
    schemathesis = shutil.which("schemathesis") or str(pathlib.Path(sys.executable).parent / "schemathesis")
    out = subprocess.run(
        [schemathesis, "run", f"{server['base']}/openapi.json",
         "--header", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance,"
                     "response_headers_conformance",
         "--phases", "coverage,fuzzing", "--max-examples", "25", "--workers", "2",
         "--request-timeout", "30", "--no-color", "--generation-database", "none",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert "24 passed" in out.stdout or " passed" in out.stdout, out.stdout[-4000:]


def test_a_whole_run_over_http_json_only(server):
    token = login(server, "admin", ADMIN_PASSWORD)

    # No token: the gRPC code as an HTTP status, with the service's message.
    status, _, body = call(server, f"{ORCHESTRATOR}/ListRuns", {})
    assert status == 401 and body["code"] == "unauthenticated", body

    status, _, body = call(server, f"{ORCHESTRATOR}/CreateRun",
                           {"source": {"localPath": str(server["app"])}, "goal": "RUN_GOAL_START"}, token)
    assert status == 200, body
    run_id = body["run"]["id"]

    # Watch, streamed: the steps, the state reaching RUNNING and the app's URL, as they happen.
    states, steps, url = [], [], None
    for name, data in events(server, f"{ORCHESTRATOR}/WatchRun", {"runId": run_id, "withoutLogs": True}, token):
        assert name == "message", (name, data)
        event = data["event"]
        if "state" in event:
            states.append(event["state"])
        if "step" in event:
            steps.append((event["step"]["step"], event["step"]["status"]))
        if "url" in event:
            url = event["url"]
        if event.get("state") in ("RUN_STATE_RUNNING", "RUN_STATE_FAILED", "RUN_STATE_DEGRADED"):
            break
    assert states[-1] == "RUN_STATE_RUNNING", (states, steps, server["log"].read_text()[-3000:])
    assert "RUN_STATE_STARTING" in states, states
    assert any(status == "STEP_STATUS_FINISHED" for _, status in steps), steps
    deadline = time.time() + 30
    while url is None and time.time() < deadline:
        status, _, body = call(server, f"{ORCHESTRATOR}/GetRun", {"runId": run_id}, token)
        url = (body["run"].get("components") or [{}])[0].get("url")
        time.sleep(0.2)
    assert url, body

    # The app answers at its URL.
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read().decode().startswith("licence checked: ")

    # Its logs, streamed: the app's own line is there.
    streamed = list(events(server, f"{ORCHESTRATOR}/GetRunLogs", {"runId": run_id}, token, timeout=30))
    assert streamed[-1] == ("end", {}), streamed[-3:]
    lines = [data["line"] for name, data in streamed[:-1]]
    assert any("listening on" in line.get("text", "") for line in lines), lines[-20:]
    sources = {line.get("source") for line in lines}
    assert len(sources) >= 1, sources

    status, _, body = call(server, f"{ORCHESTRATOR}/StopRun", {"runId": run_id}, token)
    assert status == 200, body
    status, _, body = call(server, f"{ORCHESTRATOR}/GetRun", {"runId": run_id}, token)
    assert body["run"]["state"] == "RUN_STATE_STOPPED", body
    # Stopped means gone: the app no longer answers.
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5).read()


def test_a_run_from_an_uploaded_archive(server):
    token = login(server, "admin", ADMIN_PASSWORD)
    content = base64.b64encode(zip_tree(server["app"])).decode()

    for bad, named in (({"content": content}, "format"), ({"format": "ARCHIVE_FORMAT_ZIP"}, "empty")):
        status, _, body = call(server, f"{ORCHESTRATOR}/CreateRun",
                               {"source": {"archive": bad}, "goal": "RUN_GOAL_ANALYZE"}, token)
        assert status == 400 and named in body["message"], body

    status, _, body = call(server, f"{ORCHESTRATOR}/CreateRun", {
        "source": {"archive": {"content": content, "format": "ARCHIVE_FORMAT_ZIP", "fileName": "web.zip"}},
        "goal": "RUN_GOAL_ANALYZE"}, token)
    assert status == 200, body
    run_id = body["run"]["id"]
    # The run keeps the archive's name and format, never its bytes.
    assert body["run"]["source"]["archive"] == {"format": "ARCHIVE_FORMAT_ZIP", "fileName": "web.zip"}, body
    deadline = time.time() + 120
    while time.time() < deadline:
        status, _, body = call(server, f"{ORCHESTRATOR}/GetRun", {"runId": run_id}, token)
        if body["run"]["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"):
            break
        time.sleep(0.3)
    assert body["run"]["state"] == "RUN_STATE_SUCCEEDED", body
    assert body["run"]["workspace"]["fileCount"] == "4", body["run"]["workspace"]  # uint64: a string
    assert body["run"]["workspace"]["origin"] == "upload:web.zip", body["run"]["workspace"]
    assert [c["name"] for c in body["run"]["plan"]["components"]] == ["plugin-node-app"], body["run"]["plan"]


def test_an_uploaded_archive_that_escapes_its_directory_is_refused_and_writes_nothing_outside(server, tmp_path):
    # The upload is extracted by the source agent with the same checks as any archive: a Free user's zip
    # with a `../` entry ends the run FAILED naming the entry, and nothing lands outside the workspace.
    status, _, body = call(server, f"{AUTH}/Register", {"username": "uploader", "password": USER_PASSWORD})
    assert status == 200, body
    token = login(server, "uploader", USER_PASSWORD)
    escape = "../../../../../../../../../../tmp/reporunner-escape-probe.txt"
    content = base64.b64encode(zip_tree(server["app"], [(escape, b"escaped")])).decode()
    status, _, body = call(server, f"{ORCHESTRATOR}/CreateRun", {
        "source": {"archive": {"content": content, "format": "ARCHIVE_FORMAT_ZIP", "fileName": "evil.zip"}},
        "goal": "RUN_GOAL_ANALYZE"}, token)
    assert status == 200, body
    run_id = body["run"]["id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        status, _, body = call(server, f"{ORCHESTRATOR}/GetRun", {"runId": run_id}, token)
        if body["run"]["state"] in ("RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"):
            break
        time.sleep(0.3)
    assert body["run"]["state"] == "RUN_STATE_FAILED", body
    assert "reporunner-escape-probe.txt" in body["run"]["error"], body["run"]["error"]
    assert not pathlib.Path("/tmp/reporunner-escape-probe.txt").exists()
    # Without a token the same call is refused before anything is read.
    status, _, body = call(server, f"{ORCHESTRATOR}/CreateRun", {
        "source": {"archive": {"content": content, "format": "ARCHIVE_FORMAT_ZIP"}}, "goal": "RUN_GOAL_ANALYZE"})
    assert status == 401 and body["code"] == "unauthenticated", body
