//! Kubernetes pods: each process of a run is one pod, with its own
//! NetworkPolicy, the tier's resource limits, and the shared workspace volume.
//!
//! What is built (pure functions, tested without a cluster):
//!
//! - [`pod`]: one container `app` running `sh -c` over the start command,
//!   in the image of `[runner.kubernetes]`, as a non-root user with a
//!   read-only root filesystem, no capabilities, no privilege escalation,
//!   the RuntimeDefault seccomp profile, no service-account token and no
//!   service links. `memory_bytes` and `cpu_millis` become the container's
//!   limits (and equal requests: Guaranteed QoS), `max_open_files` a
//!   `ulimit -n`, `max_runtime_seconds` the pod's `activeDeadlineSeconds`.
//!   The workspace, the run's install environments and the package-manager
//!   tools are `subPath`s of the ReadWriteMany claim, mounted at the same
//!   absolute paths the runner sees, so commands and `VIRTUAL_ENV` are
//!   unchanged; `TMPDIR`, `HOME` and `/tmp` are size-limited `emptyDir`s.
//! - [`network_policy`]: the pod's own policy. Ingress only from the mesh
//!   pods named in `ingress_from_components` (the health agent) on the app's
//!   port, and from pods of the same run; egress only to DNS, the same run,
//!   `egress_to_components` (the provisioner's databases) and
//!   `egress_cidrs`.
//!
//! At run time ([`KubernetesBackend`]): the policy is created first (so the
//! pod is never unprotected), then the pod; the policy is then owned by the
//! pod, so the API server deletes it with the pod even if the runner dies.
//! The backend waits (bounded by `start_timeout`) for the pod to
//! run, fails at once on image-pull and configuration errors, streams the
//! container's log (`Api::<Pod>::log_stream`, follow), and reads the pod's
//! phase and the container's exit code every `poll_interval`. Stop
//! deletes the pod with a grace period; kill deletes it with none.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Component as PathPart, Path},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
            PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
            SeccompProfile, SecurityContext, Volume, VolumeMount,
        },
        networking::v1::{
            IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
            NetworkPolicyPort, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
};
use tokio::{
    sync::{OnceCell, watch},
    task::JoinHandle,
};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::{BackendProcess, Isolation, LaunchSpec, OutputStream, ProcessBackend, Spawned, StopSignal};
use crate::{
    config::{KubernetesConfig, RunnerConfig},
    error::{Result, RunnerError},
};

/// The container's name in every run pod.
pub const CONTAINER: &str = "app";
/// Label keys on run pods and their policies.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_RUN: &str = "reporunner.dev/run-id";
pub const LABEL_COMPONENT: &str = "reporunner.dev/component";
pub const LABEL_PROCESS: &str = "reporunner.dev/process-id";
/// Label keys the mesh's own pods carry (see `k8s/base`).
pub const MESH_PART_OF: &str = "app.kubernetes.io/part-of";
pub const MESH_COMPONENT: &str = "app.kubernetes.io/component";
const RUN_POD_NAME: &str = "reporunner-run";
const MANAGED_BY: &str = "reporunner-runner";
const MESH: &str = "reporunner";
/// Pod waiting reasons that never get better by themselves.
const FATAL_WAITING: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// The script the container runs; the start command is `$0`. The shell is
/// PID 1 of the container, which ignores signals it does not trap: on
/// SIGTERM (pod deletion) it passes the signal to the command and waits.
const POD_SCRIPT: &str = r#"trap 'trap - TERM; kill -TERM 0 2>/dev/null; wait; exit 143' TERM
mkdir -p "$HOME" 2>/dev/null
sh -c "$0" &
wait $!"#;

/// A label value from arbitrary text: at most 63 characters of
/// `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
pub fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// A fresh pod name for one spawn of `process_id` (a restart is a new pod).
pub fn pod_name(process_id: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let base: String = label_value(process_id)
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    format!("rr-{}-{}", base.trim_end_matches('-'), &suffix[..8])
}

/// The labels of the pod (and policy) of `spec`.
pub fn labels(spec: &LaunchSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), RUN_POD_NAME.into()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
        (LABEL_RUN.into(), label_value(&spec.run_id)),
        (LABEL_COMPONENT.into(), label_value(&spec.component)),
        (LABEL_PROCESS.into(), label_value(&spec.process_id)),
    ])
}

/// The port the process listens on, from its `PORT`.
fn app_port(spec: &LaunchSpec) -> Option<i32> {
    spec.env
        .get("PORT")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .map(i32::from)
}

