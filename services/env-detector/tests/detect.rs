//! The env-detector against fixture roots, the real host and local fake
//! registries.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on fixture errors by design

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use proptest::prelude::*;
use reporunner_env_detector::{
    DetectOptions, Detector, EnvDetector, EnvDetectorConfig, EnvDetectorError,
    config::RegistryTarget,
    host::{embedding_model_present, host_info},
    platform::{AZURE_ASSET_TAG, detect_platform},
    registries::RegistryProbe,
    toolchains::{extract_version, find_tools, versions},
};
use reporunner_proto::common::v1::{Platform, PlatformSignal, WheelVariant};

fn write(root: &Path, abs: &str, contents: &str) {
    let path = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn has_signal(signals: &[PlatformSignal], platform: Platform, source: &str) -> bool {
    signals
        .iter()
        .any(|s| s.platform() == platform && s.source == source)
}

// ---- platforms -------------------------------------------------------------

#[test]
fn colab_from_env() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/.dockerenv", "");
    let (platform, signals) = detect_platform(
        root.path(),
        &env(&[("COLAB_RELEASE_TAG", "release-colab_20250101-060000_RC00")]),
    );
    assert_eq!(platform, Platform::Colab);
    assert_eq!(signals[0].source, "env COLAB_RELEASE_TAG");
    assert!(has_signal(&signals, Platform::Container, "/.dockerenv exists"));
}

#[test]
fn colab_from_its_image() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("content")).unwrap();
    std::fs::create_dir_all(
        root.path()
            .join("usr/local/lib/python3.11/dist-packages/google/colab"),
    )
    .unwrap();
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Colab);
    assert_eq!(
        signals[0].source,
        "/content and /usr/local/lib/python3.11/dist-packages/google/colab exist"
    );
}

#[test]
fn kubernetes_from_env() {
    let root = tempfile::tempdir().unwrap();
    let (platform, signals) = detect_platform(root.path(), &env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]));
    assert_eq!(platform, Platform::Kubernetes);
    assert_eq!(signals[0].source, "env KUBERNETES_SERVICE_HOST");
}

#[test]
fn kubernetes_from_service_account_and_cgroup() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        "default",
    );
    write(
        root.path(),
        "/proc/1/cgroup",
        "0::/kubepods/burstable/pod1234/abcd\n",
    );
    write(root.path(), "/.dockerenv", "");
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Kubernetes);
    assert_eq!(
        signals[0].source,
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace exists"
    );
    assert!(has_signal(
        &signals,
        Platform::Kubernetes,
        "/proc/1/cgroup mentions kubepods"
    ));
    // The container markers are still reported, after the Kubernetes ones.
    let last = signals.last().unwrap();
    assert_eq!(last.platform(), Platform::Container);
}

#[test]
fn eks_pod_is_kubernetes_and_lists_its_aws_signal() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    let (platform, signals) =
        detect_platform(root.path(), &env(&[("KUBERNETES_SERVICE_HOST", "172.20.0.1")]));
    assert_eq!(platform, Platform::Kubernetes);
    assert!(
        has_signal(
            &signals,
            Platform::Aws,
            "/sys/class/dmi/id/sys_vendor = Amazon EC2"
        ),
        "{signals:?}"
    );
    let k8s = signals
        .iter()
        .position(|s| s.platform() == Platform::Kubernetes)
        .unwrap();
    let aws = signals
        .iter()
        .position(|s| s.platform() == Platform::Aws)
        .unwrap();
    assert!(k8s < aws, "strongest first: {signals:?}");
}

#[test]
fn aws_from_dmi() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    write(root.path(), "/sys/class/dmi/id/bios_vendor", "Amazon EC2\n");
    write(root.path(), "/sys/class/dmi/id/product_name", "m6i.large\n");
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Aws);
    assert_eq!(signals[0].source, "/sys/class/dmi/id/sys_vendor = Amazon EC2");
    assert!(has_signal(
        &signals,
        Platform::Aws,
        "/sys/class/dmi/id/bios_vendor = Amazon EC2"
    ));
}

