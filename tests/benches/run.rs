//! Time to healthy for goal START on the Flask fixture (`tests/fixtures/
//! run-flask`) through the whole in-process mesh: cold (an empty dependency
//! cache and tools dir: uv and every wheel downloaded) against warm (the
//! same mesh again: the cache is filled). Figures are measured in the same
//! run and printed with their ratio.

use std::time::{Duration, Instant};

use reporunner_node::ServiceName;
use reporunner_proto::orchestrator::v1::{
    CreateRunRequest, GetRunRequest, RepoSource, RunGoal, RunState, StopRunRequest, repo_source::Source,
};
use reporunner_tests::Sandbox;

const WARM_RUNS: usize = 2;
const LIMIT: Duration = Duration::from_secs(600);

/// CreateRun to RUNNING, then StopRun (the Free tier allows one run at a time).
async fn time_to_healthy(mesh: &Sandbox) -> anyhow::Result<Duration> {
    let mut client = mesh.orchestrator();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/run-flask");
    let started = Instant::now();
    let run = client
        .create_run(mesh.request(CreateRunRequest {
            source: Some(RepoSource {
                source: Some(Source::LocalPath(fixture.into())),
                r#ref: String::new(),
            }),
            goal: RunGoal::Start.into(),
            ..CreateRunRequest::default()
        }))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    let healthy = loop {
        let now = client
            .get_run(mesh.request(GetRunRequest {
                run_id: run.id.clone(),
            }))
            .await?
            .into_inner()
            .run
            .ok_or_else(|| anyhow::anyhow!("no run"))?;
        match now.state() {
            RunState::Running => break started.elapsed(),
            RunState::Failed | RunState::Stopped | RunState::Interrupted | RunState::Succeeded => {
                anyhow::bail!("the run ended as {:?}: {}", now.state(), now.error)
            }
            _ if started.elapsed() > LIMIT => anyhow::bail!("not healthy within {LIMIT:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    client
        .stop_run(mesh.request(StopRunRequest { run_id: run.id }))
        .await?;
    Ok(healthy)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let cache = tempfile::tempdir()?;
        let cache_dir = cache.path().to_path_buf();
        let mesh = Sandbox::builder()
            .with_all(ServiceName::ALL)
            .settings(|s| {
                s.dependency.cache_dir = cache_dir.join("cache");
                s.dependency.tools_dir = cache_dir.join("tools");
            })
            .start()
            .await?;
        let cold = time_to_healthy(&mesh).await?;
        let mut warm = Vec::with_capacity(WARM_RUNS);
        for _ in 0..WARM_RUNS {
            warm.push(time_to_healthy(&mesh).await?);
        }
        let best = warm.iter().min().copied().unwrap_or(cold);
        println!("run-flask START to healthy (CreateRun → RUNNING, whole mesh in-process)");
        println!(
            "  cold (empty dependency cache and tools): {:>8.2} s",
            cold.as_secs_f64()
        );
        for (i, t) in warm.iter().enumerate() {
            println!(
                "  warm #{}:                                {:>8.2} s",
                i + 1,
                t.as_secs_f64()
            );
        }
        println!(
            "  cold / best warm:                        {:>8.2}x",
            cold.as_secs_f64() / best.as_secs_f64().max(f64::EPSILON)
        );
        mesh.stop().await?;
        Ok(())
    })
}
