//! Redis: a logical database of a shared server, or a private `redis-server`.
//!
//! Redis has no per-run isolation but its numbered databases. A run gets one
//! of `first_db..=last_db` (never 0), claimed on the server itself with
//! `SET reporunner:provisioner:db:<n> <owner> NX` in database 0, so agents
//! (and test processes) sharing a server never hand out the same database;
//! a database that holds keys without a claim is skipped. Release flushes
//! the database and drops the claim, only when the claim is still ours.
//!
//! The client is a few lines of RESP over a `TcpStream` rather than the
//! `redis` crate: the agent sends PING, SELECT, SET NX, GET, DEL, DBSIZE,
//! FLUSHDB, INFO and SHUTDOWN, and a bounded hand-written reader keeps the
//! dependency tree small and every read under a deadline and a size limit.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
    process::Command,
};

use crate::{
    env::{Connection, Flavor},
    error::{ProvisionError, Result},
    host,
};

/// Longest status/error/integer line read.
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string read.
const MAX_BULK: usize = 4 * 1024 * 1024;
/// Most elements of an array reply, and how deep arrays may nest.
const MAX_ARRAY: usize = 1024;
const MAX_DEPTH: usize = 4;

/// `redis://host:port` (optionally with a trailing `/` or `/0`).
pub fn parse_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("redis://")?;
    let rest = rest
        .strip_suffix("/0")
        .or_else(|| rest.strip_suffix('/'))
        .unwrap_or(rest);
    if rest.contains(['@', '/', '?']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (rest, 6379),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply, or the server's error as an error.
    fn ok(self) -> Result<Self> {
        match self {
            Self::Error(e) => Err(ProvisionError::Backend(format!("redis: {e}"))),
            other => Ok(other),
        }
    }

    /// The text of a bulk or simple string.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Simple(s) => Some(s.clone()),
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// One RESP connection; every command has the connection's deadline.
#[derive(Debug)]
pub struct RespClient {
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

impl RespClient {
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ProvisionError::Timeout("connecting to Redis".into(), timeout))?
            .map_err(|e| {
                ProvisionError::Unreachable(format!("Redis at {host}:{port} is not reachable: {e}"))
            })?;
        Ok(Self {
            stream: BufReader::new(stream),
            timeout,
        })
    }

    /// Sends a command and reads its reply (a server error is an error).
    pub async fn command(&mut self, args: &[&str]) -> Result<Reply> {
        self.raw(args).await?.ok()
    }

    /// Sends a command and reads its reply, server errors included.
    pub async fn raw(&mut self, args: &[&str]) -> Result<Reply> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg.as_bytes());
            frame.extend_from_slice(b"\r\n");
        }
        let timeout = self.timeout;
        let exchange = async {
            self.stream.get_mut().write_all(&frame).await?;
            read_reply(&mut self.stream, 0).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ProvisionError::Timeout(format!("redis {}", args.first().unwrap_or(&"")), timeout))?
            .map_err(|e| ProvisionError::Backend(format!("redis: {e}")))
    }
}

type ReadFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<Reply>> + Send + 'a>>;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

async fn read_line(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let read = (&mut *stream)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("line too long or not CRLF-terminated"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| invalid("line is not UTF-8"))
}

fn read_reply(stream: &mut BufReader<TcpStream>, depth: usize) -> ReadFuture<'_> {
    Box::pin(async move {
        let line = read_line(stream).await?;
        let (tag, rest) = line.split_at_checked(1).ok_or_else(|| invalid("empty reply"))?;
        let number = || rest.parse::<i64>().map_err(|_| invalid("bad length"));
        match tag {
            "+" => Ok(Reply::Simple(rest.to_owned())),
            "-" => Ok(Reply::Error(rest.to_owned())),
            ":" => Ok(Reply::Integer(number()?)),
            "$" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len).map_err(|_| invalid("bad length"))?;
                if len > MAX_BULK {
                    return Err(invalid("bulk reply too large"));
                }
                let mut data = vec![0; len + 2];
                stream.read_exact(&mut data).await?;
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
            "*" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                let len = usize::try_from(len).map_err(|_| invalid("bad length"))?;
                if len > MAX_ARRAY || depth >= MAX_DEPTH {
                    return Err(invalid("array reply too large or too deep"));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(read_reply(stream, depth + 1).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(invalid("unknown reply type")),
        }
    })
}

/// Whether a Redis server answers PING at `host:port` within `timeout`.
pub async fn ping(host: &str, port: u16, timeout: Duration) -> bool {
    match RespClient::connect(host, port, timeout).await {
        Ok(mut client) => client
            .command(&["PING"])
            .await
            .is_ok_and(|r| r == Reply::Simple("PONG".into())),
        Err(_) => false,
    }
}

/// The server's `redis_version`.
pub async fn server_version(client: &mut RespClient) -> Result<String> {
    let info = client
        .command(&["INFO", "server"])
        .await?
        .text()
        .unwrap_or_default();
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned())
}

fn claim_key(db: u32) -> String {
    format!("reporunner:provisioner:db:{db}")
}

