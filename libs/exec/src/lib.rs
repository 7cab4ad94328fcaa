//! One way to run a short host command to completion, bounded.
//!
//! [`run_bounded`] starts a [`Command`] with stdin closed, as the leader of a
//! process group of its own (`process_group(0)`), keeps at most
//! [`Bounds::max_output`] bytes of stdout and of stderr (the rest is read and
//! dropped, so the command never blocks on a full pipe), and waits until it
//! exits and its output is closed, or until the deadline. At the deadline the
//! whole group is killed (helpers the command started die with it) and the
//! answer is [`ExecError::TimedOut`].
//!
//! The agents use it for version probes, `git`, `initdb`/`pg_ctl`/`psql` and
//! the like: commands whose whole output is read once they end. Streamed,
//! supervised processes are not its business.
#![forbid(unsafe_code)]

use std::{
    io,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    process::Command,
};

/// What bounds one command: a deadline, the bytes kept of each output
/// stream, which streams are read at all, and whether its process group is
/// killed after a normal exit too.
#[derive(Clone, Debug)]
pub struct Bounds {
    deadline: Instant,
    budget: Duration,
    max_output: usize,
    stdout: bool,
    stderr: bool,
    kill_group_after_exit: bool,
}

/// Bytes kept of each stream unless [`Bounds::max_output`] says otherwise.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

impl Bounds {
    /// At most `timeout` from now.
    pub fn within(timeout: Duration) -> Self {
        Self::until_with_budget(Instant::now() + timeout, timeout)
    }

    /// Until `deadline` (a deadline in the past times out at once).
    pub fn until(deadline: Instant) -> Self {
        Self::until_with_budget(deadline, deadline.saturating_duration_since(Instant::now()))
    }

    fn until_with_budget(deadline: Instant, budget: Duration) -> Self {
        Self {
            deadline,
            budget,
            max_output: DEFAULT_MAX_OUTPUT,
            stdout: true,
            stderr: true,
            kill_group_after_exit: false,
        }
    }

