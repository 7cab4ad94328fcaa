"""An example Repo Runner plugin in Python, built on stubs generated from proto/.

`LicencePlugin` fails the runs of repositories without a LICENSE file and, for
the others, sets LICENSE_CHECKED=yes in every component's env. `SlowPlugin`
never answers in time. Both record every call they get, for the tests.

Run one beside an orchestrator and register it in the config:

    [[orchestrator.plugins]]
    name = "licence"
    endpoints = ["http://127.0.0.1:50070"]
    deadline = "5s"
"""

import importlib
import os
import threading
import time
from concurrent import futures

LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "COPYING")


def _modules():
    pb = importlib.import_module("reporunner.agents.plugin.v1.plugin_pb2")
    rpc = importlib.import_module("reporunner.agents.plugin.v1.plugin_pb2_grpc")
    plan = importlib.import_module("reporunner.common.v1.plan_pb2")
    return pb, rpc, plan


class Recorder:
    """Every (plugin, hook name, run id) a plugin was called with."""

    def __init__(self):
        self.calls = []
        self.described = 0
        self._lock = threading.Lock()

    def add(self, plugin, hook, run_id):
        with self._lock:
            self.calls.append((plugin, hook, run_id))

    def hooks(self, plugin, run_id):
        with self._lock:
            return [h for (p, h, r) in self.calls if p == plugin and r == run_id]


def licence_servicer(recorder):
    pb, rpc, plan = _modules()

    class LicencePlugin(rpc.PluginServiceServicer):
        def Describe(self, request, context):
            recorder.described += 1
            return pb.DescribeResponse(
                name="licence", version="1.0.0",
                hooks=[pb.HOOK_AFTER_ANALYZE, pb.HOOK_BEFORE_START, pb.HOOK_AFTER_START, pb.HOOK_AFTER_TESTS])

        def Execute(self, request, context):
            recorder.add("licence", pb.Hook.Name(request.hook), request.run_id)
            if request.hook != pb.HOOK_AFTER_ANALYZE:
                return pb.ExecuteResponse(notices=[f"seen {pb.Hook.Name(request.hook)}"])
            root = request.workspace_path
            if not any(os.path.isfile(os.path.join(root, name)) for name in LICENCE_FILES):
                return pb.ExecuteResponse(verdict=pb.Verdict(fail=True, reason="the repository has no LICENSE file"))
            patches = [
                plan.PlanPatch(component=c.name, set_env_var=plan.SetEnvVar(name="LICENSE_CHECKED", value="yes"))
                for c in request.plan.components
            ]
            return pb.ExecuteResponse(notices=["a LICENSE file is present"], patches=patches)

    return LicencePlugin()


def slow_servicer(recorder, seconds):
    pb, rpc, _ = _modules()

    class SlowPlugin(rpc.PluginServiceServicer):
        def Describe(self, request, context):
            return pb.DescribeResponse(name="slow", version="0.1.0", hooks=[pb.HOOK_AFTER_ANALYZE])

        def Execute(self, request, context):
            recorder.add("slow", pb.Hook.Name(request.hook), request.run_id)
            time.sleep(seconds)
            return pb.ExecuteResponse(notices=["too late to matter"])

    return SlowPlugin()


def serve(servicer, port):
    """Serves `servicer` on 127.0.0.1:`port`, with grpc.health.v1 (the client
    stack balances over endpoints whose health says SERVING)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    _, rpc, _ = _modules()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    rpc.add_PluginServiceServicer_to_server(servicer, server)
    checker = health.HealthServicer()
    checker.set("reporunner.agents.plugin.v1.PluginService", health_pb2.HealthCheckResponse.SERVING)
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server