#[test]
fn aws_from_xen_hypervisor_uuid_and_lambda_env() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/sys/hypervisor/uuid",
        "ec2e1916-9099-7caf-fd21-012345abcdef\n",
    );
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Aws);
    assert_eq!(
        signals[0].source,
        "/sys/hypervisor/uuid = ec2e1916-9099-7caf-fd21-012345abcdef"
    );

    let empty = tempfile::tempdir().unwrap();
    let (platform, signals) = detect_platform(
        empty.path(),
        &env(&[("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")]),
    );
    assert_eq!(platform, Platform::Aws);
    assert_eq!(signals[0].source, "env AWS_EXECUTION_ENV");
}

#[test]
fn gcp_from_dmi_and_cloud_run_env() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/sys/class/dmi/id/product_name",
        "Google Compute Engine\n",
    );
    write(root.path(), "/sys/class/dmi/id/bios_vendor", "Google\n");
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Gcp);
    assert_eq!(
        signals[0].source,
        "/sys/class/dmi/id/product_name = Google Compute Engine"
    );
    assert!(has_signal(
        &signals,
        Platform::Gcp,
        "/sys/class/dmi/id/bios_vendor = Google"
    ));

    let empty = tempfile::tempdir().unwrap();
    let (platform, signals) = detect_platform(empty.path(), &env(&[("K_SERVICE", "api")]));
    assert_eq!(platform, Platform::Gcp);
    assert_eq!(signals[0].source, "env K_SERVICE");
}

#[test]
fn gcp_project_variable_alone_is_not_gcp() {
    let root = tempfile::tempdir().unwrap();
    let (platform, _) = detect_platform(root.path(), &env(&[("GOOGLE_CLOUD_PROJECT", "my-project")]));
    assert_eq!(platform, Platform::Local);
}

#[test]
fn azure_needs_its_asset_tag() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "/sys/class/dmi/id/sys_vendor",
        "Microsoft Corporation\n",
    );
    // Hyper-V on a desktop: same vendor, no Azure tag.
    let (platform, _) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Local);

    write(
        root.path(),
        "/sys/class/dmi/id/chassis_asset_tag",
        &format!("{AZURE_ASSET_TAG}\n"),
    );
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Azure);
    assert_eq!(
        signals[0].source,
        format!("/sys/class/dmi/id/chassis_asset_tag = {AZURE_ASSET_TAG}")
    );

    let empty = tempfile::tempdir().unwrap();
    let (platform, signals) = detect_platform(empty.path(), &env(&[("WEBSITE_SITE_NAME", "my-app")]));
    assert_eq!(platform, Platform::Azure);
    assert_eq!(signals[0].source, "env WEBSITE_SITE_NAME");
}

#[test]
fn cloud_beats_container() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/.dockerenv", "");
    write(
        root.path(),
        "/sys/class/dmi/id/product_name",
        "Google Compute Engine\n",
    );
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Gcp);
    assert!(has_signal(&signals, Platform::Container, "/.dockerenv exists"));
}

#[test]
fn container_markers() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/.dockerenv", "");
    let (platform, signals) = detect_platform(root.path(), &HashMap::new());
    assert_eq!(platform, Platform::Container);
    assert_eq!(signals[0].source, "/.dockerenv exists");

    let podman = tempfile::tempdir().unwrap();
    write(podman.path(), "/run/.containerenv", "engine=\"podman-4.9.3\"\n");
    let (platform, signals) = detect_platform(podman.path(), &env(&[("container", "podman")]));
    assert_eq!(platform, Platform::Container);
    assert_eq!(signals[0].source, "/run/.containerenv exists");
    assert!(has_signal(
        &signals,
        Platform::Container,
        "env container = podman"
    ));

    let cgroup = tempfile::tempdir().unwrap();
    write(
        cgroup.path(),
        "/proc/1/cgroup",
        "12:memory:/docker/3f1c9a\n0::/\n",
    );
    write(
        cgroup.path(),
        "/proc/self/mountinfo",
        "650 600 0:55 / / rw,relatime master:300 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n",
    );
    let (platform, signals) = detect_platform(cgroup.path(), &HashMap::new());
    assert_eq!(platform, Platform::Container);
    assert_eq!(signals[0].source, "/proc/1/cgroup mentions docker");
    assert!(has_signal(
        &signals,
        Platform::Container,
        "/proc/self/mountinfo: / is an overlay mount"
    ));
}

