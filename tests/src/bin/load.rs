//! `make load USERS=1000 SECONDS=60`: the load tool (`reporunner_tests::load`)
//! against a mesh in this process, with the echo reference; prints the
//! report as Markdown and writes it to `--out` when given.
#![forbid(unsafe_code)]

use std::time::Duration;

use clap::Parser;
use reporunner_tests::load::{LoadConfig, run};

/// As `reporunner serve` allocates (see the workspace's `mimalloc` entry).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "N concurrent users for T seconds through the orchestrator, against a bare tonic echo")]
struct Args {
    /// Concurrent users (each a premium account of its own).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// How long the load runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// How long the echo reference runs, in seconds (default: the same, at most 30).
    #[arg(long)]
    echo_seconds: Option<u64>,
    /// How often RSS and open files are sampled, in seconds.
    #[arg(long, default_value_t = 10)]
    sample_seconds: u64,
    /// Also write the report here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Exit non-zero when any call failed.
    #[arg(long)]
    fail_on_error: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=100_000).contains(&args.users),
        "--users must be between 1 and 100000"
    );
    anyhow::ensure!(
        (1..=86_400).contains(&args.seconds),
        "--seconds must be between 1 and 86400"
    );
    let config = LoadConfig {
        users: args.users,
        duration: Duration::from_secs(args.seconds),
        echo_duration: Duration::from_secs(args.echo_seconds.unwrap_or(args.seconds.min(30)).max(1)),
        sample_every: Duration::from_secs(args.sample_seconds.max(1)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(config))?;
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = args.out {
        std::fs::write(&path, &text)?;
    }
    if args.fail_on_error && report.mesh.error_count() > 0 {
        anyhow::bail!("{} calls failed", report.mesh.error_count());
    }
    Ok(())
}
