//! Prints the plan for a directory: `cargo run -p reporunner-analyzer --example analyze -- DIR [json|dockerfile|compose|devcontainer|procfile]`,
//! or each detector's passes: `... --example analyze -- --passes`.

use std::path::PathBuf;

use reporunner_analyzer::{AnalyzerConfig, ExportFormat, analyze_dir, detector_passes, export_plan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let first = args
        .next()
        .ok_or("usage: analyze DIR [format] | analyze --passes")?;
    if first == "--passes" {
        for (stack, passes) in detector_passes() {
            println!("{stack}: {}", passes.join(" → "));
        }
        return Ok(());
    }
    let dir = PathBuf::from(first);
    let dir = std::fs::canonicalize(dir)?;
    let mode = args.next();
    if mode.as_deref() == Some("summary") {
        let plan = analyze_dir(&dir, None, &AnalyzerConfig::default())?;
        for c in &plan.components {
            let show = |c: &Option<reporunner_proto::common::v1::Command>| {
                c.as_ref().map_or(String::from("-"), |c| {
                    format!(
                        "{}{}{}",
                        c.run,
                        if c.watch_mode { " [watch]" } else { "" },
                        if c.working_dir.is_empty() {
                            String::new()
                        } else {
                            format!(" (in {})", c.working_dir)
                        }
                    )
                })
            };
            let rt = c
                .runtime
                .as_ref()
                .map_or(String::new(), |r| format!("{} {}", r.name, r.version_constraint));
            println!(
                "== {} [{}] kind={} lang={} rt=({}) pm={} fw={:?} conf={}",
                c.name, c.path, c.kind, c.language, rt, c.package_manager, c.frameworks, c.confidence
            );
            println!(
                "   install: {}
   build:   {}
   start:   {}
   test:    {}",
                show(&c.install),
                show(&c.build),
                show(&c.start),
                show(&c.test)
            );
            println!(
                "   setup: {:?}  port: {} binding: {} health: {:?}",
                c.setup.iter().map(|s| s.run.as_str()).collect::<Vec<_>>(),
                c.port,
                c.port_binding,
                c.health_paths
            );
            let env: Vec<String> = c
                .env
                .iter()
                .map(|e| {
                    format!(
                        "{}={}{}{}",
                        e.name,
                        e.default_value,
                        if e.required { "!" } else { "" },
                        if e.secret { "*" } else { "" }
                    )
                })
                .collect();
            println!("   env: {}", env.join(" "));
            let bs: Vec<String> = c
                .backing_services
                .iter()
                .map(|b| format!("{}:{}:{:?}", b.kind, b.version, b.env_vars))
                .collect();
            println!("   backing: {}", bs.join(" "));
            let start_ev: Vec<String> = c
                .evidence
                .iter()
                .filter(|e| e.field == "start")
                .map(|e| format!("{}:{} ({})", e.file, e.line, e.weight))
                .collect();
            println!("   start evidence: {}", start_ev.join(", "));
        }
        for w in &plan.warnings {
            println!("!! {w}");
        }
        return Ok(());
    }
    let format = match mode.as_deref() {
        Some("dockerfile") => ExportFormat::Dockerfile,
        Some("compose") => ExportFormat::Compose,
        Some("devcontainer") => ExportFormat::Devcontainer,
        Some("procfile") => ExportFormat::Procfile,
        _ => ExportFormat::Json,
    };
    let started = std::time::Instant::now();
    let plan = analyze_dir(&dir, None, &AnalyzerConfig::default())?;
    let elapsed = started.elapsed();
    println!("{}", export_plan(&plan, format)?.content);
    eprintln!("analyzed in {} ms", elapsed.as_millis());
    Ok(())
}
