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
