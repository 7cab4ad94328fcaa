//! Rust builds with the host's cargo, over loopback gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use common::{agent, component, install, request, write};

#[tokio::test]
async fn a_rust_crate_is_built_into_the_runs_target_dir() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
            ),
            ("src/main.rs", "fn main() { println!(\"tiny\"); }\n"),
        ],
    );
    let mut tiny = component("rust", "rust", "", "cargo");
    tiny.install = Some(reporunner_proto::common::v1::Command {
        run: "cargo fetch".into(),
        ..Default::default()
    });
    let (lines, result) = install(&mut agent, request(workspace.path(), tiny, None)).await;
    assert!(result.success, "{result:?}");
    assert!(result.tool.starts_with("cargo 1."), "{}", result.tool);
    assert_eq!(result.env["CARGO_TARGET_DIR"], result.environment_path);
    assert!(
        lines
            .iter()
            .any(|l| l.source == "build" && l.text.contains("Compiling tiny"))
    );
    assert!(
        std::path::Path::new(&result.environment_path)
            .join("debug/tiny")
            .is_file()
    );
    assert!(!workspace.path().join("target").exists());
}

/// A crate is built to run, not to debug: line tables only (backtraces keep
/// files and lines), no variables or types in its debug info, which saves
/// build time and a third of the target dir; `cargo run` gets the same
/// setting and finds the build as it is.
#[tokio::test]
async fn a_rust_crate_is_built_with_line_tables_only() {
    let mut agent = agent().await;
    let workspace = tempfile::tempdir().unwrap();
    write(
        workspace.path(),
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"lines\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
            ),
            (
                "src/main.rs",
                "fn main() { let greeting = String::from(\"lines\"); println!(\"{greeting}\"); }\n",
            ),
        ],
    );
    let (_, result) = install(
        &mut agent,
        request(workspace.path(), component("rust", "rust", "", "cargo"), None),
    )
    .await;
    assert!(result.success, "{result:?}");
    assert_eq!(result.env["CARGO_PROFILE_DEV_DEBUG"], "line-tables-only");
    let binary = std::path::Path::new(&result.environment_path).join("debug/lines");
    let dump = std::process::Command::new("readelf")
        .arg("--debug-dump=info")
        .arg(&binary)
        .output()
        .expect("readelf (binutils) runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let info = String::from_utf8_lossy(&dump.stdout);
    assert!(info.contains("DW_TAG_compile_unit"), "no debug info at all");
    assert!(
        !info.contains("DW_TAG_variable"),
        "full debug info: variables are described"
    );
    // `cargo build` again with the returned environment, as the runner's
    // `cargo run` would: nothing is rebuilt.
    let again = std::process::Command::new("cargo")
        .args(["build", "-v"])
        .current_dir(workspace.path())
        .envs(&result.env)
        .output()
        .unwrap();
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("Fresh lines"), "{stderr}");
}
