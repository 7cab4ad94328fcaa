//! Operating system and hardware: OS release, kernel, CPUs, memory, cgroup
//! limits, GPUs.
//!
//! Every file is read under a configurable root (see
//! [`crate::EnvDetectorConfig::root`]) and bounded in size, so a fixture tree
//! stands in for the host in tests and a strange `/proc` cannot make a read
//! unbounded.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use reporunner_exec::{Bounds, run_bounded};
use reporunner_proto::common::v1::{Gpu, HostInfo};
use tokio::process::Command;

/// The most bytes read from one host file.
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Bytes in a kibibyte, as `/proc/meminfo` counts them ("kB").
const KIB: u64 = 1024;
/// Bytes in a mebibyte, as nvidia-smi counts them ("MiB").
const MIB: u64 = 1024 * 1024;

/// `abs` (an absolute host path such as "/proc/meminfo") under `root`.
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Reads at most [`MAX_FILE_BYTES`] of `root`/`abs` as text (lossy UTF-8);
/// `None` when the file cannot be opened or read.
pub(crate) fn read_host_file(root: &Path, abs: &str) -> Option<String> {
    read_bounded(&under(root, abs), MAX_FILE_BYTES)
}

/// Reads at most `limit` bytes of `path` as text (lossy UTF-8).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `root`/`abs` exists (file, directory, or a link to either).
pub(crate) fn host_path_exists(root: &Path, abs: &str) -> bool {
    under(root, abs).exists()
}

/// The OS and hardware of the host under `root`.
///
/// Blocking (reads a dozen small files); call it from `spawn_blocking`.
pub fn host_info(root: &Path) -> HostInfo {
    let meminfo = read_host_file(root, "/proc/meminfo")
        .map(|text| parse_meminfo(&text))
        .unwrap_or_default();
    let limits = cgroup_limits(root);
    let base_cpus = if is_real_root(root) {
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
    } else {
        read_host_file(root, "/proc/cpuinfo")
            .map(|text| count_cpuinfo_processors(&text))
            .filter(|&n| n > 0)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            })
            .unwrap_or(1)
    };
    let cpus = match limits.cpu_quota {
        Some(quota) => base_cpus.min(quota).max(1),
        None => base_cpus.max(1),
    };
    let hostname = read_host_file(root, "/proc/sys/kernel/hostname")
        .map(|text| text.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| read_host_file(root, "/etc/hostname").map(|text| text.trim().to_owned()))
        .unwrap_or_default();
    HostInfo {
        os: std::env::consts::OS.to_owned(),
        os_release: read_host_file(root, "/etc/os-release")
            .or_else(|| read_host_file(root, "/usr/lib/os-release"))
            .map(|text| parse_os_release(&text))
            .unwrap_or_default(),
        kernel_version: read_host_file(root, "/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned())
            .unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
        hostname,
        cpus,
        memory_total_bytes: meminfo.total_bytes,
        memory_available_bytes: meminfo.available_bytes,
        cgroup_memory_limit_bytes: limits.memory_bytes.unwrap_or(0),
        cgroup_v2: read_host_file(root, "/sys/fs/cgroup/cgroup.controllers")
            .is_some_and(|text| cgroup_v2_usable(&text)),
    }
}

fn is_real_root(root: &Path) -> bool {
    root == Path::new("/")
}

/// Memory figures from `/proc/meminfo`, in bytes (0 when absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Parses `/proc/meminfo` ("MemTotal:  24684084 kB"). Without a
/// `MemAvailable` line (kernels before 3.14), free + buffers + cached stands in.
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut total = None;
    let mut available = None;
    let mut free_ish = 0u64;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kib) = rest.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let bytes = kib.saturating_mul(KIB);
        match key.trim() {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" | "Buffers" | "Cached" => free_ish = free_ish.saturating_add(bytes),
            _ => {}
        }
    }
    MemInfo {
        total_bytes: total.unwrap_or(0),
        available_bytes: available.unwrap_or(free_ish),
    }
}

