//! Where the host runs, from environment variables and a few small files
//! (DMI, cgroup, mount table, container markers), never from the network.
//!
//! Precedence: Colab > Kubernetes > cloud (AWS, GCP, Azure) > container >
//! local. Every signal seen is reported, strongest first, so a pod on EKS is
//! Kubernetes and still lists its AWS signal.

use std::{collections::HashMap, path::Path};

use reporunner_proto::common::v1::{Platform, PlatformSignal};

use crate::{
    error::{EnvDetectorError, Result},
    host::{host_path_exists, read_host_file, under},
};

/// The tag Azure sets as the chassis asset tag of every VM.
pub const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// Environment variables set in Google Colab runtimes.
const COLAB_ENV: &[&str] = &[
    "COLAB_RELEASE_TAG",
    "COLAB_GPU",
    "COLAB_JUPYTER_IP",
    "COLAB_BACKEND_VERSION",
];
/// Environment variables set by AWS compute services (Lambda, ECS, Fargate,
/// App Runner, CloudShell).
const AWS_ENV: &[&str] = &[
    "AWS_EXECUTION_ENV",
    "ECS_CONTAINER_METADATA_URI_V4",
    "ECS_CONTAINER_METADATA_URI",
    "AWS_LAMBDA_FUNCTION_NAME",
];
/// Environment variables set by Google serverless runtimes (Cloud Run
/// services and jobs, Cloud Functions) and Cloud Shell. `GOOGLE_CLOUD_PROJECT`
/// is left out on purpose: developers set it on their laptops.
const GCP_ENV: &[&str] = &["K_SERVICE", "CLOUD_RUN_JOB", "FUNCTION_TARGET", "CLOUD_SHELL"];
/// Environment variables set by Azure App Service, Functions and Container Apps.
const AZURE_ENV: &[&str] = &["WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID", "CONTAINER_APP_NAME"];
/// Words of `/proc/1/cgroup` that mean a container runtime.
const CONTAINER_CGROUP_WORDS: &[&str] = &["docker", "containerd", "libpod", "cri-o", "crio", "lxc"];
/// The most bytes of the mount table looked at.
const MAX_MOUNTINFO_BYTES: u64 = 256 * 1024;

/// Decides the platform of the host under `root` with environment `env`.
///
/// Returns the platform and every signal seen, strongest first; a local host
/// gets one signal saying that nothing else was seen. Pure apart from reading
/// a few small files under `root` (each bounded); never fails.
pub fn detect_platform(root: &Path, env: &HashMap<String, String>) -> (Platform, Vec<PlatformSignal>) {
    let mut signals = Vec::new();
    colab_signals(root, env, &mut signals);
    kubernetes_signals(root, env, &mut signals);
    let dmi = Dmi::read(root);
    aws_signals(root, &dmi, env, &mut signals);
    gcp_signals(&dmi, env, &mut signals);
    azure_signals(&dmi, env, &mut signals);
    container_signals(root, env, &mut signals);
    // Signals are pushed in precedence order, so the first one decides.
    let platform = signals.first().map_or(Platform::Local, |s| s.platform());
    if signals.is_empty() {
        signals.push(signal(
            Platform::Local,
            "no notebook, orchestrator, cloud or container marker found",
        ));
    }
    (platform, signals)
}

/// Reads a platform override as it arrives on the wire: 0 (unspecified) is no
/// override, an unknown number is the caller's mistake.
pub fn parse_platform_override(value: i32) -> Result<Option<Platform>> {
    match Platform::try_from(value) {
        Ok(Platform::Unspecified) => Ok(None),
        Ok(platform) => Ok(Some(platform)),
        Err(_) => Err(EnvDetectorError::InvalidPlatform(value.to_string())),
    }
}

/// Reads a platform name ("aws", "PLATFORM_AWS", "k8s"), as given on a
/// command line or in configuration.
pub fn parse_platform_name(name: &str) -> Result<Platform> {
    let lower = name.trim().to_ascii_lowercase();
    let bare = lower.strip_prefix("platform_").unwrap_or(&lower);
    match bare {
        "local" => Ok(Platform::Local),
        "container" | "docker" => Ok(Platform::Container),
        "kubernetes" | "k8s" => Ok(Platform::Kubernetes),
        "colab" => Ok(Platform::Colab),
        "aws" => Ok(Platform::Aws),
        "gcp" => Ok(Platform::Gcp),
        "azure" => Ok(Platform::Azure),
        _ => Err(EnvDetectorError::InvalidPlatform(format!("`{name}`"))),
    }
}

