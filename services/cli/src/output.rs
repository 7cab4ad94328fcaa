//! Human-readable renderings of contract messages (JSON goes through
//! `reporunner_proto::json`).

use std::fmt::Write as _;

use reporunner_proto::common::v1::{
    BackingServiceKind, Command, Component, ComponentKind, Environment, Platform, Recommendations, RunPlan,
    WheelVariant,
};

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

fn component_kind(kind: i32) -> &'static str {
    match ComponentKind::try_from(kind).unwrap_or(ComponentKind::Unspecified) {
        ComponentKind::Unspecified => "unknown",
        ComponentKind::Web => "web",
        ComponentKind::Worker => "worker",
        ComponentKind::Library => "library",
        ComponentKind::Cli => "cli",
        ComponentKind::Static => "static",
        ComponentKind::Service => "service",
    }
}

fn backing_kind(kind: i32) -> &'static str {
    match BackingServiceKind::try_from(kind).unwrap_or(BackingServiceKind::Unspecified) {
        BackingServiceKind::Unspecified => "unknown",
        BackingServiceKind::Postgresql => "postgresql",
        BackingServiceKind::Mysql => "mysql",
        BackingServiceKind::Redis => "redis",
        BackingServiceKind::Mongodb => "mongodb",
        BackingServiceKind::Rabbitmq => "rabbitmq",
    }
}

fn command_line(label: &str, command: Option<&Command>, out: &mut String) {
    let Some(command) = command.filter(|c| !c.run.is_empty()) else {
        return;
    };
    let dir = if command.working_dir.is_empty() {
        String::new()
    } else {
        format!("  (in {})", command.working_dir)
    };
    let watch = if command.watch_mode { "  [watch mode]" } else { "" };
    let _ = writeln!(out, "    {label:<9}{}{dir}{watch}", command.run);
}

fn component(component: &Component, out: &mut String) {
    let runtime = component.runtime.clone().unwrap_or_default();
    let version = if runtime.version_constraint.is_empty() {
        String::new()
    } else {
        format!(" {}", runtime.version_constraint)
    };
    let _ = writeln!(
        out,
        "{} ({}, {}) at {}  confidence {:.2}",
        component.name,
        component_kind(component.kind),
        component.language,
        component.path,
        component.confidence
    );
    let _ = writeln!(out, "    runtime  {}{version}", runtime.name);
    if !component.package_manager.is_empty() {
        let _ = writeln!(out, "    manager  {}", component.package_manager);
    }
    if !component.frameworks.is_empty() {
        let _ = writeln!(out, "    uses     {}", component.frameworks.join(", "));
    }
    command_line("install", component.install.as_ref(), out);
    command_line("build", component.build.as_ref(), out);
    for setup in &component.setup {
        command_line("setup", Some(setup), out);
    }
    command_line("start", component.start.as_ref(), out);
    command_line("test", component.test.as_ref(), out);
    if component.port != 0 || !component.port_binding.is_empty() {
        let binding = if component.port_binding.is_empty() {
            String::new()
        } else {
            format!(" via {}", component.port_binding)
        };
        let _ = writeln!(out, "    port     {}{binding}", component.port);
    }
    if !component.health_paths.is_empty() {
        let _ = writeln!(out, "    health   {}", component.health_paths.join(", "));
    }
    for service in &component.backing_services {
        let version = if service.version.is_empty() {
            String::new()
        } else {
            format!(" {}", service.version)
        };
        let vars = if service.env_vars.is_empty() {
            String::new()
        } else {
            format!(" ({})", service.env_vars.join(", "))
        };
        let _ = writeln!(out, "    needs    {}{version}{vars}", backing_kind(service.kind));
    }
    if !component.env.is_empty() {
        let vars: Vec<String> = component
            .env
            .iter()
            .map(|v| {
                if v.secret || v.default_value.is_empty() {
                    format!("{}{}", v.name, if v.required { "!" } else { "" })
                } else {
                    format!("{}={}", v.name, v.default_value)
                }
            })
            .collect();
        let _ = writeln!(out, "    env      {}", vars.join(" "));
    }
    if !component.evidence.is_empty() {
        let _ = writeln!(out, "    evidence");
        let rows: Vec<Vec<String>> = component
            .evidence
            .iter()
            .map(|e| {
                let at = if e.line == 0 {
                    e.file.clone()
                } else {
                    format!("{}:{}", e.file, e.line)
                };
                vec![format!("  {}", e.field), at, e.detail.chars().take(70).collect()]
            })
            .collect();
        out.push_str(&table(&["  FIELD", "FILE", "SAID"], &rows));
    }
}

/// The `reporunner analyze` view: components, commands and evidence.
pub fn plan(plan: &RunPlan) -> String {
    let mut out = String::new();
    if plan.components.is_empty() {
        out.push_str("no runnable component found\n");
    }
    for (i, c) in plan.components.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        component(c, &mut out);
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
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
