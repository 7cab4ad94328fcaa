//! The output of the processes a run starts (its components and their
//! setup commands), recorded as the run's log events, so that it is seen
//! live by `WatchRun` and later by `GetRunLogs` (from the store, long after
//! the runner that ran the process has forgotten it or stopped).

use std::time::Duration;

use reporunner_proto::{agents::runner::v1::LogsRequest, common::v1::LogLine, orchestrator::v1::run_event};

use crate::{clients::RunnerClient, live::Recorder, store::RunChange};

/// The most lines of one process recorded in the run's history; the rest
/// stays with the runner (its log file), and a last line says so.
pub(crate) const MAX_RECORDED_LINES: u64 = 20_000;

/// How long one follow of a process's output may stay open.
const FOLLOW_FOR: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Follows `process_id`'s output at the runner in a task of its own and
/// records each line as a log event of `run_id` with `source`, until the
/// process ends, the run is over, or [`MAX_RECORDED_LINES`] were recorded.
pub(crate) fn record_output(
    runner: &RunnerClient,
    recorder: &Recorder,
    run_id: &str,
    source: &str,
    process_id: &str,
) {
    let runner = runner.clone();
    let recorder = recorder.clone();
    let run_id = run_id.to_owned();
    let source = source.to_owned();
    let request = LogsRequest {
        process_id: process_id.to_owned(),
        follow: true,
        after_sequence: 0,
    };
    tokio::spawn(async move {
        let mut stream = match runner.logs(request, FOLLOW_FOR).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%run_id, %source, %err, "cannot follow a process's output");
                return;
            }
        };
        let mut recorded = 0_u64;
        while let Ok(Some(message)) = stream.message().await {
            let Some(line) = message.line else { continue };
            recorded += 1;
            let line = if recorded > MAX_RECORDED_LINES {
                LogLine {
                    text: format!(
                        "[reporunner] {source} wrote more than {MAX_RECORDED_LINES} lines; \
                         the rest is not kept in the run's history"
                    ),
                    ..line
                }
            } else {
                line
            };
            let event = run_event::Event::Log(LogLine {
                source: source.clone(),
                ..line
            });
            // None: the run is over; its history takes no more lines.
            match recorder.record(&run_id, RunChange::default(), event).await {
                Ok(Some(_)) if recorded <= MAX_RECORDED_LINES => {}
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(%run_id, %source, %err, "cannot record a process's output");
                    return;
                }
            }
        }
    });
}
