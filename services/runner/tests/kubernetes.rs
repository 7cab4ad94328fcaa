//! The Kubernetes backend against an in-process Kubernetes API server: kube's
//! real client sends real HTTP requests (paths, verbs, JSON bodies) to a
//! tower service that keeps pods and NetworkPolicies in memory and plays a
//! scripted pod life (pending, running, terminated; an image that cannot be
//! pulled; a pod that runs until deleted). What no fake can show (a real
//! scheduler, kubelet, CNI) is on the first-run checklist in k8s/README.md.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use http_body_util::BodyExt;
use kube::client::Body;
use reporunner_error::ServiceError;
use reporunner_proto::{
    agents::runner::v1::{ProcessState, RestartPolicy},
    common::v1::{Command as PlanCommand, Component, ComponentKind},
};
use reporunner_runner::{
    BackendKind, LocalRunner, LogsSpec, Runner, RunnerConfig, StartSpec, backend::KubernetesBackend,
};
use serde_json::{Value, json};

const NS: &str = "runs";
const POD_IP: &str = "10.1.2.3";

#[derive(Clone, Copy)]
enum Script {
    /// Pending once, running twice, then the container exits with this code.
    RunThenExit(i32),
    /// The image cannot be pulled.
    PullFails,
    /// Running until deleted; gone (404) after.
    RunUntilDeleted,
}

#[derive(Default)]
struct State {
    /// `VERB path` of every request, in order.
    requests: Vec<String>,
    pods: BTreeMap<String, Value>,
    policies: BTreeMap<String, Value>,
    reads: BTreeMap<String, usize>,
    /// Pod deletions with their grace period.
    deleted_pods: Vec<(String, Option<u64>)>,
    deleted_policies: Vec<String>,
    /// Deleted pods vanish at once (instead of staying readable).
    orphans_deleted_outright: bool,
}

#[derive(Clone)]
struct FakeApi {
    script: Script,
    state: Arc<Mutex<State>>,
}

fn respond(code: u16, body: &Value) -> http::Response<Body> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found(what: &str) -> http::Response<Body> {
    respond(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

impl FakeApi {
    fn new(script: Script) -> Self {
        Self {
            script,
            state: Arc::default(),
        }
    }

    fn pod_status(&self, reads: usize, deleted: bool) -> Option<Value> {
        let waiting = |reason: &str| {
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": "see events"}}}]})
        };
        let running = json!({"phase": "Running", "podIP": POD_IP, "containerStatuses": [{"name": "app",
            "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
        match self.script {
            Script::RunThenExit(code) => Some(match reads {
                0 => waiting("ContainerCreating"),
                1 | 2 => running,
                _ => json!({"phase": "Failed", "podIP": POD_IP, "containerStatuses": [{"name": "app",
                    "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]}),
            }),
            Script::PullFails => Some(waiting("ImagePullBackOff")),
            Script::RunUntilDeleted => (!deleted).then_some(running),
        }
    }

    async fn handle(&self, request: http::Request<Body>) -> http::Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let request_query = request.uri().query().map(str::to_owned);
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let mut state = self.state.lock().unwrap();
        state.requests.push(format!("{method} {path}"));
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let policies = format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies");
        let rest = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_owned)
        };
        let query = request_query.unwrap_or_default();
        match (method.as_str(), rest(&pods), rest(&policies)) {
            ("GET", _, _) if path == pods || path == policies => {
                assert!(
                    query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dreporunner-runner"),
                    "{query}"
                );
                let items: Vec<Value> = if path == pods {
                    state.pods.values().cloned().collect()
                } else {
                    state.policies.values().cloned().collect()
                };
                respond(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}),
                )
            }
            ("POST", _, _) if path == policies => {
                let mut policy = body;
                policy["metadata"]["uid"] = json!("policy-uid");
                let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
                state.policies.insert(name, policy.clone());
                respond(201, &policy)
            }
            ("POST", _, _) if path == pods => {
                let mut pod = body;
                let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
                pod["metadata"]["uid"] = json!(format!("uid-{name}"));
                state.pods.insert(name, pod.clone());
                respond(201, &pod)
            }
            ("PATCH", _, Some(name)) => {
                let Some(policy) = state.policies.get_mut(&name) else {
                    return not_found(&name);
                };
                policy["metadata"]["ownerReferences"] = body["metadata"]["ownerReferences"].clone();
                respond(200, policy)
            }
            ("DELETE", _, Some(name)) => {
                state.deleted_policies.push(name.clone());
                match state.policies.remove(&name) {
                    Some(policy) => respond(200, &policy),
                    None => not_found(&name),
                }
            }
            ("DELETE", Some(name), _) => {
                let grace = body["gracePeriodSeconds"].as_u64();
                state.deleted_pods.push((name.clone(), grace));
                if state.orphans_deleted_outright {
                    return match state.pods.remove(&name) {
                        Some(pod) => respond(200, &pod),
                        None => not_found(&name),
                    };
                }
                match state.pods.get(&name) {
                    Some(pod) => respond(200, pod),
                    None => not_found(&name),
                }
            }
            ("GET", Some(name), _) if name.ends_with("/log") => {
                let name = name.trim_end_matches("/log");
                if !state.pods.contains_key(name) {
                    return not_found(name);
                }
                http::Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(Body::from(b"hello from the pod\nsecond line\n".to_vec()))
                    .unwrap()
            }
            ("GET", Some(name), _) => {
                let deleted = state.deleted_pods.iter().any(|(n, _)| *n == name);
                let reads = *state
                    .reads
                    .entry(name.clone())
                    .and_modify(|r| *r += 1)
                    .or_insert(0);
                let Some(mut pod) = state.pods.get(&name).cloned() else {
                    return not_found(&name);
                };
                match self.pod_status(reads, deleted) {
                    Some(status) => {
                        pod["status"] = status;
                        respond(200, &pod)
                    }
                    None => not_found(&name),
                }
            }
            _ => respond(
                405,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("unexpected {method} {path}"), "code": 405}),
            ),
        }
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(request).await) }
        });
        kube::Client::new(service, NS)
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    workspace: PathBuf,
    runner: LocalRunner<KubernetesBackend>,
}