/// `path` relative to the claim's mount point, or `None` when it is not on
/// the claim.
fn claim_sub_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let safe = relative
        .components()
        .all(|part| matches!(part, PathPart::Normal(_)));
    let text = relative.to_str()?;
    (safe && !text.is_empty()).then(|| text.to_owned())
}

fn mount(name: &str, path: &Path, sub_path: Option<String>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.display().to_string(),
        sub_path,
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn quantity_limits(spec: &LaunchSpec) -> Option<BTreeMap<String, Quantity>> {
    let mut limits = BTreeMap::new();
    if spec.limits.memory_bytes > 0 {
        limits.insert("memory".into(), Quantity(spec.limits.memory_bytes.to_string()));
    }
    if spec.limits.cpu_millis > 0 {
        limits.insert("cpu".into(), Quantity(format!("{}m", spec.limits.cpu_millis)));
    }
    (!limits.is_empty()).then_some(limits)
}

/// The pod that runs `spec`, named `name`.
///
/// Fails when the workspace is not on the shared claim (`volume_root`):
/// a pod could not see it.
pub fn pod(spec: &LaunchSpec, config: &RunnerConfig, name: &str) -> Result<Pod> {
    let k = &config.kubernetes;
    let workspace_sub = claim_sub_path(&k.volume_root, &spec.workspace).ok_or_else(|| {
        RunnerError::InvalidConfig(format!(
            "the workspace {} is not on the shared volume mounted at kubernetes.volume_root {}; \
             pods cannot see it",
            spec.workspace.display(),
            k.volume_root.display()
        ))
    })?;
    let mut mounts = vec![mount("workspaces", &spec.workspace, Some(workspace_sub), false)];
    let run_envs = config.install_env_dir.join(&spec.run_id);
    if let Some(sub) = claim_sub_path(&k.volume_root, &run_envs) {
        mounts.push(mount("workspaces", &run_envs, Some(sub), false));
    }
    if let Some(sub) = claim_sub_path(&k.volume_root, &config.install_tools_dir) {
        mounts.push(mount("workspaces", &config.install_tools_dir, Some(sub), true));
    }
    mounts.push(mount("scratch", &spec.tmp_dir, Some("run".into()), false));
    mounts.push(mount("scratch", Path::new("/tmp"), Some("tmp".into()), false));

    let home = spec.tmp_dir.join("home");
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .filter(|(key, _)| key.as_str() != "HOME")
        .map(|(key, value)| EnvVar {
            name: key.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    env.push(EnvVar {
        name: "HOME".into(),
        value: Some(home.display().to_string()),
        value_from: None,
    });

    let mut script = String::new();
    if spec.limits.max_open_files > 0 {
        script.push_str(&format!("ulimit -n {} 2>/dev/null\n", spec.limits.max_open_files));
    }
    script.push_str(POD_SCRIPT);

    let limits = quantity_limits(spec);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(k.image.clone()),
        image_pull_policy: Some(k.image_pull_policy.clone()),
        command: Some(vec!["sh".into(), "-c".into(), script, spec.command.clone()]),
        working_dir: Some(spec.working_dir.display().to_string()),
        env: Some(env),
        ports: app_port(spec).map(|port| {
            vec![ContainerPort {
                name: Some("app".into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]
        }),
        resources: limits.clone().map(|limits| ResourceRequirements {
            requests: Some(limits.clone()),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let scratch_limit = Quantity(format!("{}Mi", k.scratch_size_mib));
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(spec)),
            annotations: Some(BTreeMap::from([
                ("reporunner.dev/run".into(), spec.run_id.clone()),
                ("reporunner.dev/component-name".into(), spec.component.clone()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: (spec.limits.max_runtime_seconds > 0)
                .then(|| i64::from(spec.limits.max_runtime_seconds)),
            termination_grace_period_seconds: Some(
                i64::try_from(config.max_grace.as_secs()).unwrap_or(i64::MAX),
            ),
            runtime_class_name: k.runtime_class.clone(),
            node_selector: (!k.node_selector.is_empty()).then(|| k.node_selector.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(k.run_as_user),
                run_as_group: Some(k.run_as_group),
                fs_group: Some(k.run_as_group),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            volumes: Some(vec![
                Volume {
                    name: "workspaces".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: k.volume_claim.clone(),
                        read_only: None,
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "scratch".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: None,
                        size_limit: Some(scratch_limit),
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        status: None,
    })
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        match_expressions: None,
    }
}

fn mesh_components(components: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(MESH_PART_OF.into(), MESH.into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: MESH_COMPONENT.into(),
                operator: "In".into(),
                values: Some(components.to_vec()),
            }]),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// The NetworkPolicy of the pod of `spec` (named `name` like the pod).
pub fn network_policy(spec: &LaunchSpec, k: &KubernetesConfig, name: &str) -> NetworkPolicy {
    let process = label_value(&spec.process_id);
    let run = label_value(&spec.run_id);
    let same_run = NetworkPolicyPeer {
        pod_selector: Some(match_labels(&[(LABEL_NAME, RUN_POD_NAME), (LABEL_RUN, &run)])),
        ..NetworkPolicyPeer::default()
    };
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(vec![same_run.clone()]),
        ports: None,
    }];
    if !k.ingress_from_components.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![mesh_components(&k.ingress_from_components)]),
            // Only the app's port; a component without one takes no calls
            // from the mesh.
            ports: Some(app_port(spec).map_or_else(Vec::new, |port| {
                vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]
            })),
        });
        if app_port(spec).is_none() {
            ingress.pop();
        }
    }
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        end_port: None,
    };
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector::default()),
                pod_selector: Some(match_labels(&[("k8s-app", "kube-dns")])),
                ip_block: None,
            }]),
            ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![same_run]),
            ports: None,
        },
    ];
    if !k.egress_to_components.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![mesh_components(&k.egress_to_components)]),
            ports: None,
        });
    }
    if !k.egress_cidrs.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(
                k.egress_cidrs
                    .iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: cidr.clone(),
                            except: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    })
                    .collect(),
            ),
            ports: None,
        });
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(spec)),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(&[
                (LABEL_MANAGED_BY, MANAGED_BY),
                (LABEL_PROCESS, &process),
            ])),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// Where a pod stands, read from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodOutcome {
    /// Not running yet; `fatal` when it never will by itself.
    Pending { reason: String, fatal: bool },
    /// Running, reachable at `ip` (when the status has one).
    Running { ip: Option<IpAddr> },
    /// The container ended with this exit code (128 + 9 when the pod was
    /// killed without one, e.g. past `activeDeadlineSeconds`).
    Ended { code: i32, reason: String },
}