#[test]
fn local_when_nothing_is_seen() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "/proc/1/cgroup", "0::/init.scope\n");
    write(
        root.path(),
        "/proc/self/mountinfo",
        "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    );
    write(root.path(), "/sys/class/dmi/id/sys_vendor", "LENOVO\n");
    let (platform, signals) = detect_platform(
        root.path(),
        &env(&[("HOME", "/home/me"), ("KUBERNETES_SERVICE_HOST", "")]),
    );
    assert_eq!(platform, Platform::Local);
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].platform(), Platform::Local);
}

// ---- host info ---------------------------------------------------------------

fn host_fixture(root: &Path) {
    write(
        root,
        "/etc/os-release",
        "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    write(root, "/proc/sys/kernel/osrelease", "6.1.0-28-amd64\n");
    write(root, "/proc/sys/kernel/hostname", "runner-7\n");
    write(
        root,
        "/proc/meminfo",
        "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n",
    );
    let cpuinfo: String = (0..8)
        .map(|i| format!("processor\t: {i}\nmodel name\t: Fixture CPU\n\n"))
        .collect();
    write(root, "/proc/cpuinfo", &cpuinfo);
    write(
        root,
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
}

#[test]
fn host_info_from_a_cgroup_v2_fixture() {
    let root = tempfile::tempdir().unwrap();
    host_fixture(root.path());
    write(root.path(), "/sys/fs/cgroup/cpu.max", "250000 100000\n");
    write(root.path(), "/sys/fs/cgroup/memory.max", "4294967296\n");
    let host = host_info(root.path());
    assert_eq!(host.os, std::env::consts::OS);
    assert_eq!(host.arch, std::env::consts::ARCH);
    assert_eq!(host.os_release, "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(host.kernel_version, "6.1.0-28-amd64");
    assert_eq!(host.hostname, "runner-7");
    assert_eq!(host.cpus, 3, "8 processors, 2.5 CPUs of quota rounded up");
    assert_eq!(host.memory_total_bytes, 16_384_000 * 1024);
    assert_eq!(host.memory_available_bytes, 8_192_000 * 1024);
    assert_eq!(host.cgroup_memory_limit_bytes, 4_294_967_296);
    assert!(host.cgroup_v2);
}

#[test]
fn host_info_without_limits() {
    let root = tempfile::tempdir().unwrap();
    host_fixture(root.path());
    write(root.path(), "/sys/fs/cgroup/cpu.max", "max 100000\n");
    write(root.path(), "/sys/fs/cgroup/memory.max", "max\n");
    std::fs::remove_file(root.path().join("proc/sys/kernel/hostname")).unwrap();
    write(root.path(), "/etc/hostname", "from-etc\n");
    let host = host_info(root.path());
    assert_eq!(host.cpus, 8);
    assert_eq!(host.cgroup_memory_limit_bytes, 0);
    assert_eq!(host.hostname, "from-etc");
}

#[test]
fn host_info_follows_the_process_cgroup_and_its_ancestors() {
    let root = tempfile::tempdir().unwrap();
    host_fixture(root.path());
    write(
        root.path(),
        "/proc/self/cgroup",
        "0::/system.slice/runner.service\n",
    );
    write(
        root.path(),
        "/sys/fs/cgroup/system.slice/memory.max",
        "3221225472\n",
    );
    write(
        root.path(),
        "/sys/fs/cgroup/system.slice/runner.service/memory.max",
        "max\n",
    );
    write(
        root.path(),
        "/sys/fs/cgroup/system.slice/runner.service/cpu.max",
        "100000 100000\n",
    );
    let host = host_info(root.path());
    assert_eq!(host.cgroup_memory_limit_bytes, 3_221_225_472);
    assert_eq!(host.cpus, 1);
}

#[test]
fn host_info_reads_cgroup_v1_limits() {
    let root = tempfile::tempdir().unwrap();
    host_fixture(root.path());
    std::fs::remove_file(root.path().join("sys/fs/cgroup/cgroup.controllers")).unwrap();
    write(
        root.path(),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "1073741824\n",
    );
    write(root.path(), "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "200000\n");
    write(root.path(), "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    let host = host_info(root.path());
    assert!(!host.cgroup_v2);
    assert_eq!(host.cgroup_memory_limit_bytes, 1 << 30);
    assert_eq!(host.cpus, 2);

    // v1's "no limit" is a huge number, reported as none.
    write(
        root.path(),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    assert_eq!(host_info(root.path()).cgroup_memory_limit_bytes, 0);
}

#[test]
fn empty_root_gives_an_empty_but_sane_host() {
    let root = tempfile::tempdir().unwrap();
    let host = host_info(root.path());
    assert!(host.cpus >= 1);
    assert_eq!(host.memory_total_bytes, 0);
    assert_eq!(host.os_release, "");
    assert!(!host.cgroup_v2);
}

#[test]
fn embedding_models_are_found_below_the_model_dir() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!embedding_model_present(dir.path()));
    let model = dir.path().join("bge-small-en-v1.5");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(model.join("tokenizer.json"), "{}").unwrap();
    assert!(!embedding_model_present(dir.path()), "weights missing");
    std::fs::write(model.join("model.safetensors"), "").unwrap();
    assert!(embedding_model_present(dir.path()));
    assert!(!embedding_model_present(&dir.path().join("absent")));
}

// ---- toolchains ----------------------------------------------------------------

#[cfg(unix)]
fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[cfg(unix)]
#[tokio::test]
async fn fake_tools_are_found_versioned_and_bounded() {
    let bin = tempfile::tempdir().unwrap();
    script(bin.path(), "python3.12", "echo 'Python 3.12.4'");
    std::os::unix::fs::symlink(bin.path().join("python3.12"), bin.path().join("python3")).unwrap();
    script(bin.path(), "python3.11", "echo 'Python 3.11.7'");
    script(
        bin.path(),
        "java",
        "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2",
    );
    script(
        bin.path(),
        "go",
        "[ \"$1\" = version ] && echo 'go version go1.22.1 linux/amd64'",
    );
    script(bin.path(), "uv", "echo 'uv 0.5.1'; exit 3");
    script(bin.path(), "node", "exec /bin/sleep 30");
    // Not executable: not a tool.
    std::fs::write(bin.path().join("cargo"), "").unwrap();
    let root = tempfile::tempdir().unwrap();
    let pg = root.path().join("usr/lib/postgresql/15/bin");
    std::fs::create_dir_all(&pg).unwrap();
    script(&pg, "pg_ctl", "echo 'pg_ctl (PostgreSQL) 15.19'");
    std::fs::create_dir_all(root.path().join("usr/lib/postgresql/13/bin")).unwrap();
    script(
        &root.path().join("usr/lib/postgresql/13/bin"),
        "pg_ctl",
        "echo 'pg_ctl (PostgreSQL) 13.1'",
    );

    let found = find_tools(root.path(), bin.path().as_os_str());
    let names: Vec<_> = found.iter().map(|t| t.name.as_str()).collect();
    // python3 is a link to python3.12, so only the versioned name is kept.
    assert_eq!(
        names,
        ["go", "java", "node", "pg_ctl", "python3.11", "python3.12", "uv"]
    );

    let started = Instant::now();
    let tools = versions(
        found,
        Some(bin.path().as_os_str().to_owned()),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the sleeping node is killed at its timeout"
    );
    let version = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.version.as_str())
            .unwrap()
    };
    assert_eq!(version("python3.12"), "3.12.4");
    assert_eq!(version("python3.11"), "3.11.7");
    assert_eq!(version("java"), "17.0.15");
    assert_eq!(version("go"), "1.22.1");
    assert_eq!(version("pg_ctl"), "15.19", "the newest PostgreSQL major wins");
    assert_eq!(version("uv"), "", "a failing version command gives no version");
    assert_eq!(version("node"), "", "a hanging version command gives no version");
    let pg_path = tools.iter().find(|t| t.name == "pg_ctl").unwrap().path.clone();
    assert!(pg_path.ends_with("usr/lib/postgresql/15/bin/pg_ctl"), "{pg_path}");
}

// ---- the real host ---------------------------------------------------------------

#[tokio::test]
async fn real_host_has_python_cargo_git_and_memory() {
    let detector = Detector::new(EnvDetectorConfig::default());
    let options = DetectOptions {
        skip_registries: true,
        ..DetectOptions::default()
    };
    let (environment, recommendations) = detector.detect(options).await.unwrap();
    let version_of = |pred: &dyn Fn(&str) -> bool| {
        environment
            .toolchains
            .iter()
            .find(|t| pred(&t.name))
            .map(|t| t.version.clone())
    };
    let python = version_of(&|n| n == "python3" || n.starts_with("python3.")).expect("a python3 on PATH");
    assert!(!python.is_empty());
    assert!(!version_of(&|n| n == "cargo").expect("cargo on PATH").is_empty());
    assert!(!version_of(&|n| n == "git").expect("git on PATH").is_empty());
    let host = environment.host.as_ref().unwrap();
    assert!(host.memory_total_bytes > 0);
    assert!(host.cpus >= 1);
    assert!(!environment.platform_signals.is_empty());
    assert_ne!(environment.platform(), Platform::Unspecified);
    assert!(!environment.platform_overridden);
    assert!(environment.registries.is_empty(), "skipped");
    assert!(environment.detected_at.is_some());
    assert!(recommendations.parallelism >= 1);
    assert_ne!(recommendations.wheel_variant(), WheelVariant::Unspecified);
    let mut sorted = environment.toolchains.clone();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(sorted, environment.toolchains);
}

#[tokio::test]
async fn fixture_root_detection_with_override_and_injected_env() {
    let root = tempfile::tempdir().unwrap();
    host_fixture(root.path());
    write(root.path(), "/sys/class/dmi/id/sys_vendor", "Amazon EC2\n");
    let models = tempfile::tempdir().unwrap();
    let config = EnvDetectorConfig {
        root: root.path().to_path_buf(),
        extra_path: Some(String::new()),
        model_dir: Some(models.path().to_path_buf()),
        ..EnvDetectorConfig::default()
    };
    let detector = Detector::with_env(config, env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]));
    let options = DetectOptions {
        skip_registries: true,
        ..DetectOptions::default()
    };
    let (environment, recommendations) = detector.detect(options.clone()).await.unwrap();
    assert_eq!(environment.platform(), Platform::Kubernetes);
    assert!(has_signal(
        &environment.platform_signals,
        Platform::Aws,
        "/sys/class/dmi/id/sys_vendor = Amazon EC2"
    ));
    assert!(environment.toolchains.is_empty(), "empty PATH");
    assert_eq!(environment.host.as_ref().unwrap().hostname, "runner-7");
    assert!(!recommendations.vector_index);
    assert!(
        recommendations
            .vector_index_reason
            .contains(&models.path().display().to_string())
    );
    assert!(
        recommendations
            .notes
            .iter()
            .any(|n| n.starts_with("no python3 on PATH"))
    );

    let overridden = DetectOptions {
        platform_override: Some(Platform::Gcp),
        ..options
    };
    let (environment, _) = detector.detect(overridden).await.unwrap();
    assert_eq!(environment.platform(), Platform::Gcp);
    assert!(environment.platform_overridden);
    assert_eq!(
        environment.platform_signals[0].platform(),
        Platform::Kubernetes,
        "signals are kept"
    );
}