/// Counts the `processor : N` lines of `/proc/cpuinfo`.
pub fn count_cpuinfo_processors(text: &str) -> u32 {
    let count = text
        .lines()
        .filter(|line| {
            line.split_once(':')
                .is_some_and(|(key, _)| key.trim() == "processor")
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The distribution from `/etc/os-release`: `PRETTY_NAME`, else
/// `NAME VERSION`, unquoted.
pub fn parse_os_release(text: &str) -> String {
    let mut pretty = None;
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key {
            "PRETTY_NAME" => pretty = Some(value),
            "NAME" => name = Some(value),
            "VERSION" => version = Some(value),
            _ => {}
        }
    }
    if let Some(pretty) = pretty.filter(|p| !p.is_empty()) {
        return pretty;
    }
    match (name, version) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        (Some(name), None) => name,
        (None, _) => String::new(),
    }
}

fn unquote(value: &str) -> String {
    let stripped = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    stripped.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Parses cgroup v2 `cpu.max` ("150000 100000" or "max 100000") into whole
/// CPUs, rounded up; `None` when there is no quota.
pub fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut fields = text.split_whitespace();
    let quota = fields.next()?;
    if quota == "max" {
        return None;
    }
    let quota: u64 = quota.parse().ok()?;
    let period: u64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    cpus_from_quota(quota, period)
}

fn cpus_from_quota(quota: u64, period: u64) -> Option<u32> {
    if quota == 0 || period == 0 {
        return None;
    }
    let cpus = quota.div_ceil(period).max(1);
    Some(u32::try_from(cpus).unwrap_or(u32::MAX))
}

/// Parses cgroup v2 `memory.max` into bytes; `None` for "max" or garbage.
pub fn parse_memory_max(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&bytes| bytes > 0)
}

/// cgroup v1 reports "no limit" as a huge number (`PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED_FLOOR: u64 = 1 << 60;

/// Whether a cgroup v2 `cgroup.controllers` offers what a runner limits with.
pub fn cgroup_v2_usable(controllers: &str) -> bool {
    controllers.split_whitespace().any(|c| c == "memory")
}

/// The cgroup limits that apply to this process, as far as they can be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CgroupLimits {
    memory_bytes: Option<u64>,
    cpu_quota: Option<u32>,
}

/// The deepest cgroup directories depth walked when looking for limits.
const MAX_CGROUP_DEPTH: usize = 32;

/// Reads the memory and CPU limits: cgroup v2 (`memory.max`, `cpu.max`) in the
/// process's own cgroup and its ancestors (the tightest wins), else cgroup v1.
fn cgroup_limits(root: &Path) -> CgroupLimits {
    let cgroup_file = read_host_file(root, "/proc/self/cgroup").unwrap_or_default();
    if host_path_exists(root, "/sys/fs/cgroup/cgroup.controllers") {
        let own = v2_cgroup_path(&cgroup_file);
        let mut limits = CgroupLimits::default();
        for dir in ancestor_dirs("/sys/fs/cgroup", own.as_deref()) {
            if let Some(bytes) =
                read_host_file(root, &format!("{dir}/memory.max")).and_then(|t| parse_memory_max(&t))
            {
                limits.memory_bytes = Some(limits.memory_bytes.map_or(bytes, |m| m.min(bytes)));
            }
            if let Some(cpus) =
                read_host_file(root, &format!("{dir}/cpu.max")).and_then(|t| parse_cpu_max(&t))
            {
                limits.cpu_quota = Some(limits.cpu_quota.map_or(cpus, |c| c.min(cpus)));
            }
        }
        return limits;
    }
    // cgroup v1: one hierarchy per controller.
    let memory_dir = ancestor_dirs(
        "/sys/fs/cgroup/memory",
        v1_cgroup_path(&cgroup_file, "memory").as_deref(),
    );
    let cpu_dir = ancestor_dirs(
        "/sys/fs/cgroup/cpu",
        v1_cgroup_path(&cgroup_file, "cpu").as_deref(),
    );
    let mut limits = CgroupLimits::default();
    for dir in memory_dir {
        let bytes = read_host_file(root, &format!("{dir}/memory.limit_in_bytes"))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&b| b > 0 && b < V1_UNLIMITED_FLOOR);
        if let Some(bytes) = bytes {
            limits.memory_bytes = Some(limits.memory_bytes.map_or(bytes, |m| m.min(bytes)));
        }
    }
    for dir in cpu_dir {
        let quota = read_host_file(root, &format!("{dir}/cpu.cfs_quota_us"))
            .and_then(|t| t.trim().parse::<i64>().ok());
        let period = read_host_file(root, &format!("{dir}/cpu.cfs_period_us"))
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let (Some(quota), Some(period)) = (quota, period)
            && let Ok(quota) = u64::try_from(quota)
            && let Some(cpus) = cpus_from_quota(quota, period)
        {
            limits.cpu_quota = Some(limits.cpu_quota.map_or(cpus, |c| c.min(cpus)));
        }
    }
    limits
}