fn setup(api: &FakeApi) -> Setup {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let workspace = root.join("workspaces/alice/ws1");
    std::fs::create_dir_all(&workspace).unwrap();
    let mut config = RunnerConfig {
        backend: BackendKind::Kubernetes,
        ..RunnerConfig::default()
    }
    .resolve(&root);
    config.kubernetes.namespace = NS.into();
    config.kubernetes.volume_root = root.clone();
    config.kubernetes.poll_interval = Duration::from_millis(10);
    config.kubernetes.start_timeout = Duration::from_secs(5);
    config.kubernetes.api_timeout = Duration::from_secs(5);
    let config = Arc::new(config);
    let backend = KubernetesBackend::with_client(Arc::clone(&config), api.client(), NS.into());
    let runner = LocalRunner::with_backend(config, backend).unwrap();
    Setup {
        _tmp: tmp,
        workspace,
        runner,
    }
}

fn start_spec(setup: &Setup) -> StartSpec {
    StartSpec {
        run_id: "run-7".into(),
        workspace_path: setup.workspace.clone(),
        component: Component {
            name: "web".into(),
            path: ".".into(),
            kind: ComponentKind::Web.into(),
            start: Some(PlanCommand {
                run: "python -m http.server".into(),
                working_dir: String::new(),
                watch_mode: false,
            }),
            port_binding: "flag:--port".into(),
            ..Component::default()
        },
        env: BTreeMap::new(),
        limits: None,
        restart_policy: RestartPolicy::Never,
        max_restarts: 0,
        bind_host: String::new(),
        owner_id: String::new(),
    }
}

async fn wait_for_end(runner: &LocalRunner<KubernetesBackend>, process_id: &str) -> ProcessState {
    for _ in 0..500 {
        let status = runner.status(process_id.to_owned()).await.unwrap();
        if matches!(
            status.state(),
            ProcessState::Exited | ProcessState::Failed | ProcessState::Stopped
        ) {
            return status.state();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the process did not end");
}

#[tokio::test]
async fn a_component_runs_as_a_pod_with_its_policy_logs_and_exit_code() {
    let api = FakeApi::new(Script::RunThenExit(3));
    let setup = setup(&api);
    let status = setup.runner.start(start_spec(&setup)).await.unwrap();
    assert_eq!(status.pid, 0, "no host process");
    assert!(status.port > 0);
    assert_eq!(
        status.url,
        format!("http://{POD_IP}:{}", status.port),
        "reached at the pod's IP"
    );
    assert!(status.sandboxed);
    assert!(
        status.sandbox_note.contains("namespace runs"),
        "{}",
        status.sandbox_note
    );

    assert_eq!(
        wait_for_end(&setup.runner, &status.process_id).await,
        ProcessState::Failed
    );
    let ended = setup.runner.status(status.process_id.clone()).await.unwrap();
    assert_eq!(ended.exit_code, 3, "the container's exit code");

    let lines: Vec<String> = setup
        .runner
        .logs(LogsSpec {
            process_id: status.process_id.clone(),
            follow: true,
            after_sequence: 0,
        })
        .await
        .unwrap()
        .map(|line| line.text)
        .collect()
        .await;
    assert!(lines.iter().any(|l| l == "hello from the pod"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "second line"), "{lines:?}");

    let state = api.state.lock().unwrap();
    let order: Vec<&str> = state
        .requests
        .iter()
        .map(String::as_str)
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(
        order,
        [
            "POST /apis/networking.k8s.io/v1/namespaces/runs/networkpolicies",
            "POST /api/v1/namespaces/runs/pods"
        ],
        "the policy exists before the pod"
    );
    let (pod_name, _) = state.deleted_pods.last().unwrap().clone();
    assert!(pod_name.starts_with("rr-proc-"), "{pod_name}");
    assert_eq!(
        state.deleted_policies,
        std::slice::from_ref(&pod_name),
        "cleanup deletes the policy too"
    );
    assert!(state.policies.is_empty());
    // The pod the backend sent: the command as $0, the port flag appended.
    let pod = &state.pods[&pod_name];
    let command = pod["spec"]["containers"][0]["command"].as_array().unwrap();
    assert_eq!(
        command[3],
        format!("python -m http.server --port {}", status.port)
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["subPath"] == "workspaces/alice/ws1" && m["name"] == "workspaces")
    );
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "HOST" && e["value"] == "0.0.0.0"),
        "pods listen on every interface"
    );
}

