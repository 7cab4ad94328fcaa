//! What the host can afford, derived from an [`Environment`]. Pure.

use std::path::Path;

use reporunner_proto::common::v1::{Environment, HostInfo, Recommendations, WheelVariant};

/// Bytes in a gibibyte.
pub const GIB: u64 = 1024 * 1024 * 1024;
/// Memory a vector index needs (embedding model plus index build).
pub const VECTOR_INDEX_MIN_MEMORY: u64 = 2 * GIB;
/// CPUs a vector index needs when there is no GPU.
pub const VECTOR_INDEX_MIN_CPUS: u32 = 2;
/// The most parallel jobs recommended, however large the host.
pub const MAX_PARALLELISM: u32 = 16;

/// Recommendations for `env`; `model_present` says whether an embedding model
/// is installed. See [`recommend_with_model_dir`].
pub fn recommend(env: &Environment, model_present: bool) -> Recommendations {
    recommend_with_model_dir(env, model_present, None)
}

/// Recommendations for `env`, naming `model_dir` in the advice when no model
/// is installed there.
pub fn recommend_with_model_dir(
    env: &Environment,
    model_present: bool,
    model_dir: Option<&Path>,
) -> Recommendations {
    let default_host = HostInfo::default();
    let host = env.host.as_ref().unwrap_or(&default_host);
    let memory = usable_memory(host);
    let has_gpu = !env.gpus.is_empty();
    let (vector_index, vector_index_reason) = vector_index(host, memory, has_gpu, model_present, model_dir);
    let (wheel_variant, cuda_tag) = wheel_variant(env);
    Recommendations {
        vector_index,
        vector_index_reason,
        embedding_model_present: model_present,
        wheel_variant: wheel_variant as i32,
        cuda_tag,
        parallelism: parallelism(host.cpus, memory),
        notes: notes(env, host, has_gpu),
    }
}

/// Memory the host can use: what the kernel reports available, capped by the
/// cgroup limit. `None` when unknown (no `/proc/meminfo`).
pub fn usable_memory(host: &HostInfo) -> Option<u64> {
    let available = (host.memory_available_bytes > 0 || host.memory_total_bytes > 0)
        .then_some(host.memory_available_bytes);
    let limit = (host.cgroup_memory_limit_bytes > 0).then_some(host.cgroup_memory_limit_bytes);
    match (available, limit) {
        (Some(available), Some(limit)) => Some(available.min(limit)),
        (Some(available), None) => Some(available),
        (None, limit) => limit,
    }
}

/// Bytes as "1.2 GiB".
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

fn vector_index(
    host: &HostInfo,
    memory: Option<u64>,
    has_gpu: bool,
    model_present: bool,
    model_dir: Option<&Path>,
) -> (bool, String) {
    let mut blockers = Vec::new();
    if !model_present {
        blockers.push(match model_dir {
            Some(dir) => format!(
                "no embedding model installed under {}; run `reporunner models` to install one",
                dir.display()
            ),
            None => "no embedding model directory configured; set model_dir and run `reporunner models` to install one"
                .to_owned(),
        });
    }
    match memory {
        Some(bytes) if bytes < VECTOR_INDEX_MIN_MEMORY => blockers.push(format!(
            "{} of memory available; vector indexing needs {}",
            gib(bytes),
            gib(VECTOR_INDEX_MIN_MEMORY)
        )),
        Some(_) => {}
        None => blockers
            .push("available memory could not be determined; vector indexing needs 2.0 GiB".to_owned()),
    }
    if host.cpus < VECTOR_INDEX_MIN_CPUS && !has_gpu {
        blockers.push(format!(
            "{} CPU{} and no GPU; vector indexing needs {VECTOR_INDEX_MIN_CPUS} CPUs or a GPU",
            host.cpus,
            if host.cpus == 1 { "" } else { "s" }
        ));
    }
    if !blockers.is_empty() {
        return (false, blockers.join("; "));
    }
    let compute = if has_gpu {
        "a GPU".to_owned()
    } else {
        format!("{} CPUs", host.cpus)
    };
    let memory = memory.map_or_else(String::new, gib);
    (
        true,
        format!("embedding model installed, {memory} of memory available and {compute}"),
    )
}

/// CUDA wheels when a GPU reports the CUDA version its driver supports.
fn wheel_variant(env: &Environment) -> (WheelVariant, String) {
    env.gpus
        .iter()
        .find_map(|gpu| cuda_tag(&gpu.cuda_version))
        .map_or((WheelVariant::Cpu, String::new()), |tag| {
            (WheelVariant::Cuda, tag)
        })
}