    /// Keeps at most `bytes` of stdout and at most `bytes` of stderr.
    #[must_use]
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.max_output = bytes;
        self
    }

    /// Sends stdout to `/dev/null` (nothing of it is read).
    #[must_use]
    pub fn discard_stdout(mut self) -> Self {
        self.stdout = false;
        self
    }

    /// Sends stdout and stderr to `/dev/null`: a command whose answer is its
    /// exit status alone. A daemon it leaves behind cannot then hold the
    /// call open through a pipe.
    #[must_use]
    pub fn discard_output(mut self) -> Self {
        self.stdout = false;
        self.stderr = false;
        self
    }

    /// Kills the process group after a normal exit too, so that nothing the
    /// command started in the background outlives it.
    #[must_use]
    pub fn kill_group_after_exit(mut self) -> Self {
        self.kill_group_after_exit = true;
        self
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// How a bounded command ended, when it ended by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    /// At most [`Bounds::max_output`] bytes (empty when discarded).
    pub stdout: Vec<u8>,
    /// At most [`Bounds::max_output`] bytes (empty when discarded).
    pub stderr: Vec<u8>,
    /// Stdout went on past what was kept.
    pub stdout_cut: bool,
    /// Stderr went on past what was kept.
    pub stderr_cut: bool,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its exit code; `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The kept stdout, lossy UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The kept stderr, lossy UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a bounded command gave no [`Output`].
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started (`source.kind()` is `NotFound` for a missing
    /// program).
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The deadline passed; its process group was killed.
    #[error("timed out after {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// Waiting for it or reading its output failed.
    #[error("could not wait for it: {0}")]
    Io(#[source] io::Error),
}

/// Runs `command` within `bounds` (see the crate docs). Stdin, stdout,
/// stderr and the process group are set here, over what `command` says.
pub async fn run_bounded(mut command: Command, bounds: &Bounds) -> Result<Output, ExecError> {
    let piped_or_null = |read: bool| if read { Stdio::piped() } else { Stdio::null() };
    command
        .stdin(Stdio::null())
        .stdout(piped_or_null(bounds.stdout))
        .stderr(piped_or_null(bounds.stderr))
        .process_group(0)
        .kill_on_drop(true);
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .map_err(|source| ExecError::Spawn { program, source })?;
    let pgid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let limit = bounds.max_output;
    let work = async {
        tokio::join!(
            read_capped(stdout, limit),
            read_capped(stderr, limit),
            child.wait()
        )
    };
    let finished = tokio::time::timeout_at(bounds.deadline.into(), work).await;
    let Ok((stdout, stderr, status)) = finished else {
        // The leader is not reaped yet (its wait was pending), so the group
        // id is still its own; dropping `child` then kills the leader too.
        if let Some(pgid) = pgid {
            kill_group(pgid);
        }
        return Err(ExecError::TimedOut(bounds.budget));
    };
    if bounds.kill_group_after_exit
        && let Some(pgid) = pgid
    {
        kill_group(pgid);
    }
    let status = status.map_err(ExecError::Io)?;
    let (stdout, stdout_cut) = stdout.map_err(ExecError::Io)?;
    let (stderr, stderr_cut) = stderr.map_err(ExecError::Io)?;
    Ok(Output {
        status,
        stdout,
        stderr,
        stdout_cut,
        stderr_cut,
    })
}

/// Sends SIGKILL to every process of group `pgid`; a group that is gone
/// already is fine. Ids that do not name a child's group (0, 1, larger than
/// `i32::MAX`) are ignored.
pub fn kill_group(pgid: u32) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    if raw > 1 {
        let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

/// Reads the first `limit` bytes of `reader`, then drains the rest so the
/// writer never blocks on a full pipe; whether anything was dropped.
async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>, limit: usize) -> io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    (&mut reader)
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut kept)
        .await?;
    let dropped = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await?;
    Ok((kept, dropped > 0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    /// Whether `pid` is a live (not zombie) process.
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    }

    async fn gone_soon(pid: u32) -> bool {
        for _ in 0..50 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn exit_codes_and_both_streams_come_back() {
        let out = run_bounded(
            sh("echo out; echo err >&2; exit 3"),
            &Bounds::within(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        assert_eq!(out.code(), Some(3));
        assert!(!out.success());
        assert_eq!(out.stdout_text(), "out\n");
        assert_eq!(out.stderr_text(), "err\n");
        assert!(!out.stdout_cut && !out.stderr_cut);
    }

    #[tokio::test]
    async fn output_is_cut_at_the_bound_and_the_rest_drained() {
        // 1 MiB is far more than a pipe holds: an undrained writer would
        // block and the call would time out instead.
        let out = run_bounded(
            sh("head -c 1048576 /dev/zero; echo done >&2"),
            &Bounds::within(Duration::from_secs(20)).max_output(1000),
        )
        .await
        .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.stdout_cut);
        assert_eq!(out.stderr_text(), "done\n");
        assert!(!out.stderr_cut);
    }

    #[tokio::test]
    async fn the_deadline_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("reporunner-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("child.pid");
        let script = format!(
            "sleep 60 >/dev/null 2>&1 & echo $! > {}; wait",
            pid_file.display()
        );
        let started = Instant::now();
        let err = run_bounded(sh(&script), &Bounds::within(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExecError::TimedOut(t) if t == Duration::from_millis(500)),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let grandchild: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            gone_soon(grandchild).await,
            "the background sleep outlived the timeout"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_group_outlives_a_normal_exit_unless_asked() {
        let daemon = "sleep 60 >/dev/null 2>&1 </dev/null & echo $!";
        let bounds = Bounds::within(Duration::from_secs(10));
        let left = run_bounded(sh(daemon), &bounds).await.unwrap();
        let pid: u32 = left.stdout_text().trim().parse().unwrap();
        assert!(alive(pid), "the background sleep should still run");
        let _ = nix::sys::signal::kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL);
        let killed = run_bounded(sh(daemon), &bounds.kill_group_after_exit())
            .await
            .unwrap();
        let pid: u32 = killed.stdout_text().trim().parse().unwrap();
        assert!(gone_soon(pid).await, "the background sleep outlived its group");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = run_bounded(
            Command::new(Path::new("/nonexistent/reporunner-no-such-tool")),
            &Bounds::within(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        match err {
            ExecError::Spawn { program, source } => {
                assert_eq!(program, "/nonexistent/reporunner-no-such-tool");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected a spawn error, got {other}"),
        }
    }

    #[tokio::test]
    async fn discarded_output_does_not_wait_for_a_daemon() {
        // The daemon keeps the shell's stdout; with output discarded there is
        // no pipe, so the call ends with the shell.
        let started = Instant::now();
        let out = run_bounded(
            sh("sleep 60 & exit 0"),
            &Bounds::within(Duration::from_secs(30))
                .discard_output()
                .kill_group_after_exit(),
        )
        .await
        .unwrap();
        assert!(out.success());
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn ids_that_name_no_child_group_are_ignored() {
        // Would kill this test's own group (0) or every process (1) otherwise.
        kill_group(0);
        kill_group(1);
        kill_group(u32::MAX);
    }
}