fn signal(platform: Platform, source: impl Into<String>) -> PlatformSignal {
    PlatformSignal {
        platform: platform as i32,
        source: source.into(),
    }
}

fn env_set<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn env_signals(
    env: &HashMap<String, String>,
    names: &[&str],
    platform: Platform,
    out: &mut Vec<PlatformSignal>,
) {
    for name in names {
        if env_set(env, name).is_some() {
            out.push(signal(platform, format!("env {name}")));
        }
    }
}

/// A one-line file, trimmed; `None` when absent or empty.
fn read_line(root: &Path, abs: &str) -> Option<String> {
    let text = read_host_file(root, abs)?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The DMI identity files of the host.
struct Dmi {
    fields: Vec<(&'static str, String)>,
}

impl Dmi {
    fn read(root: &Path) -> Self {
        let fields = [
            "sys_vendor",
            "board_vendor",
            "product_name",
            "bios_vendor",
            "chassis_asset_tag",
        ]
        .into_iter()
        .filter_map(|name| read_line(root, &format!("/sys/class/dmi/id/{name}")).map(|value| (name, value)))
        .collect();
        Self { fields }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn source(name: &str, value: &str) -> String {
        format!("/sys/class/dmi/id/{name} = {value}")
    }
}

fn colab_signals(root: &Path, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    env_signals(env, COLAB_ENV, Platform::Colab, out);
    // The Colab image: a /content working directory and the google.colab
    // package in the system Python.
    if under(root, "/content").is_dir()
        && let Some(package) = colab_package(root)
    {
        out.push(signal(Platform::Colab, format!("/content and {package} exist")));
    }
}

/// `/usr/local/lib/python3.N/dist-packages/google/colab`, when present.
fn colab_package(root: &Path) -> Option<String> {
    let entries = std::fs::read_dir(under(root, "/usr/local/lib")).ok()?;
    entries.take(256).flatten().find_map(|entry| {
        let name = entry.file_name().to_str()?.to_owned();
        if !name.starts_with("python3") {
            return None;
        }
        let abs = format!("/usr/local/lib/{name}/dist-packages/google/colab");
        host_path_exists(root, &abs).then_some(abs)
    })
}

fn kubernetes_signals(root: &Path, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    env_signals(env, &["KUBERNETES_SERVICE_HOST"], Platform::Kubernetes, out);
    for abs in [
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        "/run/secrets/kubernetes.io/serviceaccount/namespace",
    ] {
        if host_path_exists(root, abs) {
            out.push(signal(Platform::Kubernetes, format!("{abs} exists")));
            break;
        }
    }
    if read_host_file(root, "/proc/1/cgroup").is_some_and(|text| text.contains("kubepods")) {
        out.push(signal(Platform::Kubernetes, "/proc/1/cgroup mentions kubepods"));
    }
}

fn aws_signals(root: &Path, dmi: &Dmi, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    for name in ["sys_vendor", "board_vendor"] {
        if let Some(value) = dmi.get(name).filter(|v| v.eq_ignore_ascii_case("Amazon EC2")) {
            out.push(signal(Platform::Aws, Dmi::source(name, value)));
        }
    }
    for name in ["product_name", "bios_vendor"] {
        if let Some(value) = dmi
            .get(name)
            .filter(|v| v.to_ascii_lowercase().contains("amazon"))
        {
            out.push(signal(Platform::Aws, Dmi::source(name, value)));
        }
    }
    // Xen-based EC2 instances (no DMI vendor) have an "ec2..." hypervisor UUID.
    if let Some(uuid) =
        read_line(root, "/sys/hypervisor/uuid").filter(|u| u.to_ascii_lowercase().starts_with("ec2"))
    {
        out.push(signal(Platform::Aws, format!("/sys/hypervisor/uuid = {uuid}")));
    }
    env_signals(env, AWS_ENV, Platform::Aws, out);
}

fn gcp_signals(dmi: &Dmi, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    if let Some(value) = dmi
        .get("product_name")
        .filter(|v| v.contains("Google Compute Engine"))
    {
        out.push(signal(Platform::Gcp, Dmi::source("product_name", value)));
    }
    for name in ["sys_vendor", "bios_vendor"] {
        if let Some(value) = dmi.get(name).filter(|v| v.trim() == "Google") {
            out.push(signal(Platform::Gcp, Dmi::source(name, value)));
        }
    }
    env_signals(env, GCP_ENV, Platform::Gcp, out);
}

fn azure_signals(dmi: &Dmi, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    // Hyper-V on a desktop also says "Microsoft Corporation"; the asset tag is
    // what only Azure sets.
    if dmi.get("sys_vendor") == Some("Microsoft Corporation")
        && let Some(tag) = dmi.get("chassis_asset_tag").filter(|t| *t == AZURE_ASSET_TAG)
    {
        out.push(signal(Platform::Azure, Dmi::source("chassis_asset_tag", tag)));
    }
    env_signals(env, AZURE_ENV, Platform::Azure, out);
}

fn container_signals(root: &Path, env: &HashMap<String, String>, out: &mut Vec<PlatformSignal>) {
    for abs in ["/.dockerenv", "/run/.containerenv"] {
        if host_path_exists(root, abs) {
            out.push(signal(Platform::Container, format!("{abs} exists")));
        }
    }
    if let Some(value) = env_set(env, "container") {
        out.push(signal(Platform::Container, format!("env container = {value}")));
    }
    if let Some(text) = read_host_file(root, "/proc/1/cgroup")
        && let Some(word) = CONTAINER_CGROUP_WORDS.iter().find(|word| text.contains(*word))
    {
        out.push(signal(
            Platform::Container,
            format!("/proc/1/cgroup mentions {word}"),
        ));
    }
    let mountinfo = crate::host::read_bounded(&under(root, "/proc/self/mountinfo"), MAX_MOUNTINFO_BYTES);
    if let Some(fstype) = mountinfo
        .as_deref()
        .and_then(root_mount_fstype)
        .filter(|fs| *fs == "overlay")
    {
        out.push(signal(
            Platform::Container,
            format!("/proc/self/mountinfo: / is an {fstype} mount"),
        ));
    }
}

/// The file-system type of the `/` mount in a `/proc/self/mountinfo` table
/// ("36 35 98:0 / / rw,noatime master:1 - overlay overlay rw,...").
pub fn root_mount_fstype(mountinfo: &str) -> Option<&str> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mount_point = before.split_whitespace().nth(4)?;
        (mount_point == "/")
            .then(|| after.split_whitespace().next())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_seen_means_local_with_one_explaining_signal() {
        let dir = tempfile::tempdir().unwrap();
        let (platform, signals) = detect_platform(dir.path(), &HashMap::new());
        assert_eq!(platform, Platform::Local);
        assert_eq!(signals.len(), 1);
        assert_eq!(signals[0].platform(), Platform::Local);
    }

    #[test]
    fn overrides_from_the_wire() {
        assert_eq!(parse_platform_override(0).unwrap(), None);
        assert_eq!(
            parse_platform_override(Platform::Aws as i32).unwrap(),
            Some(Platform::Aws)
        );
        let err = parse_platform_override(99).unwrap_err();
        assert!(matches!(err, EnvDetectorError::InvalidPlatform(ref v) if v == "99"));
    }

    #[test]
    fn platform_names() {
        assert_eq!(parse_platform_name("AWS").unwrap(), Platform::Aws);
        assert_eq!(
            parse_platform_name("PLATFORM_KUBERNETES").unwrap(),
            Platform::Kubernetes
        );
        assert_eq!(parse_platform_name("k8s").unwrap(), Platform::Kubernetes);
        assert!(
            parse_platform_name("mainframe")
                .unwrap_err()
                .to_string()
                .contains("mainframe")
        );
    }

    #[test]
    fn root_mount_type_is_read_from_mountinfo() {
        let table = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                     27 1 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b\n";
        assert_eq!(root_mount_fstype(table), Some("overlay"));
        assert_eq!(
            root_mount_fstype("25 1 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            Some("ext4")
        );
        assert_eq!(root_mount_fstype("garbage"), None);
    }
}
