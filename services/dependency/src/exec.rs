//! Streamed, bounded, timed commands run in their own process group.
//!
//! Every command starts as the leader of a new process group
//! (`process_group(0)`), so that a timeout, a disk limit or a cancelled
//! request kills everything it started (pip's build subprocesses, npm's
//! postinstall scripts) with one `killpg(SIGKILL)`. The group is also
//! killed after a normal exit, so no stray daemon outlives its install.
//! Short captures and quiet attempts go through the shared
//! `reporunner_exec::run_bounded`; streamed installs are [`run`]'s.

use std::{
    collections::{BTreeMap, VecDeque},
    ffi::OsString,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use reporunner_exec::{Bounds, kill_group, run_bounded};
use reporunner_proto::{
    agents::dependency::v1::{InstallResponse, install_response},
    common::v1::{LogLine, LogStream},
};
use tokio::{io::AsyncReadExt as _, process::Command, sync::mpsc};

/// Entries looked at when measuring a directory's size.
const MAX_SIZE_ENTRIES: usize = 5_000_000;
/// How long the output of a finished command is still read.
const DRAIN: Duration = Duration::from_secs(2);
/// What [`capture`] returns at most.
const CAPTURE_BYTES: usize = 4 * 1024;
/// What [`capture`] reads of each stream before trimming.
const CAPTURE_READ_BYTES: usize = 64 * 1024;

/// Where an install's output goes: the response stream, with sequence
/// numbers per source, and a tail kept for the result.
#[derive(Debug)]
pub struct LogSink {
    tx: mpsc::Sender<InstallResponse>,
    sequences: BTreeMap<String, u64>,
    tail: VecDeque<String>,
    tail_lines: usize,
    max_line_bytes: usize,
}

impl LogSink {
    pub fn new(tx: mpsc::Sender<InstallResponse>, tail_lines: usize, max_line_bytes: usize) -> Self {
        Self {
            tx,
            sequences: BTreeMap::new(),
            tail: VecDeque::with_capacity(tail_lines),
            tail_lines,
            max_line_bytes,
        }
    }

    /// Sends one line (cut to the line bound) and keeps it in the tail.
    pub async fn line(&mut self, source: &str, stream: LogStream, text: String) {
        let text = bound_line(text, self.max_line_bytes);
        let sequence = self.sequences.entry(source.to_owned()).or_insert(0);
        *sequence += 1;
        if self.tail_lines > 0 {
            if self.tail.len() == self.tail_lines {
                self.tail.pop_front();
            }
            self.tail.push_back(text.clone());
        }
        let line = LogLine {
            time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            stream: stream as i32,
            source: source.to_owned(),
            text,
            sequence: *sequence,
        };
        // A gone receiver is noticed by `run` (it kills the command).
        let _ = self
            .tx
            .send(InstallResponse {
                event: Some(install_response::Event::Log(line)),
            })
            .await;
    }

    /// A line written by the agent itself.
    pub async fn system(&mut self, source: &str, text: impl Into<String>) {
        self.line(source, LogStream::System, text.into()).await;
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    pub fn sender(&self) -> mpsc::Sender<InstallResponse> {
        self.tx.clone()
    }
}

/// Cuts a line to `max` bytes on a character boundary and marks the cut.
fn bound_line(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …[line cut]");
    }
    text
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Added to (and overriding) the agent's own environment.
    pub env: BTreeMap<String, String>,
    /// The log source: "install" or "build".
    pub source: &'static str,
    /// A package manager the agent installs into its tools dir from a
    /// registry (uv, pnpm, yarn): the agent's own code, not the
    /// repository's, so it runs outside the sandbox.
    pub tool: bool,
}

/// A command ready to start: plain (the agent's environment plus the
/// command's) or prepared by the sandbox.
#[derive(Debug)]
pub struct Spawnable {
    command: Command,
    cgroup: Option<PathBuf>,
}

impl Spawnable {
    /// `cmd` as the agent itself would run it.
    pub fn plain(cmd: &Cmd) -> Self {
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .current_dir(&cmd.cwd)
            .envs(&cmd.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Self {
            command,
            cgroup: None,
        }
    }

    /// A step the sandbox prepared.
    pub fn sandboxed(prepared: reporunner_sandbox::Prepared) -> Self {
        Self {
            command: prepared.command(),
            cgroup: prepared.cgroup,
        }
    }

    async fn cleanup(&self) {
        if let Some(dir) = &self.cgroup {
            reporunner_sandbox::remove_cgroup(dir).await;
        }
    }
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>, cwd: &Path, source: &'static str) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.to_owned(),
            env: BTreeMap::new(),
            source,
            tool: false,
        }
    }

    /// Marks a tool install of the agent's own (see [`Cmd::tool`]).
    #[must_use]
    pub fn tool(mut self) -> Self {
        self.tool = true;
        self
    }

    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    #[must_use]
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn envs(mut self, env: &BTreeMap<String, String>) -> Self {
        self.env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The command line as a user would type it.
    pub fn display(&self) -> String {
        let mut line = self.program.display().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// What bounds a command.
#[derive(Clone, Debug)]
pub struct Guard {
    pub deadline: Instant,
    /// 0: no limit.
    pub max_disk_bytes: u64,
    /// What counts against the disk limit.
    pub disk_paths: Vec<PathBuf>,
    pub disk_interval: Duration,
}

/// How a command ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited; `-1` when killed by a signal.
    Exited(i32),
    /// The deadline passed; the group was killed.
    TimedOut,
    /// The disk limit was exceeded; the group was killed.
    DiskExceeded { used: u64 },
    /// The caller went away; the group was killed.
    Cancelled,
    /// It could not be started.
    SpawnFailed(std::io::Error),
}

/// Runs `cmd` (started as `spawnable`), streaming its output into `sink`,
/// within `guard`.
pub async fn run(cmd: &Cmd, mut spawnable: Spawnable, sink: &mut LogSink, guard: &Guard) -> Outcome {
    sink.system(cmd.source, format!("$ {}", cmd.display())).await;
    let outcome = run_spawned(cmd, &mut spawnable, sink, guard).await;
    spawnable.cleanup().await;
    outcome
}

async fn run_spawned(cmd: &Cmd, spawnable: &mut Spawnable, sink: &mut LogSink, guard: &Guard) -> Outcome {
    let mut child = match spawnable.command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::SpawnFailed(e),
    };
    let pgid = child.id();
    let (lines_tx, mut lines) = mpsc::channel::<(LogStream, String)>(256);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(
            out,
            LogStream::Stdout,
            lines_tx.clone(),
            sink.max_line_bytes,
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(
            err,
            LogStream::Stderr,
            lines_tx.clone(),
            sink.max_line_bytes,
        ));
    }
    drop(lines_tx);
    let receiver = sink.sender();
    let deadline = tokio::time::sleep_until(guard.deadline.into());
    tokio::pin!(deadline);
    let mut disk_tick = tokio::time::interval(guard.disk_interval);
    disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check_disk = guard.max_disk_bytes > 0 && !guard.disk_paths.is_empty();
    // The deadline, a gone caller and the disk come first, so that a command
    // flooding its output cannot starve them; a caller that stops reading
    // cannot hold a line past the deadline either.
    let outcome = loop {
        tokio::select! {
            biased;
            () = &mut deadline => break Outcome::TimedOut,
            () = receiver.closed() => break Outcome::Cancelled,
            _ = disk_tick.tick(), if check_disk => {
                let used = dir_size(guard.disk_paths.clone()).await;
                if used > guard.max_disk_bytes {
                    break Outcome::DiskExceeded { used };
                }
            }
            Some((stream, text)) = lines.recv() => {
                let sent = tokio::time::timeout_at(guard.deadline.into(), sink.line(cmd.source, stream, text));
                if sent.await.is_err() {
                    break Outcome::TimedOut;
                }
            }
            status = child.wait() => {
                break match status {
                    Ok(status) => Outcome::Exited(status.code().unwrap_or(-1)),
                    Err(e) => Outcome::SpawnFailed(e),
                };
            }
        }
    };
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(DRAIN, child.wait()).await;
    let drain_until = tokio::time::Instant::now() + DRAIN;
    while let Ok(Some((stream, text))) = tokio::time::timeout_at(drain_until, lines.recv()).await {
        if tokio::time::timeout_at(drain_until, sink.line(cmd.source, stream, text))
            .await
            .is_err()
        {
            break;
        }
    }
    outcome
}

