//! Human-readable renderings of contract messages (JSON goes through
//! `reporunner_proto::json`).

use std::fmt::Write as _;

use reporunner_proto::common::v1::{Environment, Platform, Recommendations, WheelVariant};

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

fn platform_name(value: i32) -> &'static str {
    match Platform::try_from(value).unwrap_or(Platform::Unspecified) {
        Platform::Unspecified => "unknown",
        Platform::Local => "local",
        Platform::Container => "container",
        Platform::Kubernetes => "kubernetes",
        Platform::Colab => "colab",
        Platform::Aws => "aws",
        Platform::Gcp => "gcp",
        Platform::Azure => "azure",
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The `reporunner env` table.
pub fn environment(env: &Environment, rec: Option<&Recommendations>) -> String {
    let mut out = String::new();
    let host = env.host.clone().unwrap_or_default();
    let overridden = if env.platform_overridden {
        " (override)"
    } else {
        ""
    };
    let _ = writeln!(out, "Platform      {}{overridden}", platform_name(env.platform));
    for signal in &env.platform_signals {
        let _ = writeln!(
            out,
            "              - {} ({})",
            signal.source,
            platform_name(signal.platform)
        );
    }
    let _ = writeln!(
        out,
        "OS            {} {} (kernel {})",
        host.os, host.os_release, host.kernel_version
    );
    let _ = writeln!(out, "Arch          {}", host.arch);
    let _ = writeln!(out, "Hostname      {}", host.hostname);
    let _ = writeln!(out, "CPUs          {}", host.cpus);
    let _ = writeln!(
        out,
        "Memory        {} total, {} available{}",
        gib(host.memory_total_bytes),
        gib(host.memory_available_bytes),
        if host.cgroup_memory_limit_bytes > 0 {
            format!(", cgroup limit {}", gib(host.cgroup_memory_limit_bytes))
        } else {
            String::new()
        }
    );
    if env.gpus.is_empty() {
        let _ = writeln!(out, "GPUs          none");
    } else {
        for gpu in &env.gpus {
            let _ = writeln!(
                out,
                "GPU {}         {} ({}, driver {}, CUDA {})",
                gpu.index,
                gpu.name,
                gib(gpu.memory_total_bytes),
                gpu.driver_version,
                gpu.cuda_version
            );
        }
    }
    let _ = writeln!(out, "\nToolchains");
    let rows: Vec<Vec<String>> = env
        .toolchains
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                if t.version.is_empty() {
                    "?".into()
                } else {
                    t.version.clone()
                },
                t.path.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "VERSION", "PATH"], &rows));
    if !env.registries.is_empty() {
        let _ = writeln!(out, "\nRegistries");
        let rows: Vec<Vec<String>> = env
            .registries
            .iter()
            .map(|r| {
                let state = if r.reachable {
                    format!("reachable ({} ms)", r.latency_ms)
                } else {
                    r.error.clone()
                };
                vec![r.name.clone(), state, r.url.clone()]
            })
            .collect();
        out.push_str(&table(&["NAME", "STATE", "URL"], &rows));
    }
    if let Some(rec) = rec {
        let _ = writeln!(out, "\nRecommendations");
        let _ = writeln!(
            out,
            "  vector index  {} ({})",
            if rec.vector_index { "yes" } else { "no" },
            rec.vector_index_reason
        );
        let wheels = match WheelVariant::try_from(rec.wheel_variant).unwrap_or(WheelVariant::Unspecified) {
            WheelVariant::Cuda => format!("CUDA ({})", rec.cuda_tag),
            WheelVariant::Cpu | WheelVariant::Unspecified => "CPU".to_owned(),
        };
        let _ = writeln!(out, "  wheels        {wheels}");
        let _ = writeln!(out, "  parallelism   {}", rec.parallelism);
        for note in &rec.notes {
            let _ = writeln!(out, "  note          {note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reporunner_proto::common::v1::{HostInfo, Toolchain};

    #[test]
    fn environment_table_names_platform_and_tools() {
        let env = Environment {
            platform: Platform::Kubernetes as i32,
            host: Some(HostInfo {
                cpus: 4,
                memory_total_bytes: 8 << 30,
                ..Default::default()
            }),
            toolchains: vec![Toolchain {
                name: "uv".into(),
                version: "0.5.1".into(),
                path: "/usr/bin/uv".into(),
            }],
            ..Default::default()
        };
        let text = environment(&env, None);
        assert!(text.contains("Platform      kubernetes"), "{text}");
        assert!(text.contains("8.0 GiB total"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("uv") && l.contains("0.5.1") && l.contains("/usr/bin/uv")),
            "{text}"
        );
    }
}