/// Classifies a pod by its phase and its container's state.
pub fn pod_outcome(pod: &Pod) -> PodOutcome {
    let Some(status) = &pod.status else {
        return PodOutcome::Pending {
            reason: "no status yet".into(),
            fatal: false,
        };
    };
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let state = container.and_then(|c| c.state.as_ref());
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        return PodOutcome::Ended {
            code: terminated.exit_code,
            reason: terminated.reason.clone().unwrap_or_default(),
        };
    }
    let phase = status.phase.as_deref().unwrap_or("Pending");
    match phase {
        "Running" => PodOutcome::Running {
            ip: status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
        },
        "Succeeded" => PodOutcome::Ended {
            code: 0,
            reason: "Completed".into(),
        },
        "Failed" | "Unknown" => PodOutcome::Ended {
            code: 137,
            reason: status.reason.clone().unwrap_or_else(|| phase.to_owned()),
        },
        _ => {
            if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
                let reason = waiting.reason.clone().unwrap_or_default();
                let fatal = FATAL_WAITING.contains(&reason.as_str());
                let message = waiting.message.clone().unwrap_or_default();
                return PodOutcome::Pending {
                    reason: short(&format!("{reason}: {message}")),
                    fatal,
                };
            }
            let unschedulable = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            PodOutcome::Pending {
                reason: unschedulable
                    .map(|c| short(&c.message.clone().unwrap_or_else(|| "not scheduled".into())))
                    .unwrap_or_else(|| "pending".into()),
                fatal: false,
            }
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Runs processes as pods.
pub struct KubernetesBackend {
    config: Arc<RunnerConfig>,
    cluster: OnceCell<std::result::Result<(Client, String), String>>,
    /// Set once the pods a previous runner left were deleted.
    reaped: OnceCell<()>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("namespace", &self.config.kubernetes.namespace)
            .field("image", &self.config.kubernetes.image)
            .field("connected", &self.cluster.get().is_some_and(Result::is_ok))
            .finish()
    }
}

impl KubernetesBackend {
    /// A backend that connects to the cluster on its first spawn (in-cluster
    /// service account, else `KUBECONFIG`).
    pub fn new(config: Arc<RunnerConfig>) -> Self {
        Self {
            config,
            cluster: OnceCell::new(),
            reaped: OnceCell::new(),
        }
    }

    /// A backend over a client made elsewhere (another credential source, a
    /// proxy, or an in-process API server in tests), creating pods in
    /// `namespace`.
    pub fn with_client(config: Arc<RunnerConfig>, client: Client, namespace: String) -> Self {
        Self {
            config,
            cluster: OnceCell::new_with(Some(Ok((client, namespace)))),
            reaped: OnceCell::new(),
        }
    }