#[tokio::test]
async fn the_policy_is_owned_by_its_pod() {
    let api = FakeApi::new(Script::RunUntilDeleted);
    let setup = setup(&api);
    let status = setup.runner.start(start_spec(&setup)).await.unwrap();
    {
        let state = api.state.lock().unwrap();
        let (name, policy) = state.policies.iter().next().unwrap();
        let owner = &policy["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Pod");
        assert_eq!(owner["name"], name.as_str());
        assert_eq!(owner["uid"], format!("uid-{name}"));
        let selector = &policy["spec"]["podSelector"]["matchLabels"];
        assert_eq!(selector["reporunner.dev/process-id"], status.process_id.as_str());
    }
    setup.runner.stop(status.process_id, 1).await.unwrap();
}

#[tokio::test]
async fn stop_deletes_the_pod_with_a_grace_period() {
    let api = FakeApi::new(Script::RunUntilDeleted);
    let setup = setup(&api);
    let status = setup.runner.start(start_spec(&setup)).await.unwrap();
    assert_eq!(status.state(), ProcessState::Running);
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        setup.runner.stop(status.process_id.clone(), 5),
    )
    .await
    .expect("stop returns once the pod is gone")
    .unwrap();
    assert_eq!(stopped.state(), ProcessState::Stopped);
    let state = api.state.lock().unwrap();
    let (_, grace) = &state.deleted_pods[0];
    assert_eq!(
        *grace,
        Some(120),
        "SIGTERM first: deletion with the configured grace"
    );
    assert_eq!(state.deleted_policies.len(), 1);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_start_and_leaves_nothing() {
    let api = FakeApi::new(Script::PullFails);
    let setup = setup(&api);
    let err = setup.runner.start(start_spec(&setup)).await.unwrap_err();
    let status = err.to_status();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("ImagePullBackOff"),
        "{}",
        status.message()
    );
    let state = api.state.lock().unwrap();
    assert_eq!(state.deleted_pods.len(), 1);
    assert_eq!(state.deleted_pods[0].1, Some(0));
    assert_eq!(state.deleted_policies.len(), 1);
    assert!(state.policies.is_empty());
}

#[tokio::test]
async fn a_workspace_off_the_shared_volume_is_refused_before_any_call() {
    let api = FakeApi::new(Script::RunThenExit(0));
    let setup = setup(&api);
    let elsewhere = tempfile::tempdir().unwrap();
    let mut spec = start_spec(&setup);
    spec.workspace_path = elsewhere.path().to_path_buf();
    let err = setup.runner.start(spec).await.unwrap_err();
    assert_eq!(err.to_status().code(), tonic::Code::FailedPrecondition);
    assert!(err.to_string().contains("volume_root"), "{err}");
    assert!(api.state.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn pods_a_previous_runner_left_are_deleted_before_the_first_start() {
    let api = FakeApi::new(Script::RunUntilDeleted);
    {
        let mut state = api.state.lock().unwrap();
        state.orphans_deleted_outright = true;
        for name in ["rr-proc-old-1", "rr-proc-old-2"] {
            state.pods.insert(
                name.into(),
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "reporunner-runner"}}}),
            );
            state.policies.insert(
                name.into(),
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name}, "spec": {"podSelector": {}}}),
            );
        }
    }
    let setup = setup(&api);
    let first = setup.runner.start(start_spec(&setup)).await.unwrap();
    {
        let state = api.state.lock().unwrap();
        let reaped: Vec<_> = state.deleted_pods.iter().map(|(n, g)| (n.as_str(), *g)).collect();
        assert_eq!(reaped, [("rr-proc-old-1", Some(0)), ("rr-proc-old-2", Some(0))]);
        assert_eq!(state.deleted_policies, ["rr-proc-old-1", "rr-proc-old-2"]);
        assert_eq!(state.pods.len(), 1, "only the new pod is left");
        let lists = state
            .requests
            .iter()
            .filter(|r| r.starts_with("GET") && !r.contains("/pods/"))
            .count();
        assert_eq!(
            lists, 2,
            "pods and policies are listed once: {:?}",
            state.requests
        );
    }
    // The second start does not reap again (the first one's pod survives).
    let mut second = start_spec(&setup);
    second.component.name = "worker".into();
    setup.runner.start(second).await.unwrap();
    let state = api.state.lock().unwrap();
    assert!(
        state
            .pods
            .values()
            .any(|p| p["metadata"]["labels"]["reporunner.dev/process-id"] == first.process_id.as_str())
    );
    assert_eq!(state.deleted_pods.len(), 2);
}