#[tokio::test]
async fn missing_root_is_an_io_error() {
    let config = EnvDetectorConfig {
        root: "/definitely/not/here".into(),
        ..EnvDetectorConfig::default()
    };
    let err = Detector::new(config)
        .detect(DetectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EnvDetectorError::Io { .. }), "{err:?}");
}

// ---- registries ------------------------------------------------------------------

const TIMEOUT: Duration = Duration::from_millis(800);

#[tokio::test]
async fn refused_registry_is_unreachable_with_a_reason() {
    let probe = RegistryProbe::new(
        vec![RegistryTarget::new("local", "http://127.0.0.1:1/")],
        TIMEOUT,
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let registries = probe.probe(false).await;
    assert!(started.elapsed() < TIMEOUT + Duration::from_secs(1));
    assert_eq!(registries.len(), 1);
    assert_eq!(registries[0].name, "local");
    assert!(!registries[0].reachable);
    assert!(!registries[0].error.is_empty());
}

#[tokio::test]
async fn silent_registry_times_out_within_the_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and holds connections without ever answering.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let probe = RegistryProbe::new(
        vec![
            RegistryTarget::new("silent", format!("http://{addr}/")),
            RegistryTarget::new("refused", "http://127.0.0.1:1/"),
        ],
        TIMEOUT,
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let registries = probe.probe(false).await;
    let elapsed = started.elapsed();
    assert!(elapsed < TIMEOUT + Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(registries[0].name, "silent");
    assert!(!registries[0].reachable);
    assert_eq!(registries[0].error, "timed out after 800 ms");
    assert_eq!(registries[1].name, "refused", "configuration order is kept");
    server.abort();
}

#[tokio::test]
async fn answering_registry_is_reachable_and_cached() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hits_tx, mut hits_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let hits_tx = hits_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = hits_tx.send(());
                let _ = socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let probe = RegistryProbe::new(
        vec![RegistryTarget::new("fake", format!("http://{addr}/simple/"))],
        TIMEOUT,
        Duration::from_secs(60),
    );
    let first = probe.probe(false).await;
    assert!(first[0].reachable, "a 404 is an answer: {:?}", first[0]);
    assert!(first[0].error.is_empty());
    let second = probe.probe(false).await;
    assert_eq!(second, first);
    probe.probe(true).await;
    let mut hits = 0;
    while hits_rx.try_recv().is_ok() {
        hits += 1;
    }
    assert_eq!(
        hits, 2,
        "the cached probe did not reach the server; the refresh did"
    );
    server.abort();
}

// ---- properties ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn detect_platform_never_panics(entries in proptest::collection::hash_map("[A-Za-z_]{1,24}", ".{0,40}", 0..24)) {
        let root = Path::new("/nonexistent-env-detector-root");
        let (platform, signals) = detect_platform(root, &entries);
        prop_assert!(!signals.is_empty());
        prop_assert_eq!(signals[0].platform(), platform);
    }

    #[test]
    fn detect_platform_never_panics_on_known_variables(
        picks in proptest::collection::vec((0usize..8, ".{0,20}"), 0..8)
    ) {
        const KNOWN: [&str; 8] = ["COLAB_GPU", "KUBERNETES_SERVICE_HOST", "AWS_EXECUTION_ENV", "K_SERVICE", "WEBSITE_SITE_NAME", "container", "HOME", "PATH"];
        let env: HashMap<String, String> = picks.into_iter().map(|(i, v)| (KNOWN[i].to_owned(), v)).collect();
        let (platform, signals) = detect_platform(Path::new("/nonexistent-env-detector-root"), &env);
        prop_assert_eq!(signals[0].platform(), platform);
    }

    #[test]
    fn extract_version_never_panics(text in ".{0,200}") {
        if let Some(version) = extract_version(&text) {
            prop_assert!(version.contains('.'));
            prop_assert!(version.chars().all(|c| c.is_ascii_digit() || c == '.'));
        }
    }
}
