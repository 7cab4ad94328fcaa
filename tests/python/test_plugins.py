"""Plugins from outside: a Python plugin, generated from proto/, registered in
the config of a real `reporunner serve`, called at the hooks of real runs.

- the plugin is called at each hook it declares, once per hook per run;
- its patch is applied (the running app sees the env var it set);
- its failure verdict ends the run with the plugin's reason;
- a plugin that hangs becomes a notice after its deadline, and the run goes on;
- a tier whose policy denies plugins never has them called.
"""

import importlib
import pathlib
import shutil
import time
import urllib.request

import pytest

from serve import ADMIN_PASSWORD, free_port, serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "plugin-node-app"
USER_PASSWORD = "saffron-delta-71-quarry"

# The default tier table, with plugins denied to Free.
TIERS = [
    ("free", 10, 1, ["text"], 2, 512, 1800, False),
    ("tester", 100, 2, ["text"], 3, 1024, 3600, True),
    ("advanced", 50, 2, ["text", "vector"], 3, 2048, 3600, True),
    ("premium", 200, 5, ["text", "vector", "hybrid"], 5, 5120, 14400, True),
    ("admin", 1000, 10, ["text", "vector", "hybrid"], 10, 20480, 86400, True),
]


def config_text(repos, licence_port, slow_port):
    lines = [
        "[source]",
        f'allowed_local_roots = ["{repos}"]',
        "",
        "[[orchestrator.plugins]]",
        'name = "licence"',
        f'endpoints = ["http://127.0.0.1:{licence_port}"]',
        'deadline = "10s"',
        "",
        "[[orchestrator.plugins]]",
        'name = "slow"',
        f'endpoints = ["http://127.0.0.1:{slow_port}"]',
        'deadline = "1s"',
    ]
    for tier, per_hour, runs, modes, heal, ws_mib, secs, plugins in TIERS:
        lines += [
            "",
            "[[auth.tiers]]",
            f'tier = "{tier}"',
            f"metered_requests_per_hour = {per_hour}",
            f"concurrent_runs = {runs}",
            "index_modes = [" + ", ".join(f'"{m}"' for m in modes) + "]",
            f"max_heal_attempts = {heal}",
            f"max_workspace_bytes = {ws_mib * 1024 * 1024}",
            f"max_run_seconds = {secs}",
            f"plugins = {'true' if plugins else 'false'}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, stubs):
    import example_plugin

    repos = tmp_path_factory.mktemp("repos")
    with_licence = repos / "with-licence"
    shutil.copytree(FIXTURE, with_licence)
    without = repos / "without-licence"
    shutil.copytree(FIXTURE, without)
    (without / "LICENSE").unlink()

    recorder = example_plugin.Recorder()
    licence_port, slow_port = free_port(), free_port()
    plugins = [
        example_plugin.serve(example_plugin.licence_servicer(recorder), licence_port),
        example_plugin.serve(example_plugin.slow_servicer(recorder, 30), slow_port),
    ]

    config = tmp_path_factory.mktemp("config") / "reporunner.toml"
    config.write_text(config_text(repos, licence_port, slow_port))
    try:
        with serve(tmp_path_factory, config=config) as running:
            yield {"addr": running["addr"], "recorder": recorder, "with": with_licence, "without": without,
                   "log": running["log"]}
    finally:
        for server in plugins:
            server.stop(0)


def modules():
    return (importlib.import_module("reporunner.orchestrator.v1.orchestrator_pb2"),
            importlib.import_module("reporunner.orchestrator.v1.orchestrator_pb2_grpc"),
            importlib.import_module("reporunner.auth.v1.auth_pb2"),
            importlib.import_module("reporunner.auth.v1.auth_pb2_grpc"))


def login(channel, username, password, register=False):
    _, _, auth_pb, auth_rpc = modules()
    auth = auth_rpc.AuthServiceStub(channel)
    if register:
        auth.Register(auth_pb.RegisterRequest(username=username, password=password), timeout=30)
    reply = auth.Login(auth_pb.LoginRequest(username=username, password=password), timeout=30)
    return [("authorization", f"Bearer {reply.tokens.access_token}")]


def run_until(client, bearer, run_id, states, seconds=240):
    pb, _, _, _ = modules()
    wanted = {pb.RunState.Value(s) for s in states}
    deadline = time.time() + seconds
    while time.time() < deadline:
        run = client.GetRun(pb.GetRunRequest(run_id=run_id), metadata=bearer, timeout=30).run
        if run.state in wanted:
            return run
        time.sleep(0.5)
    pytest.fail(f"run {run_id} not in {states} within {seconds} s: {pb.RunState.Name(run.state)} {run.error}")


def notices(client, bearer, run_id):
    pb, _, _, _ = modules()
    stream = client.WatchRun(pb.WatchRunRequest(run_id=run_id), metadata=bearer, timeout=10)
    found = []
    try:
        for reply in stream:
            if reply.event.HasField("notice"):
                found.append(reply.event.notice)
    except Exception:  # the watch of a live run ends at its timeout
        pass
    return found


def create(client, bearer, path, goal):
    pb, _, _, _ = modules()
    request = pb.CreateRunRequest(source=pb.RepoSource(local_path=str(path)), goal=pb.RunGoal.Value(goal))
    return client.CreateRun(request, metadata=bearer, timeout=30).run.id


def test_a_plugin_is_called_at_each_hook_and_its_patch_reaches_the_app(mesh):
    import grpc

    pb, rpc, _, _ = modules()
    with grpc.insecure_channel(mesh["addr"]) as channel:
        bearer = login(channel, "admin", ADMIN_PASSWORD)
        client = rpc.OrchestratorServiceStub(channel)
        run_id = create(client, bearer, mesh["with"], "RUN_GOAL_START_AND_TEST")
        run = run_until(client, bearer, run_id, ["RUN_STATE_RUNNING", "RUN_STATE_FAILED"])
        assert run.state == pb.RUN_STATE_RUNNING, run.error
        # RUNNING is entered again after the tests: wait for their hook.
        deadline = time.time() + 30
        while "HOOK_AFTER_TESTS" not in mesh["recorder"].hooks("licence", run_id) and time.time() < deadline:
            time.sleep(0.2)
        assert mesh["recorder"].hooks("licence", run_id) == [
            "HOOK_AFTER_ANALYZE", "HOOK_BEFORE_START", "HOOK_AFTER_START", "HOOK_AFTER_TESTS"]
        # Its patch: in the plan, and in the running app's env.
        env = {e.name: e.default_value for e in run.plan.components[0].env}
        assert env.get("LICENSE_CHECKED") == "yes", run.plan
        url = run.components[0].url
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.read().decode().strip() == "licence checked: yes"
        said = notices(client, bearer, run_id)
        assert "plugin licence: a LICENSE file is present" in said, said
        assert any(n.startswith("plugin licence patched the plan: ") for n in said), said
        # The hanging plugin: a notice after its 1 s deadline, and the run went on.
        assert mesh["recorder"].hooks("slow", run_id) == ["HOOK_AFTER_ANALYZE"]
        late = [n for n in said if n.startswith("plugin slow failed at after_analyze; the run goes on")]
        assert late and "did not answer in time" in late[0], said
        client.StopRun(pb.StopRunRequest(run_id=run_id), metadata=bearer, timeout=60)


def test_a_failure_verdict_ends_the_run_with_the_plugins_reason(mesh):
    import grpc

    pb, rpc, _, _ = modules()
    with grpc.insecure_channel(mesh["addr"]) as channel:
        bearer = login(channel, "admin", ADMIN_PASSWORD)
        client = rpc.OrchestratorServiceStub(channel)
        run_id = create(client, bearer, mesh["without"], "RUN_GOAL_START")
        run = run_until(client, bearer, run_id, ["RUN_STATE_FAILED", "RUN_STATE_RUNNING", "RUN_STATE_SUCCEEDED"])
        assert run.state == pb.RUN_STATE_FAILED
        assert run.error == "plugin licence failed the run at after_analyze: the repository has no LICENSE file"
        # Nothing was installed or started after the verdict.
        assert mesh["recorder"].hooks("licence", run_id) == ["HOOK_AFTER_ANALYZE"]
        assert not run.components


def test_a_tier_without_plugins_never_calls_them(mesh):
    import grpc

    pb, rpc, _, _ = modules()
    with grpc.insecure_channel(mesh["addr"]) as channel:
        bearer = login(channel, "freeuser", USER_PASSWORD, register=True)
        client = rpc.OrchestratorServiceStub(channel)
        described = mesh["recorder"].described
        # The repository the licence plugin fails for admins: not checked here.
        run_id = create(client, bearer, mesh["without"], "RUN_GOAL_ANALYZE")
        run = run_until(client, bearer, run_id, ["RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED"])
        assert run.state == pb.RUN_STATE_SUCCEEDED, run.error
        assert mesh["recorder"].hooks("licence", run_id) == []
        assert mesh["recorder"].hooks("slow", run_id) == []
        assert mesh["recorder"].described == described
        assert not any(n.startswith("plugin ") for n in notices(client, bearer, run_id))