/// Runs `spawnable` with its output discarded, until `deadline`; whether
/// it exited 0. For attempts whose failure is expected and uninteresting.
/// Its process group is killed when it ends, whichever way.
pub async fn run_quiet(spawnable: Spawnable, deadline: Instant) -> bool {
    let Spawnable { command, cgroup } = spawnable;
    let bounds = Bounds::until(deadline).discard_output().kill_group_after_exit();
    let outcome = run_bounded(command, &bounds).await;
    if let Some(dir) = &cgroup {
        reporunner_sandbox::remove_cgroup(dir).await;
    }
    matches!(outcome, Ok(out) if out.success())
}

/// Reads `reader` into lines of at most `max` bytes.
async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    stream: LogStream,
    tx: mpsc::Sender<(LogStream, String)>,
    max: usize,
) {
    let mut buffer = vec![0u8; 8 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let finish = |line: &mut Vec<u8>, cut: &mut bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(line).into_owned();
        if *cut {
            text.push_str(" …[line cut]");
        }
        line.clear();
        *cut = false;
        text
    };
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buffer[..n] {
            if byte == b'\n' {
                let text = finish(&mut line, &mut cut);
                if tx.send((stream, text)).await.is_err() {
                    return;
                }
            } else if line.len() < max {
                line.push(byte);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        let text = finish(&mut line, &mut cut);
        let _ = tx.send((stream, text)).await;
    }
}

/// Runs a short command and returns its trimmed stdout (or, when that is
/// empty, its stderr), at most [`CAPTURE_BYTES`] of it, when it exits 0
/// within `timeout`.
pub async fn capture(program: &Path, args: &[&str], cwd: &Path, timeout: Duration) -> Option<String> {
    let mut command = Command::new(program);
    command.args(args).current_dir(cwd);
    let bounds = Bounds::within(timeout).max_output(CAPTURE_READ_BYTES);
    let output = run_bounded(command, &bounds).await.ok()?;
    if !output.success() {
        return None;
    }
    let mut text = output.stdout_text().trim().to_owned();
    if text.is_empty() {
        // Some tools (old pip, python2) print their version on stderr.
        text = output.stderr_text().trim().to_owned();
    }
    let mut end = text.len().min(CAPTURE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    Some(text)
}

/// The apparent size of the files under `paths` (symlinks not followed),
/// walked on the blocking pool.
pub async fn dir_size(paths: Vec<PathBuf>) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        let mut seen = 0usize;
        let mut stack = paths;
        while let Some(path) = stack.pop() {
            seen += 1;
            if seen > MAX_SIZE_ENTRIES {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            } else {
                total = total.saturating_add(meta.len());
            }
        }
        total
    })
    .await
    .unwrap_or(0)
}

