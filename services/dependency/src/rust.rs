//! Rust builds: the plan's build command (else `cargo build`) with the
//! host's cargo, into a per-run target dir (`<env_dir>/<run_id>/<component>/
//! target`). `CARGO_HOME` stays the user's, so crates downloaded once are
//! reused. A `rust-toolchain.toml` naming a toolchain this host lacks is not
//! downloaded: rustup's auto-install is off and the default toolchain is
//! used instead, with a log line saying so.

use std::{path::Path, time::Duration};

use crate::{
    Failure, Job, Report, Step,
    exec::{self, Cmd, LogSink},
};

mod sqlx;

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the component.
pub(crate) async fn install(job: &Job, sink: &mut LogSink, report: &mut Report) -> Step {
    let cargo = exec::which("cargo", &job.base_path)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".cargo/bin/cargo"))
                .filter(|p| p.is_file())
        })
        .ok_or_else(|| Failure::new("cargo is not installed on this host"))?;
    let target = job.env_root.join("target");
    report.environment_path.clone_from(&target);
    report.disk_paths = vec![target.clone()];
    let cargo_bin = cargo.parent().map(Path::to_path_buf).unwrap_or_default();
    report
        .env
        .insert("CARGO_TARGET_DIR".into(), target.display().to_string());
    report.env.insert("RUSTUP_AUTO_INSTALL".into(), "0".into());
    if job.owner.is_some() {
        // The owner's own cargo home (registry and downloaded crates), kept
        // between runs and writable for this owner's steps only; the runner
        // binds it for `cargo run` at start.
        let home = job.cache("cargo");
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", home.display())))?;
        report.env.insert("CARGO_HOME".into(), home.display().to_string());
    }
    report.env.insert(
        "PATH".into(),
        format!("{}:{}", cargo_bin.display(), job.base_path),
    );

    let version_here = probe(&cargo, &job.dir, &report.env).await;
    let version = match version_here {
        Some(v) => v,
        None => {
            let default = probe(&cargo, Path::new("/"), &report.env)
                .await
                .ok_or_else(|| Failure::new("`cargo --version` fails on this host"))?;
            let toolchain = rustup_default(&cargo_bin, &report.env).await;
            if let Some(toolchain) = toolchain {
                sink.system(
                    "build",
                    format!("the repository's rust-toolchain is not installed here; using the default toolchain {toolchain} (toolchains are never downloaded)"),
                )
                .await;
                report.env.insert("RUSTUP_TOOLCHAIN".into(), toolchain);
            }
            default
        }
    };
    report.tool = version.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let minimum = job
        .component
        .runtime
        .as_ref()
        .and_then(|r| r.version_constraint.strip_prefix(">="))
        .map(str::trim);
    if let Some(minimum) = minimum
        && let Some(host) = version.split_whitespace().nth(1)
        && older_than(host, minimum)
    {
        // Refused before anything is fetched or built: toolchains are never
        // downloaded, and cargo would only say so after resolving.
        return Err(Failure::new(format!(
            "Cargo.toml's rust-version is {minimum}, and this host's Rust is {host}, older than it allows \
             (Rust toolchains are never downloaded; install a Rust that satisfies it)"
        )));
    }
    if names_line_tables_only(&version) {
        // Built to run, not to step through in a debugger: line tables
        // only (a panic's backtrace keeps its files and lines). A tenth
        // less build time and a third less target dir than full debug
        // info. The same variable reaches `cargo run` and `cargo test`,
        // so they find the build as it is.
        report
            .env
            .insert("CARGO_PROFILE_DEV_DEBUG".into(), "line-tables-only".into());
    }
    job.custom_install(sink, report).await?;
    let checked = sqlx::prepare(job, sink, report).await?;
    job.build(sink, report, Some("cargo build")).await?;
    if job.with_tests {
        // The tests and their dev-dependencies are fetched and built here,
        // where the network and the build's limits are, not in the test step.
        let test = job.component.test.as_ref();
        let line = test_build_line(test.map_or("", |t| t.run.as_str()));
        let cmd = Cmd::new("sh", &job.command_dir(test), "build")
            .args(["-c", line.as_str()])
            .envs(&job.build_env(report));
        job.step(sink, report, &cmd).await?;
    }
    if let Some(checked) = checked {
        sqlx::after_build(job, sink, report, &checked).await?;
    }
    Ok(())
}

