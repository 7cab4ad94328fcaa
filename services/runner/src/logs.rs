//! Captured output: a bounded ring of lines per process with monotonic
//! sequence numbers, a bounded line reader, and the log file writer.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use reporunner_proto::common::v1::{LogLine, LogStream};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader},
    sync::{mpsc, watch},
};

/// The lines of one process. Sequences start at 1 and keep counting across
/// restarts of the process.
#[derive(Debug)]
pub struct LogBuffer {
    source: String,
    capacity: usize,
    inner: Mutex<Ring>,
    /// The last sequence written; followers wait on it.
    last: watch::Sender<u64>,
    file: Option<mpsc::Sender<String>>,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    next: u64,
}

impl LogBuffer {
    /// A buffer for `source` (the component) keeping `capacity` lines and
    /// copying each line to `file` when given.
    pub fn new(source: String, capacity: usize, file: Option<mpsc::Sender<String>>) -> Self {
        Self {
            source,
            capacity,
            inner: Mutex::new(Ring {
                lines: VecDeque::new(),
                next: 1,
            }),
            last: watch::channel(0).0,
            file,
        }
    }

    /// Appends one line and wakes followers. The log file gets it unless
    /// its writer is behind (then the line is in memory only); output of
    /// the process goes through [`LogBuffer::append`], which waits instead.
    pub fn push(&self, stream: LogStream, text: String) {
        if let (Some(file), Some(line)) = (&self.file, self.record(stream, text)) {
            let _ = file.try_send(line);
        }
    }

    /// Appends one line, waiting for room in the log file's queue (so a
    /// process that writes faster than the disk is slowed down rather than
    /// losing lines in the file).
    pub async fn append(&self, stream: LogStream, text: String) {
        if let (Some(file), Some(line)) = (&self.file, self.record(stream, text)) {
            let _ = file.send(line).await;
        }
    }

    /// Puts the line in the ring and wakes followers; returns the log file
    /// line when there is a file.
    fn record(&self, stream: LogStream, text: String) -> Option<String> {
        let (sequence, file_line) = {
            let mut ring = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let sequence = ring.next;
            ring.next += 1;
            let file_line = self.file.as_ref().map(|_| {
                let tag = match stream {
                    LogStream::Stdout => "out",
                    LogStream::Stderr => "err",
                    LogStream::System | LogStream::Unspecified => "sys",
                };
                format!("{sequence} {tag} {text}\n")
            });
            if ring.lines.len() == self.capacity {
                ring.lines.pop_front();
            }
            ring.lines.push_back(LogLine {
                time: Some(prost_types::Timestamp::from(SystemTime::now())),
                stream: stream.into(),
                source: self.source.clone(),
                text,
                sequence,
            });
            (sequence, file_line)
        };
        self.last.send_replace(sequence);
        file_line
    }

    /// Up to `limit` lines after `after`, oldest first.
    pub fn after(&self, after: u64, limit: usize) -> Vec<LogLine> {
        let ring = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(first) = ring.lines.front().map(|l| l.sequence) else {
            return Vec::new();
        };
        let skip = usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        ring.lines.iter().skip(skip).take(limit).cloned().collect()
    }

    /// A receiver that changes whenever a line is added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
}

/// Reads `reader` line by line into `buffer` until end of file. Lines are
/// decoded lossily and cut at `max_line_bytes` (the rest of the line is
/// dropped and counted in a marker).
pub async fn capture<R: AsyncRead + Unpin>(
    reader: R,
    stream: LogStream,
    buffer: &LogBuffer,
    max_line_bytes: usize,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut dropped: u64 = 0;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (take, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        let room = max_line_bytes.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        dropped += (take.saturating_sub(room)) as u64;
        reader.consume(take + usize::from(newline));
        if newline {
            emit(buffer, stream, &mut line, &mut dropped).await;
        }
    }
    if !line.is_empty() || dropped > 0 {
        emit(buffer, stream, &mut line, &mut dropped).await;
    }
}

async fn emit(buffer: &LogBuffer, stream: LogStream, line: &mut Vec<u8>, dropped: &mut u64) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    if *dropped > 0 {
        text.push_str(&format!(" [line cut: {dropped} more bytes]"));
    }
    line.clear();
    *dropped = 0;
    buffer.append(stream, text).await;
}

/// Appends lines to `path`, rotating it to `<path>.1` when it passes
/// `max_bytes`. Ends when every sender is gone.
pub async fn write_file(path: PathBuf, max_bytes: u64, mut lines: mpsc::Receiver<String>) {
    let mut file = None;
    let mut size = 0u64;
    while let Some(first) = lines.recv().await {
        let mut batch = first;
        while batch.len() < 256 * 1024
            && let Ok(more) = lines.try_recv()
        {
            batch.push_str(&more);
        }
        if file.is_none() || size >= max_bytes {
            if size >= max_bytes {
                file = None;
                let _ = tokio::fs::rename(&path, rotated(&path)).await;
            }
            match open_append(&path).await {
                Ok((opened, len)) => {
                    file = Some(opened);
                    size = len;
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot open a log file; lines go to memory only");
                    continue;
                }
            }
        }
        if let Some(open) = file.as_mut() {
            if let Err(err) = open.write_all(batch.as_bytes()).await {
                tracing::warn!(path = %path.display(), error = %err, "cannot write a log file");
                file = None;
                continue;
            }
            let _ = open.flush().await;
            size += batch.len() as u64;
        }
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

async fn open_append(path: &Path) -> std::io::Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let len = file.metadata().await?.len();
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_and_counts_on() {
        let buffer = LogBuffer::new("api".into(), 3, None);
        for i in 0..5 {
            buffer.push(LogStream::Stdout, format!("line {i}"));
        }
        let all = buffer.after(0, 100);
        assert_eq!(all.iter().map(|l| l.sequence).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(all[0].text, "line 2");
        assert_eq!(all[0].source, "api");
        assert_eq!(buffer.after(4, 100).len(), 1);
        assert!(buffer.after(5, 100).is_empty());
        assert_eq!(buffer.after(0, 2).len(), 2);
        assert_eq!(*buffer.subscribe().borrow(), 5);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_bad_utf8_is_replaced() {
        let buffer = LogBuffer::new("api".into(), 10, None);
        let mut input = vec![b'a'; 300];
        input.extend_from_slice(b"\nok\r\n\xff\xfe end");
        capture(&input[..], LogStream::Stderr, &buffer, 100).await;
        let lines = buffer.after(0, 10);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].text.starts_with(&"a".repeat(100)));
        assert!(
            lines[0].text.ends_with("[line cut: 200 more bytes]"),
            "{}",
            lines[0].text
        );
        assert_eq!(lines[1].text, "ok");
        assert_eq!(lines[2].text, "\u{fffd}\u{fffd} end");
        assert_eq!(lines[2].stream, LogStream::Stderr as i32);
    }

    #[tokio::test]
    async fn log_files_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.log");
        let (tx, rx) = mpsc::channel(16);
        let writer = tokio::spawn(write_file(path.clone(), 4096, rx));
        for i in 0..100 {
            tx.send(format!("{i} {}\n", "x".repeat(100))).await.unwrap();
        }
        drop(tx);
        writer.await.unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(current.ends_with(&format!("99 {}\n", "x".repeat(100))));
        assert!(!old.is_empty());
        assert!(current.len() < 4096 + 256 * 1024);
    }
}