/// Looks `name` up on `path` (a PATH value).
pub fn which(name: &str, path: &str) -> Option<PathBuf> {
    reporunner_host::which(name, std::ffi::OsStr::new(path))
}

/// The first `max_bytes` of the text file at `path`; `None` when it cannot
/// be read as UTF-8.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Option<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(max_bytes)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// An exclusive lock on `<tools_dir>/.<name>.lock`, across processes,
/// held until the returned file is dropped.
pub async fn tools_lock(tools_dir: &Path, name: &str) -> std::io::Result<std::fs::File> {
    tokio::fs::create_dir_all(tools_dir).await?;
    let path = tools_dir.join(format!(".{name}.lock"));
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let text = bound_line("é".repeat(100), 81);
        assert!(text.ends_with("…[line cut]"));
        assert!(text.len() <= 81 + " …[line cut]".len());
        assert_eq!(bound_line("short".into(), 80), "short");
    }

    #[tokio::test]
    async fn a_flood_of_output_cannot_outrun_the_deadline() {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut sink = LogSink::new(tx, 10, 200);
        let cmd = Cmd::new("sh", Path::new("/"), "install").args(["-c", "yes flood"]);
        let started = Instant::now();
        let guard = Guard {
            deadline: started + Duration::from_millis(800),
            max_disk_bytes: 0,
            disk_paths: Vec::new(),
            disk_interval: Duration::from_secs(1),
        };
        let outcome = run(&cmd, Spawnable::plain(&cmd), &mut sink, &guard).await;
        assert!(matches!(outcome, Outcome::TimedOut), "{outcome:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(sink.tail().last().map(String::as_str), Some("flood"));
        drop(sink);
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn pump_splits_and_bounds_lines() {
        let (tx, mut rx) = mpsc::channel(16);
        let input: &[u8] = b"one\r\ntwo\nxxxxxxxxxxxxxxxxxxxxxxxx\nlast";
        pump(input, LogStream::Stdout, tx, 10).await;
        let mut lines = Vec::new();
        while let Some((_, line)) = rx.recv().await {
            lines.push(line);
        }
        assert_eq!(lines, ["one", "two", "xxxxxxxxxx …[line cut]", "last"]);
    }
}