    fn api_timeout(&self) -> Duration {
        self.config.kubernetes.api_timeout
    }

    async fn cluster(&self) -> Result<(Client, String)> {
        let timeout = self.api_timeout();
        let namespace = self.config.kubernetes.namespace.clone();
        self.cluster
            .get_or_init(|| async move {
                match tokio::time::timeout(timeout, Client::try_default()).await {
                    Ok(Ok(client)) => {
                        let namespace = if namespace.is_empty() {
                            client.default_namespace().to_owned()
                        } else {
                            namespace
                        };
                        Ok((client, namespace))
                    }
                    Ok(Err(err)) => Err(format!(
                        "no Kubernetes client configuration: {}",
                        short(&err.to_string())
                    )),
                    Err(_) => Err("the Kubernetes client configuration did not load in time".into()),
                }
            })
            .await
            .clone()
            .map_err(RunnerError::Cluster)
    }
}

/// Most run pods (and policies) looked at when reaping.
const MAX_REAPED: u32 = 1000;

/// Deletes the run pods and policies in `namespace` that a previous runner
/// left: their processes are in no process table any more (the runner's
/// table lives in its memory), so nothing would ever stop them. Runs once,
/// before this runner's first pod; failures are logged, never fatal.
async fn reap_orphans(client: Client, namespace: &str, timeout: Duration) {
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let list = ListParams::default().labels(&selector).limit(MAX_REAPED);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client, namespace);
    let kill = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let mut reaped = 0usize;
    match call("list run pods", timeout, pods.list(&list)).await {
        Ok(found) => {
            for name in found.items.into_iter().filter_map(|pod| pod.metadata.name) {
                match call("delete a run pod", timeout, pods.delete(&name, &kill)).await {
                    Ok(_) => reaped += 1,
                    Err(err) => {
                        tracing::warn!(pod = %name, error = %err, "cannot delete a pod a previous runner left")
                    }
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot list the pods a previous runner left"),
    }
    match call("list run pod policies", timeout, policies.list(&list)).await {
        Ok(found) => {
            for name in found.items.into_iter().filter_map(|policy| policy.metadata.name) {
                if let Err(err) = call(
                    "delete a run pod policy",
                    timeout,
                    policies.delete(&name, &DeleteParams::default()),
                )
                .await
                {
                    tracing::warn!(policy = %name, error = %err, "cannot delete a policy a previous runner left");
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot list the policies a previous runner left"),
    }
    if reaped > 0 {
        tracing::info!(
            pods = reaped,
            namespace,
            "deleted the run pods a previous runner left"
        );
    }
}

/// One API call with the configured deadline.
async fn call<T>(what: &str, timeout: Duration, request: impl Future<Output = kube::Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) => Err(RunnerError::Cluster(format!(
            "{what}: {} ({})",
            short(&status.message),
            status.code
        ))),
        Ok(Err(err)) => Err(RunnerError::Cluster(format!(
            "{what}: {}",
            short(&err.to_string())
        ))),
        Err(_) => Err(RunnerError::Cluster(format!(
            "{what}: no answer in {} s",
            timeout.as_secs()
        ))),
    }
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// Deletes a pod and its policy; absent objects are fine.
async fn delete_both(
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    name: String,
    grace: u32,
    timeout: Duration,
) {
    let params = DeleteParams {
        grace_period_seconds: Some(grace),
        ..DeleteParams::default()
    };
    if let Ok(Err(err)) = tokio::time::timeout(timeout, pods.delete(&name, &params)).await
        && !not_found(&err)
    {
        tracing::warn!(pod = %name, error = %err, "cannot delete a run pod");
    }
    if let Ok(Err(err)) =
        tokio::time::timeout(timeout, policies.delete(&name, &DeleteParams::default())).await
        && !not_found(&err)
    {
        tracing::warn!(policy = %name, error = %err, "cannot delete a run pod's network policy");
    }
}

/// What the status poller last saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Running,
    Ended(i32),
    /// The pod is gone without a readable exit code.
    Gone,
}

impl ProcessBackend for KubernetesBackend {
    type Process = KubernetesProcess;

    fn listen_host(&self) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    async fn spawn(&self, spec: &LaunchSpec) -> Result<Spawned<KubernetesProcess>> {
        // Boxed: a pod's start (API calls, reaping) is a large future, and
        // every Start would carry its size otherwise.
        Box::pin(self.spawn_pod(spec)).await
    }
}

impl KubernetesBackend {
    async fn spawn_pod(&self, spec: &LaunchSpec) -> Result<Spawned<KubernetesProcess>> {
        let k = &self.config.kubernetes;
        let name = pod_name(&spec.process_id);
        let pod_object = pod(spec, &self.config, &name)?;
        let policy = network_policy(spec, k, &name);
        let (client, namespace) = self.cluster().await?;
        let timeout = self.api_timeout();
        self.reaped
            .get_or_init(|| reap_orphans(client.clone(), &namespace, timeout))
            .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let policies: Api<NetworkPolicy> = Api::namespaced(client, &namespace);

        // The policy first: the pod is never reachable without it.
        call(
            "create the network policy",
            timeout,
            policies.create(&PostParams::default(), &policy),
        )
        .await?;
        let created = match call(
            "create the pod",
            timeout,
            pods.create(&PostParams::default(), &pod_object),
        )
        .await
        {
            Ok(created) => created,
            Err(err) => {
                delete_both(pods, policies, name, 0, timeout).await;
                return Err(err);
            }
        };
        if let Some(uid) = created.metadata.uid.clone() {
            let owner = serde_json::json!({"metadata": {"ownerReferences": [OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: name.clone(),
                uid,
                controller: Some(false),
                block_owner_deletion: None,
            }]}});
            if let Err(err) = call(
                "own the network policy",
                timeout,
                policies.patch(&name, &PatchParams::default(), &Patch::Merge(&owner)),
            )
            .await
            {
                tracing::warn!(pod = %name, error = %err, "the network policy is not owned by its pod; it is deleted with it by the runner only");
            }
        }

        let ip = match wait_started(&pods, &name, k, timeout).await {
            Ok(ip) => ip,
            Err(err) => {
                delete_both(pods, policies, name, 0, timeout).await;
                return Err(err);
            }
        };
        let logs = call(
            "read the pod's log",
            timeout,
            pods.log_stream(
                &name,
                &LogParams {
                    container: Some(CONTAINER.into()),
                    follow: true,
                    ..LogParams::default()
                },
            ),
        )
        .await;
        let stdout = match logs {
            Ok(stream) => Some(OutputStream(Box::new(stream.compat()))),
            Err(err) => {
                tracing::warn!(pod = %name, error = %err, "no log stream for a run pod");
                None
            }
        };
        let (seen_tx, seen_rx) = watch::channel(Seen::Running);
        let poller = tokio::spawn(poll_status(
            pods.clone(),
            name.clone(),
            k.poll_interval,
            timeout,
            seen_tx,
        ));
        let isolation = Isolation {
            sandboxed: true,
            note: format!(
                "pod {name} in namespace {namespace} (non-root, read-only root, no capabilities, own network policy)"
            ),
        };
        Ok(Spawned {
            process: KubernetesProcess {
                pods,
                policies,
                name,
                timeout,
                grace: u32::try_from(self.config.max_grace.as_secs()).unwrap_or(u32::MAX),
                seen: seen_rx,
                poller,
                cleaned: false,
            },
            pid: 0,
            address: ip,
            stdout,
            stderr: None,
            isolation,
        })
    }
}

/// Waits until the pod runs (its IP) or ended already; fails on fatal
/// waiting reasons and after `start_timeout`.
async fn wait_started(
    pods: &Api<Pod>,
    name: &str,
    k: &KubernetesConfig,
    timeout: Duration,
) -> Result<Option<IpAddr>> {
    let deadline = tokio::time::Instant::now() + k.start_timeout;
    let interval = k.poll_interval;
    let mut last = String::from("pending");
    while tokio::time::Instant::now() < deadline {
        let current = call("read the pod", timeout, pods.get(name)).await?;
        match pod_outcome(&current) {
            PodOutcome::Running { ip } => return Ok(ip),
            // It ran and ended already: the poller reports the exit code.
            PodOutcome::Ended { .. } => return Ok(None),
            PodOutcome::Pending { reason, fatal: true } => {
                return Err(RunnerError::Cluster(format!("pod {name} cannot start: {reason}")));
            }
            PodOutcome::Pending { reason, .. } => last = reason,
        }
        tokio::time::sleep(interval).await;
    }
    Err(RunnerError::Cluster(format!(
        "pod {name} did not start within {} s ({last})",
        k.start_timeout.as_secs()
    )))
}

/// Reads the pod's status until it ended or is gone. API errors are retried
/// (the pod keeps running meanwhile); the loop ends with the process.
async fn poll_status(
    pods: Api<Pod>,
    name: String,
    interval: Duration,
    timeout: Duration,
    seen: watch::Sender<Seen>,
) {
    loop {
        match tokio::time::timeout(timeout, pods.get(&name)).await {
            Ok(Ok(current)) => {
                if let PodOutcome::Ended { code, .. } = pod_outcome(&current) {
                    seen.send_replace(Seen::Ended(code));
                    return;
                }
            }
            Ok(Err(err)) if not_found(&err) => {
                seen.send_replace(Seen::Gone);
                return;
            }
            Ok(Err(err)) => tracing::debug!(pod = %name, error = %err, "cannot read a run pod; retrying"),
            Err(_) => tracing::debug!(pod = %name, "reading a run pod timed out; retrying"),
        }
        if seen.is_closed() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// A run pod.
#[derive(Debug)]
pub struct KubernetesProcess {
    pods: Api<Pod>,
    policies: Api<NetworkPolicy>,
    name: String,
    timeout: Duration,
    grace: u32,
    seen: watch::Receiver<Seen>,
    poller: JoinHandle<()>,
    cleaned: bool,
}

impl KubernetesProcess {
    fn delete(&self, grace: u32) {
        let (pods, name, timeout) = (self.pods.clone(), self.name.clone(), self.timeout);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let params = DeleteParams {
                    grace_period_seconds: Some(grace),
                    ..DeleteParams::default()
                };
                if let Ok(Err(err)) = tokio::time::timeout(timeout, pods.delete(&name, &params)).await
                    && !not_found(&err)
                {
                    tracing::warn!(pod = %name, error = %err, "cannot delete a run pod");
                }
            });
        }
    }
}

impl BackendProcess for KubernetesProcess {
    async fn wait(&mut self) -> Result<i32> {
        let seen = self
            .seen
            .wait_for(|s| *s != Seen::Running)
            .await
            .map(|s| s.clone())
            .unwrap_or(Seen::Gone);
        Ok(match seen {
            Seen::Ended(code) => code,
            // Deleted before its exit code could be read: killed.
            Seen::Gone | Seen::Running => 137,
        })
    }

    fn signal(&self, signal: StopSignal) {
        match signal {
            StopSignal::Terminate => self.delete(self.grace),
            StopSignal::Kill => self.delete(0),
        }
    }

    fn group_alive(&self) -> bool {
        *self.seen.borrow() == Seen::Running
    }

    async fn cleanup(&mut self) {
        self.poller.abort();
        delete_both(
            self.pods.clone(),
            self.policies.clone(),
            self.name.clone(),
            0,
            self.timeout,
        )
        .await;
        self.cleaned = true;
    }
}

impl Drop for KubernetesProcess {
    fn drop(&mut self) {
        self.poller.abort();
        if !self.cleaned
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(delete_both(
                self.pods.clone(),
                self.policies.clone(),
                self.name.clone(),
                0,
                self.timeout,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    use super::*;
    use crate::backend::Limits;

    fn config() -> RunnerConfig {
        let mut config = RunnerConfig::default().resolve(Path::new("/var/lib/reporunner"));
        config.kubernetes.image = "registry.example/reporunner:1.0".into();
        config
    }

    fn spec() -> LaunchSpec {
        LaunchSpec {
            process_id: "proc-0123456789abcdef0123456789abcdef".into(),
            run_id: "run-42".into(),
            component: "web".into(),
            command: "python app.py --port 8000".into(),
            workspace: PathBuf::from("/var/lib/reporunner/workspaces/alice/sha256-ab"),
            working_dir: PathBuf::from("/var/lib/reporunner/workspaces/alice/sha256-ab/api"),
            env: BTreeMap::from([
                ("PORT".into(), "8000".into()),
                ("HOME".into(), "/home/reporunner".into()),
                ("DATABASE_URL".into(), "postgres://db/app".into()),
            ]),
            limits: Limits {
                max_file_bytes: 0,
                memory_bytes: 512 * 1024 * 1024,
                cpu_millis: 500,
                max_processes: 64,
                max_open_files: 1024,
                max_runtime_seconds: 3600,
            },
            tmp_dir: PathBuf::from("/var/lib/reporunner/runner/tmp/run-42"),
            owner: None,
        }
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn the_pod_carries_the_tier_limits_and_the_command() {
        let pod = pod(&spec(), &config(), "rr-proc-1").unwrap();
        let c = container(&pod);
        assert_eq!(c.image.as_deref(), Some("registry.example/reporunner:1.0"));
        let resources = c.resources.as_ref().unwrap();
        let limits = resources.limits.as_ref().unwrap();
        assert_eq!(limits["memory"], Quantity("536870912".into()));
        assert_eq!(limits["cpu"], Quantity("500m".into()));
        assert_eq!(resources.requests, resources.limits, "Guaranteed QoS");
        let command = c.command.as_ref().unwrap();
        assert_eq!(command[..2], ["sh".to_owned(), "-c".to_owned()]);
        assert!(command[2].starts_with("ulimit -n 1024"), "{}", command[2]);
        assert_eq!(
            command[3], "python app.py --port 8000",
            "the command is $0, never spliced"
        );
        assert_eq!(
            c.working_dir.as_deref(),
            Some("/var/lib/reporunner/workspaces/alice/sha256-ab/api")
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8000);
        let spec_ = pod.spec.as_ref().unwrap();
        assert_eq!(spec_.active_deadline_seconds, Some(3600));
        assert_eq!(
            spec_.restart_policy.as_deref(),
            Some("Never"),
            "the supervisor restarts, as a new pod"
        );
    }

    #[test]
    fn the_pod_is_locked_down() {
        let pod = pod(&spec(), &config(), "rr-proc-1").unwrap();
        let spec_ = pod.spec.as_ref().unwrap();
        assert_eq!(spec_.automount_service_account_token, Some(false));
        assert_eq!(spec_.enable_service_links, Some(false));
        let psc = spec_.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(10001));
        assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let sc = container(&pod).security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
    }

    #[test]
    fn the_workspace_and_the_run_environments_are_sub_paths_of_the_claim() {
        let pod = pod(&spec(), &config(), "rr-proc-1").unwrap();
        let mounts = container(&pod).volume_mounts.clone().unwrap();
        let find = |path: &str| mounts.iter().find(|m| m.mount_path == path).unwrap();
        let ws = find("/var/lib/reporunner/workspaces/alice/sha256-ab");
        assert_eq!(ws.name, "workspaces");
        assert_eq!(ws.sub_path.as_deref(), Some("workspaces/alice/sha256-ab"));
        assert_eq!(ws.read_only, None);
        let envs = find("/var/lib/reporunner/dependency/envs/run-42");
        assert_eq!(
            envs.sub_path.as_deref(),
            Some("dependency/envs/run-42"),
            "only this run's environments"
        );
        let tools = find("/var/lib/reporunner/dependency/tools");
        assert_eq!(tools.read_only, Some(true));
        assert_eq!(find("/tmp").name, "scratch");
        let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
        assert_eq!(
            volumes[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "reporunner-workspaces"
        );
        assert!(volumes[1].empty_dir.as_ref().unwrap().size_limit.is_some());
        let env = container(&pod).env.clone().unwrap();
        let home = env.iter().find(|e| e.name == "HOME").unwrap();
        assert_eq!(
            home.value.as_deref(),
            Some("/var/lib/reporunner/runner/tmp/run-42/home")
        );
        assert_eq!(env.iter().filter(|e| e.name == "HOME").count(), 1);
        assert!(env.iter().any(|e| e.name == "DATABASE_URL"));
    }

    #[test]
    fn a_workspace_off_the_claim_is_refused() {
        let mut launch = spec();
        launch.workspace = PathBuf::from("/srv/elsewhere/ws");
        let err = pod(&launch, &config(), "rr-proc-1").unwrap_err();
        assert!(err.to_string().contains("volume_root"), "{err}");
        launch.workspace = PathBuf::from("/var/lib/reporunner");
        assert!(
            pod(&launch, &config(), "rr-proc-1").is_err(),
            "the whole claim is not a workspace"
        );
    }

    #[test]
    fn zero_limits_leave_the_pod_unbounded() {
        let mut launch = spec();
        launch.limits = Limits::default();
        launch.env.remove("PORT");
        let pod = pod(&launch, &config(), "rr-proc-1").unwrap();
        let c = container(&pod);
        assert!(c.resources.is_none());
        assert!(c.ports.is_none());
        assert!(!c.command.as_ref().unwrap()[2].contains("ulimit"));
        assert_eq!(pod.spec.as_ref().unwrap().active_deadline_seconds, None);
    }

    #[test]
    fn the_policy_admits_the_health_agent_on_the_app_port_and_the_run_only() {
        let policy = network_policy(&spec(), &config().kubernetes, "rr-proc-1");
        let spec_ = policy.spec.unwrap();
        assert_eq!(
            spec_.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        let selector = spec_.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[LABEL_PROCESS], "proc-0123456789abcdef0123456789abcdef");
        let ingress = spec_.ingress.unwrap();
        assert_eq!(ingress.len(), 2);
        let same_run = ingress[0].from.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap();
        assert_eq!(same_run.match_labels.as_ref().unwrap()[LABEL_RUN], "run-42");
        let mesh = &ingress[1];
        let expr = &mesh.from.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(expr.key, MESH_COMPONENT);
        assert_eq!(
            expr.values.as_deref(),
            Some(&["health".to_owned(), "orchestrator".to_owned()][..])
        );
        assert_eq!(mesh.ports.as_ref().unwrap()[0].port, Some(IntOrString::Int(8000)));

        let egress = spec_.egress.unwrap();
        assert_eq!(
            egress.len(),
            3,
            "DNS, the run, the provisioner; no CIDRs by default"
        );
        assert_eq!(egress[0].ports.as_ref().unwrap().len(), 2);
        assert!(
            egress
                .iter()
                .all(|rule| rule.to.as_ref().is_some_and(|to| !to.is_empty())),
            "an empty `to` would allow everything"
        );
    }

    #[test]
    fn egress_cidrs_are_opt_in_and_a_portless_process_takes_no_mesh_calls() {
        let mut k = config().kubernetes;
        k.egress_cidrs = vec!["0.0.0.0/0".into()];
        let mut launch = spec();
        launch.env.remove("PORT");
        let spec_ = network_policy(&launch, &k, "rr-proc-1").spec.unwrap();
        assert_eq!(spec_.ingress.unwrap().len(), 1, "only the run's own pods");
        let egress = spec_.egress.unwrap();
        let last = egress.last().unwrap().to.as_ref().unwrap();
        assert_eq!(last[0].ip_block.as_ref().unwrap().cidr, "0.0.0.0/0");
    }

    #[test]
    fn names_and_labels_are_valid_kubernetes_names() {
        assert_eq!(label_value("run 42/…x"), "run-42--x");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value("-_x_-"), "x");
        let name = pod_name("proc-0123456789abcdef0123456789abcdef");
        assert!(crate::backend::is_dns_label(&name), "{name}");
        assert_ne!(
            name,
            pod_name("proc-0123456789abcdef0123456789abcdef"),
            "a restart is a new pod"
        );
        let name = pod_name(&"P".repeat(128));
        assert!(crate::backend::is_dns_label(&name), "{name}");
    }

    fn with_status(phase: &str, state: Option<ContainerState>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("10.1.2.3".into()),
                container_statuses: state.map(|state| {
                    vec![ContainerStatus {
                        name: CONTAINER.into(),
                        state: Some(state),
                        ..ContainerStatus::default()
                    }]
                }),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn pod_status_becomes_running_exit_codes_and_fatal_waits() {
        assert_eq!(
            pod_outcome(&with_status("Running", None)),
            PodOutcome::Running {
                ip: Some("10.1.2.3".parse().unwrap())
            }
        );
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 3,
                reason: Some("Error".into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        assert_eq!(
            pod_outcome(&with_status("Failed", Some(terminated))),
            PodOutcome::Ended {
                code: 3,
                reason: "Error".into()
            }
        );
        let mut deadline = with_status("Failed", None);
        deadline.status.as_mut().unwrap().reason = Some("DeadlineExceeded".into());
        assert_eq!(
            pod_outcome(&deadline),
            PodOutcome::Ended {
                code: 137,
                reason: "DeadlineExceeded".into()
            }
        );
        let pulling = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("not found".into()),
            }),
            ..ContainerState::default()
        };
        assert!(matches!(
            pod_outcome(&with_status("Pending", Some(pulling))),
            PodOutcome::Pending { fatal: true, reason } if reason.contains("ImagePullBackOff")
        ));
        let creating = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..ContainerState::default()
        };
        assert!(matches!(
            pod_outcome(&with_status("Pending", Some(creating))),
            PodOutcome::Pending { fatal: false, .. }
        ));
        assert!(matches!(
            pod_outcome(&Pod::default()),
            PodOutcome::Pending { fatal: false, .. }
        ));
    }

    /// `examples/render_run_pod.rs` prints these for the schema validation
    /// in `tests/python/test_manifests.py`.
    #[test]
    fn rendered_objects_serialize_with_their_kinds() {
        let config = config();
        let pod = pod(&spec(), &config, "rr-proc-1").unwrap();
        let policy = network_policy(&spec(), &config.kubernetes, "rr-proc-1");
        let pod_json = serde_json::to_value(&pod).unwrap();
        let policy_json = serde_json::to_value(&policy).unwrap();
        assert_eq!(pod_json["kind"], "Pod");
        assert_eq!(pod_json["apiVersion"], "v1");
        assert_eq!(policy_json["kind"], "NetworkPolicy");
        assert_eq!(policy_json["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            pod_json["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
    }
}