/// "12.4" → "cu124"; `None` when the version is not "major.minor[...]".
pub fn cuda_tag(cuda_version: &str) -> Option<String> {
    let mut parts = cuda_version.trim().split('.');
    let major = parts
        .next()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    let minor = parts
        .next()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    Some(format!("cu{major}{minor}"))
}

/// Jobs at once: one per CPU (at most [`MAX_PARALLELISM`]) and one per GiB of
/// usable memory, at least one.
pub fn parallelism(cpus: u32, memory: Option<u64>) -> u32 {
    let by_cpu = cpus.clamp(1, MAX_PARALLELISM);
    let by_memory = memory.map_or(u32::MAX, |bytes| {
        u32::try_from(bytes / GIB).unwrap_or(u32::MAX).max(1)
    });
    by_cpu.min(by_memory)
}

fn notes(env: &Environment, host: &HostInfo, has_gpu: bool) -> Vec<String> {
    let has = |name: &str| env.toolchains.iter().any(|t| t.name == name);
    let has_python = env
        .toolchains
        .iter()
        .any(|t| t.name == "python3" || t.name.starts_with("python3."));
    let mut notes = Vec::new();
    if !has_python {
        notes.push("no python3 on PATH; Python projects cannot be set up until one is installed".to_owned());
    } else if !has("uv") {
        if has("pip") || has("pip3") {
            notes.push("uv not found; pip will be used, which resolves and installs more slowly".to_owned());
        } else {
            notes.push("neither uv nor pip found; Python dependencies cannot be installed".to_owned());
        }
    }
    if !has("git") {
        notes.push("git not found; repositories cannot be cloned".to_owned());
    }
    if host.cgroup_memory_limit_bytes > 0
        && host.memory_total_bytes > 0
        && host.cgroup_memory_limit_bytes < host.memory_total_bytes
    {
        notes.push(format!(
            "memory is limited to {} by the cgroup, out of {} on the host",
            gib(host.cgroup_memory_limit_bytes),
            gib(host.memory_total_bytes)
        ));
    }
    if has_gpu && wheel_variant(env).0 == WheelVariant::Cpu {
        notes.push(
            "a GPU was found but its driver reported no CUDA version; CPU wheels are recommended".to_owned(),
        );
    }
    for registry in env.registries.iter().filter(|r| !r.reachable) {
        notes.push(format!(
            "registry {} unreachable: {}",
            registry.name, registry.error
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use reporunner_proto::common::v1::{Gpu, Registry, Toolchain};

    use super::*;

    fn tool(name: &str) -> Toolchain {
        Toolchain {
            name: name.into(),
            version: "1.0".into(),
            path: format!("/usr/bin/{name}"),
        }
    }

    fn env(cpus: u32, available: u64) -> Environment {
        Environment {
            host: Some(HostInfo {
                cpus,
                memory_total_bytes: 16 * GIB,
                memory_available_bytes: available,
                ..HostInfo::default()
            }),
            toolchains: vec![tool("python3.11"), tool("uv"), tool("git")],
            ..Environment::default()
        }
    }

    fn gpu(cuda: &str) -> Gpu {
        Gpu {
            index: 0,
            name: "NVIDIA H100".into(),
            memory_total_bytes: 80 * GIB,
            driver_version: "550.54.15".into(),
            cuda_version: cuda.into(),
        }
    }

    #[test]
    fn well_provisioned_host_gets_a_vector_index() {
        let rec = recommend(&env(8, 12 * GIB), true);
        assert!(rec.vector_index, "{}", rec.vector_index_reason);
        assert_eq!(
            rec.vector_index_reason,
            "embedding model installed, 12.0 GiB of memory available and 8 CPUs"
        );
        assert!(rec.embedding_model_present);
        assert_eq!(rec.parallelism, 8);
        assert_eq!(rec.wheel_variant(), WheelVariant::Cpu);
        assert_eq!(rec.cuda_tag, "");
        assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    }

    #[test]
    fn missing_model_blocks_and_names_the_directory() {
        let rec = recommend_with_model_dir(&env(8, 12 * GIB), false, Some(Path::new("/var/lib/models")));
        assert!(!rec.vector_index);
        assert!(
            rec.vector_index_reason
                .contains("no embedding model installed under /var/lib/models")
        );
        assert!(rec.vector_index_reason.contains("reporunner models"));
        assert!(!rec.embedding_model_present);
    }

    #[test]
    fn low_memory_blocks_with_numbers() {
        let rec = recommend(&env(8, GIB + GIB / 5), true);
        assert!(!rec.vector_index);
        assert_eq!(
            rec.vector_index_reason,
            "1.2 GiB of memory available; vector indexing needs 2.0 GiB"
        );
        assert_eq!(rec.parallelism, 1);
    }

    #[test]
    fn cgroup_limit_caps_available_memory() {
        let mut env = env(8, 12 * GIB);
        if let Some(host) = env.host.as_mut() {
            host.cgroup_memory_limit_bytes = GIB;
        }
        let rec = recommend(&env, true);
        assert!(!rec.vector_index);
        assert!(
            rec.vector_index_reason.starts_with("1.0 GiB of memory available"),
            "{}",
            rec.vector_index_reason
        );
        assert_eq!(rec.parallelism, 1);
        assert!(
            rec.notes
                .iter()
                .any(|n| n.contains("limited to 1.0 GiB by the cgroup")),
            "{:?}",
            rec.notes
        );
    }

    #[test]
    fn one_cpu_blocks_unless_there_is_a_gpu() {
        let rec = recommend(&env(1, 8 * GIB), true);
        assert!(!rec.vector_index);
        assert_eq!(
            rec.vector_index_reason,
            "1 CPU and no GPU; vector indexing needs 2 CPUs or a GPU"
        );

        let mut with_gpu = env(1, 8 * GIB);
        with_gpu.gpus.push(gpu("12.4"));
        let rec = recommend(&with_gpu, true);
        assert!(rec.vector_index, "{}", rec.vector_index_reason);
        assert!(rec.vector_index_reason.ends_with("and a GPU"));
    }

    #[test]
    fn every_blocker_is_reported() {
        let rec = recommend(&env(1, GIB), false);
        let reason = &rec.vector_index_reason;
        assert!(
            reason.starts_with("no embedding model directory configured"),
            "{reason}"
        );
        assert!(reason.contains("1.0 GiB of memory available"), "{reason}");
        assert!(reason.contains("1 CPU and no GPU"), "{reason}");
    }

    #[test]
    fn unknown_memory_is_not_assumed_enough() {
        let mut env = env(4, 0);
        env.host = Some(HostInfo {
            cpus: 4,
            ..HostInfo::default()
        });
        let rec = recommend(&env, true);
        assert!(!rec.vector_index);
        assert!(rec.vector_index_reason.contains("could not be determined"));
        assert_eq!(rec.parallelism, 4);
    }

    #[test]
    fn gpu_with_cuda_picks_cuda_wheels() {
        let mut env = env(8, 12 * GIB);
        env.gpus.push(gpu("12.4"));
        let rec = recommend(&env, true);
        assert_eq!(rec.wheel_variant(), WheelVariant::Cuda);
        assert_eq!(rec.cuda_tag, "cu124");

        env.gpus = vec![gpu("")];
        let rec = recommend(&env, true);
        assert_eq!(rec.wheel_variant(), WheelVariant::Cpu);
        assert!(rec.notes.iter().any(|n| n.contains("no CUDA version")));
    }

    #[test]
    fn cuda_tags() {
        assert_eq!(cuda_tag("12.4").as_deref(), Some("cu124"));
        assert_eq!(cuda_tag("11.8.0").as_deref(), Some("cu118"));
        assert_eq!(cuda_tag("12"), None);
        assert_eq!(cuda_tag("N/A"), None);
    }

    #[test]
    fn parallelism_is_bounded_by_cpus_and_memory() {
        assert_eq!(parallelism(64, Some(128 * GIB)), 16);
        assert_eq!(parallelism(0, Some(128 * GIB)), 1);
        assert_eq!(parallelism(8, Some(3 * GIB + GIB / 2)), 3);
        assert_eq!(parallelism(8, Some(100)), 1);
        assert_eq!(parallelism(8, None), 8);
    }

    #[test]
    fn notes_name_missing_tools_and_unreachable_registries() {
        let mut env = env(4, 8 * GIB);
        env.toolchains = vec![tool("pip")];
        env.registries.push(Registry {
            name: "pypi".into(),
            url: "https://pypi.org/simple/pip/".into(),
            reachable: false,
            latency_ms: 0,
            error: "timed out after 2000 ms".into(),
        });
        let rec = recommend(&env, true);
        assert!(
            rec.notes.iter().any(|n| n.starts_with("no python3 on PATH")),
            "{:?}",
            rec.notes
        );
        assert!(rec.notes.iter().any(|n| n.starts_with("git not found")));
        assert!(
            rec.notes
                .contains(&"registry pypi unreachable: timed out after 2000 ms".to_owned())
        );

        env.toolchains = vec![tool("python3"), tool("pip"), tool("git")];
        let rec = recommend(&env, true);
        assert!(
            rec.notes
                .iter()
                .any(|n| n.starts_with("uv not found; pip will be used")),
            "{:?}",
            rec.notes
        );
    }
}