/// Claims an empty database of `first..=last` for `owner`.
pub async fn claim_db(client: &mut RespClient, owner: &str, first: u32, last: u32) -> Result<u32> {
    for db in first..=last {
        let db_text = db.to_string();
        client.command(&["SELECT", "0"]).await?;
        let claimed = client.command(&["SET", &claim_key(db), owner, "NX"]).await?;
        if claimed != Reply::Simple("OK".into()) {
            continue;
        }
        client.command(&["SELECT", &db_text]).await?;
        if client.command(&["DBSIZE"]).await? == Reply::Integer(0) {
            return Ok(db);
        }
        // Someone uses it without a claim: leave it alone.
        client.command(&["SELECT", "0"]).await?;
        client.command(&["DEL", &claim_key(db)]).await?;
    }
    Err(ProvisionError::TooMany(format!(
        "every Redis database {first}..={last} of the shared server is in use"
    )))
}

/// Flushes `db` and drops its claim, when the claim is `owner`'s.
/// Returns false when the claim is gone or someone else's (nothing done).
pub async fn release_db(client: &mut RespClient, db: u32, owner: &str) -> Result<bool> {
    client.command(&["SELECT", "0"]).await?;
    let current = client.command(&["GET", &claim_key(db)]).await?.text();
    if current.as_deref() != Some(owner) {
        return Ok(false);
    }
    client.command(&["SELECT", &db.to_string()]).await?;
    client.command(&["FLUSHDB"]).await?;
    client.command(&["SELECT", "0"]).await?;
    client.command(&["DEL", &claim_key(db)]).await?;
    Ok(true)
}

/// The connection a run's app uses.
pub fn connection(host: String, port: u16, db: u32) -> Connection {
    Connection {
        flavor: Flavor::Redis,
        host,
        port,
        user: String::new(),
        password: String::new(),
        database: db.to_string(),
    }
}

/// The `redis-server` binary, when installed.
pub fn find_server() -> Option<PathBuf> {
    host::find_binary(&["redis-server"], &[])
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("redis.pid")
}

/// Starts a private, non-persistent `redis-server` on 127.0.0.1:`port`
/// with its files in `dir`, and waits until it answers PING.
pub async fn start_private(binary: &Path, dir: &Path, port: u16, timeout: Duration) -> Result<()> {
    host::prepare_dir(dir, None).await?;
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args([
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--pidfile")
        .arg(pid_file(dir))
        .arg("--logfile")
        .arg(dir.join("redis.log"));
    host::run(command, "redis-server", timeout).await?;
    let probe = Duration::from_millis(500).min(timeout);
    host::wait_until("redis-server start", timeout, || ping("127.0.0.1", port, probe)).await
}

/// Stops a private server (SHUTDOWN NOSAVE, then SIGKILL of its process
/// group if it lingers) and removes `dir`. Only the process named in the
/// pid file, still a redis-server on `port`, is touched: after a restart
/// the port or the pid may belong to someone else.
pub async fn stop_private(dir: &Path, port: u16, timeout: Duration) -> Result<()> {
    let pid = std::fs::read_to_string(pid_file(dir))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        // redis-server titles itself `redis-server 127.0.0.1:<port>`.
        let title = format!("127.0.0.1:{port}");
        let ours = || {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("redis-server") && c.contains(&title)
            })
        };
        if ours() {
            if let Ok(mut client) = RespClient::connect("127.0.0.1", port, timeout).await
                && let Ok(info) = client.command(&["INFO", "server"]).await
                && info
                    .text()
                    .is_some_and(|i| i.lines().any(|l| l.trim() == format!("process_id:{pid}")))
            {
                // The server closes the connection instead of answering.
                let _ = client.raw(&["SHUTDOWN", "NOSAVE"]).await;
            }
            let gone = host::wait_until("redis-server stop", timeout, || async { !ours() })
                .await
                .is_ok();
            if !gone && ours() {
                let pgid = nix::unistd::Pid::from_raw(pid);
                if let Err(e) = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL) {
                    tracing::warn!(pid, error = %e, "killing redis-server failed");
                }
            }
        }
    }
    host::remove_dir(dir).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client whose server answers every command with `answer`.
    async fn client_answering(answer: &'static [u8]) -> RespClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(answer).await;
            // Keep the connection open until the client gives up.
            let _ = socket.read(&mut buffer).await;
        });
        RespClient::connect("127.0.0.1", port, Duration::from_millis(500))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn replies_are_decoded() {
        let mut c = client_answering(b"*3\r\n$5\r\nhello\r\n:42\r\n*1\r\n$-1\r\n").await;
        assert_eq!(
            c.command(&["X"]).await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"hello".to_vec())),
                Reply::Integer(42),
                Reply::Array(Some(vec![Reply::Bulk(None)])),
            ]))
        );
        let mut c = client_answering(b"-ERR wrong\r\n").await;
        assert!(
            c.command(&["X"])
                .await
                .unwrap_err()
                .to_string()
                .contains("ERR wrong")
        );
    }

    #[tokio::test]
    async fn hostile_replies_are_bounded() {
        for answer in [
            &b"$999999999\r\n"[..],
            b"*999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b"?what\r\n",
            b":12",
        ] {
            let mut c = client_answering(answer).await;
            let err = c.command(&["X"]).await.unwrap_err();
            assert!(
                matches!(err, ProvisionError::Backend(_) | ProvisionError::Timeout(..)),
                "{err}"
            );
        }
    }

    #[test]
    fn urls_are_host_and_port_only() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6379"),
            Some(("127.0.0.1".into(), 6379))
        );
        assert_eq!(parse_url("redis://cache/"), Some(("cache".into(), 6379)));
        assert_eq!(parse_url("redis://:pw@cache:1"), None);
        assert_eq!(parse_url("redis://cache:1/3"), None);
        assert_eq!(parse_url("http://cache:1"), None);
    }
}