/// Whether the release `host` (`1.95.0`, `1.97.0-nightly`) is older than
/// `minimum` (a rust-version: `1.96`, `1.80.1`); an unreadable one is not.
fn older_than(host: &str, minimum: &str) -> bool {
    let numbers = |v: &str| -> Option<Vec<u64>> {
        let release = v.split(['-', '+']).next()?;
        let parts: Option<Vec<u64>> = release.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty() && p.len() <= 3).map(|mut p| {
            p.resize(3, 0);
            p
        })
    };
    match (numbers(host), numbers(minimum)) {
        (Some(host), Some(minimum)) => host < minimum,
        _ => false,
    }
}

/// Whether this cargo (`cargo 1.95.0 (…)`) knows the debug level
/// `line-tables-only` (cargo 1.71 and later).
fn names_line_tables_only(version: &str) -> bool {
    let Some(number) = version.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = number.split(['.', '-']).map(str::parse::<u32>);
    matches!((parts.next(), parts.next()), (Some(Ok(1)), Some(Ok(minor))) if minor >= 71)
}

/// The build of what `test` (the plan's test command) runs: `cargo test
/// <args> --no-run` when it is `cargo test`, else every test target.
fn test_build_line(test: &str) -> String {
    let test = test.trim();
    match test.strip_prefix("cargo test") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            // Arguments after `--` go to the test binaries, not to cargo.
            let cargo_args = rest.split(" -- ").next().unwrap_or_default().trim();
            if cargo_args.is_empty() {
                "cargo test --no-run".to_owned()
            } else {
                format!("cargo test {cargo_args} --no-run")
            }
        }
        _ => "cargo test --no-run".to_owned(),
    }
}

async fn probe(cargo: &Path, dir: &Path, env: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let mut command = tokio::process::Command::new(cargo);
    command
        .arg("--version")
        .current_dir(dir)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The name of rustup's default toolchain, e.g. "stable-x86_64-unknown-linux-gnu".
async fn rustup_default(
    cargo_bin: &Path,
    env: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let mut command = tokio::process::Command::new(cargo_bin.join("rustup"));
    command
        .arg("default")
        .current_dir("/")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::{names_line_tables_only, older_than, test_build_line};

    #[test]
    fn a_host_rust_older_than_the_rust_version_is_named() {
        assert!(older_than("1.95.0", "1.96"));
        assert!(older_than("1.95.0", "1.95.1"));
        assert!(!older_than("1.95.0", "1.95"));
        assert!(!older_than("1.96.0", "1.96"));
        assert!(!older_than("1.97.0-nightly", "1.96"));
        assert!(older_than("1.80.0-beta.2", "1.81"));
        assert!(!older_than("1.95.0", "stable"), "not a version: no refusal");
        assert!(!older_than("1.95.0", "1.2.3.4"));
    }

    #[test]
    fn line_tables_only_is_named_from_cargo_1_71_on() {
        assert!(names_line_tables_only("cargo 1.95.0 (f2932725b 2026-01-01)"));
        assert!(names_line_tables_only("cargo 1.71.0"));
        assert!(names_line_tables_only("cargo 1.80.0-nightly (abc 2024-05-01)"));
        assert!(!names_line_tables_only("cargo 1.70.0 (ec8a8a0ca 2023-04-25)"));
        assert!(!names_line_tables_only("cargo"));
        assert!(!names_line_tables_only("cargo 2.0.0"));
    }

    #[test]
    fn the_test_build_compiles_what_the_test_command_runs() {
        assert_eq!(test_build_line("cargo test"), "cargo test --no-run");
        assert_eq!(
            test_build_line("cargo test --workspace -- --nocapture"),
            "cargo test --workspace --no-run"
        );
        assert_eq!(
            test_build_line("cargo test -p core"),
            "cargo test -p core --no-run"
        );
        assert_eq!(test_build_line("make test"), "cargo test --no-run");
        assert_eq!(test_build_line("cargo tests"), "cargo test --no-run");
    }
}