/// The process's cgroup v2 path ("0::/user.slice/x.scope"), when it is a
/// plain path below the mount.
fn v2_cgroup_path(cgroup_file: &str) -> Option<String> {
    cgroup_file
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(clean_cgroup_path)
}

/// The process's cgroup v1 path for `controller` ("4:memory:/docker/abc").
fn v1_cgroup_path(cgroup_file: &str, controller: &str) -> Option<String> {
    cgroup_file.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| clean_cgroup_path(path))
            .flatten()
    })
}

fn clean_cgroup_path(path: &str) -> Option<String> {
    let path = path.trim();
    let ok = path.starts_with('/') && !path.split('/').any(|c| c == ".." || c == ".");
    ok.then(|| path.trim_end_matches('/').to_owned())
        .filter(|p| !p.is_empty())
}

/// `base` followed by every directory from `base` down to `base/own`,
/// bounded in depth.
fn ancestor_dirs(base: &str, own: Option<&str>) -> Vec<String> {
    let mut dirs = vec![base.to_owned()];
    if let Some(own) = own {
        let mut current = base.to_owned();
        for component in own.split('/').filter(|c| !c.is_empty()).take(MAX_CGROUP_DEPTH) {
            current = format!("{current}/{component}");
            dirs.push(current.clone());
        }
    }
    dirs
}

/// Whether `dir`, or a directory up to three levels below it, holds an
/// embedding model: `config.json`, `tokenizer.json` and `model.safetensors`.
///
/// Blocking and bounded (at most a few thousand directory entries are looked at).
pub fn embedding_model_present(dir: &Path) -> bool {
    const MAX_DEPTH: usize = 3;
    const MAX_ENTRIES: usize = 4_096;
    let is_model = |d: &Path| {
        ["config.json", "tokenizer.json", "model.safetensors"]
            .iter()
            .all(|name| d.join(name).is_file())
    };
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((current, depth)) = stack.pop() {
        if is_model(&current) {
            return true;
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return false;
            }
            // Follows links: Hugging Face caches link snapshots to blobs.
            if entry.path().is_dir() {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    false
}

/// Bytes read from nvidia-smi's output.
const MAX_NVIDIA_SMI_OUTPUT: usize = 64 * 1024;

/// The GPUs `nvidia-smi` on the process PATH reports; empty when it is not
/// installed, fails or does not answer within `timeout`.
pub async fn gpus(timeout: Duration) -> Vec<Gpu> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    match reporunner_host::which("nvidia-smi", &path) {
        Some(program) => gpus_with(&program, timeout).await,
        None => Vec::new(),
    }
}

/// The GPUs the `nvidia-smi` at `program` reports (see [`gpus`]).
pub async fn gpus_with(program: &Path, timeout: Duration) -> Vec<Gpu> {
    let bounds = Bounds::within(timeout).max_output(MAX_NVIDIA_SMI_OUTPUT);
    let mut query = Command::new(program);
    query.args([
        "--query-gpu=index,name,memory.total,driver_version",
        "--format=csv,noheader,nounits",
    ]);
    let query = run_bounded(query, &bounds);
    let header = run_bounded(Command::new(program), &bounds);
    let (query, header) = tokio::join!(query, header);
    let mut gpus = match query {
        Ok(out) if out.success() => parse_nvidia_smi_csv(&out.stdout_text()),
        Ok(out) => {
            tracing::debug!(stderr = %out.stderr_text().trim(), "nvidia-smi query failed");
            Vec::new()
        }
        Err(err) => {
            tracing::debug!(error = %err, "nvidia-smi did not run");
            Vec::new()
        }
    };
    let cuda = header.ok().and_then(|out| parse_cuda_version(&out.stdout_text()));
    if let Some(cuda) = cuda {
        for gpu in &mut gpus {
            gpu.cuda_version.clone_from(&cuda);
        }
    }
    gpus
}

/// Parses `nvidia-smi --query-gpu=index,name,memory.total,driver_version
/// --format=csv,noheader,nounits` ("0, NVIDIA H100 80GB HBM3, 81559,
/// 550.54.15"; memory in MiB). Lines that do not parse are skipped.
pub fn parse_nvidia_smi_csv(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, name, memory, driver] = fields.as_slice() else {
                return None;
            };
            let index = index.parse::<u32>().ok()?;
            // "[N/A]" or "[Not Supported]" mean unknown, not absent.
            let memory_mib = memory.parse::<u64>().unwrap_or(0);
            Some(Gpu {
                index,
                name: (*name).to_owned(),
                memory_total_bytes: memory_mib.saturating_mul(MIB),
                driver_version: if driver.starts_with('[') {
                    String::new()
                } else {
                    (*driver).to_owned()
                },
                cuda_version: String::new(),
            })
        })
        .collect()
}

/// The "CUDA Version: 12.4" of plain `nvidia-smi`'s header.
pub fn parse_cuda_version(text: &str) -> Option<String> {
    let rest = text.split("CUDA Version").nth(1)?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty() && version.starts_with(|c: char| c.is_ascii_digit())).then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24684084 kB\nMemFree:        24175360 kB\nMemAvailable:   24149008 kB\nBuffers:           10 kB\n";

    #[test]
    fn meminfo_is_converted_to_bytes() {
        let info = parse_meminfo(MEMINFO);
        assert_eq!(info.total_bytes, 24_684_084 * 1024);
        assert_eq!(info.available_bytes, 24_149_008 * 1024);
    }

    #[test]
    fn meminfo_without_available_falls_back_to_free_buffers_cached() {
        let info = parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 30 kB\n");
        assert_eq!(info.available_bytes, 150 * 1024);
        assert_eq!(
            parse_meminfo("garbage\n:::\nMemTotal: lots kB"),
            MemInfo::default()
        );
    }

    #[test]
    fn cpu_max_rounds_quota_up() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("200000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("400000"), Some(4));
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cpu_max("x y"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn memory_max_max_means_no_limit() {
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("2147483648\n"), Some(2 << 30));
        assert_eq!(parse_memory_max("nonsense"), None);
    }

    #[test]
    fn os_release_prefers_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nVERSION=\"12 (bookworm)\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(parse_os_release(text), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(parse_os_release("NAME=Alpine\nVERSION='3.20'\n"), "Alpine 3.20");
        assert_eq!(parse_os_release("ID=x\n"), "");
    }

    #[test]
    fn cpuinfo_counts_processors() {
        let text = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(count_cpuinfo_processors(text), 2);
    }

    #[test]
    fn cgroup_paths_are_parsed_and_sanitised() {
        assert_eq!(
            v2_cgroup_path("0::/user.slice/a.scope\n").as_deref(),
            Some("/user.slice/a.scope")
        );
        assert_eq!(v2_cgroup_path("0::/\n"), None);
        assert_eq!(v2_cgroup_path("0::/../../x\n"), None);
        let v1 = "4:memory:/process_api/f768\n1:cpu,cpuacct:/docker/abc\n";
        assert_eq!(v1_cgroup_path(v1, "memory").as_deref(), Some("/process_api/f768"));
        assert_eq!(v1_cgroup_path(v1, "cpu").as_deref(), Some("/docker/abc"));
        assert_eq!(
            ancestor_dirs("/sys/fs/cgroup", Some("/a/b")),
            ["/sys/fs/cgroup", "/sys/fs/cgroup/a", "/sys/fs/cgroup/a/b"]
        );
    }

    #[test]
    fn nvidia_smi_csv_parses_each_gpu() {
        let text =
            "0, NVIDIA H100 80GB HBM3, 81559, 550.54.15\n1, Tesla T4, 15360, 535.104.05\n\nbroken line\n";
        let gpus = parse_nvidia_smi_csv(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].index, 0);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_total_bytes, 81_559 * 1024 * 1024);
        assert_eq!(gpus[0].driver_version, "550.54.15");
        assert_eq!(gpus[1].name, "Tesla T4");
        let unknown = parse_nvidia_smi_csv("0, Some GPU, [N/A], [N/A]\n");
        assert_eq!(unknown[0].memory_total_bytes, 0);
        assert_eq!(unknown[0].driver_version, "");
    }

    #[test]
    fn cuda_version_comes_from_the_header() {
        let header = "+-----------------------------------------------------------------------------+\n\
| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |\n";
        assert_eq!(parse_cuda_version(header).as_deref(), Some("12.4"));
        assert_eq!(parse_cuda_version("CUDA Version: N/A"), None);
        assert_eq!(parse_cuda_version("no gpu here"), None);
    }

    #[test]
    fn paths_are_taken_under_the_root() {
        assert_eq!(
            under(Path::new("/tmp/fx"), "/proc/meminfo"),
            PathBuf::from("/tmp/fx/proc/meminfo")
        );
        assert_eq!(
            under(Path::new("/"), "/proc/meminfo"),
            PathBuf::from("/proc/meminfo")
        );
    }
}
