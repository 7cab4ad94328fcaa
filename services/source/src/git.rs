//! Shallow clones with the `git` CLI.
//!
//! Every git process runs with `GIT_TERMINAL_PROMPT=0`, no stdin, a bounded
//! capture of stderr, in its own process group killed at the fetch's
//! deadline (`reporunner_exec::run_bounded`). Only the
//! https, ssh and git transports are allowed (and `file` where configured).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use reporunner_exec::{Bounds, ExecError, run_bounded};
use tokio::process::Command;

use crate::error::{Result, SourceError};

/// Stderr kept for messages.
const STDERR_CAP: usize = 16 * 1024;
/// Longest accepted URL and ref.
const MAX_URL_LEN: usize = 4096;
const MAX_REF_LEN: usize = 256;

/// How to run git.
#[derive(Clone, Debug)]
pub(crate) struct Git {
    pub binary: PathBuf,
    pub allow_file: bool,
    /// The fetch's timeout in seconds, for the message when it passes.
    pub timeout_secs: u64,
    pub deadline: Instant,
}

/// Checks a clone URL before git sees it.
pub(crate) fn validate_url(url: &str) -> Result<()> {
    if url.is_empty() {
        return Err(SourceError::invalid("git url is empty"));
    }
    if url.len() > MAX_URL_LEN {
        return Err(SourceError::invalid(format!(
            "git url is longer than {MAX_URL_LEN} bytes"
        )));
    }
    if url.starts_with('-') {
        return Err(SourceError::invalid(format!(
            "git url {url:?} must not start with '-'"
        )));
    }
    if url.chars().any(char::is_control) {
        return Err(SourceError::invalid("git url contains control characters"));
    }
    // `<transport>::<address>` runs a remote helper (`ext::` runs commands).
    let head = url.split('/').next().unwrap_or(url);
    if url.starts_with("ext::") || head.contains("::") {
        return Err(SourceError::invalid(format!(
            "git url {:?} uses a remote-helper transport, which is not allowed",
            redact_url(url)
        )));
    }
    Ok(())
}

/// Checks a ref (branch, tag or commit) before git sees it.
pub(crate) fn validate_ref(reference: &str) -> Result<()> {
    let bad = reference.len() > MAX_REF_LEN
        || reference.starts_with('-')
        || reference.contains("..")
        || reference.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        return Err(SourceError::invalid(format!(
            "git ref {reference:?} is not a valid ref"
        )));
    }
    Ok(())
}

/// A full commit id (sha1 or sha256).
pub(crate) fn is_full_commit(reference: &str) -> bool {
    (reference.len() == 40 || reference.len() == 64) && reference.chars().all(|c| c.is_ascii_hexdigit())
}

/// The URL without credentials, for origins and messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

impl Git {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c").arg("protocol.allow=never");
        for proto in ["https", "ssh", "git"] {
            cmd.arg("-c").arg(format!("protocol.{proto}.allow=always"));
        }
        if self.allow_file {
            cmd.arg("-c").arg("protocol.file.allow=always");
        }
        cmd.arg("-c")
            .arg("init.defaultBranch=main")
            .arg("-c")
            .arg("advice.detachedHead=false")
            .arg("-c")
            .arg("core.symlinks=true")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .env("GCM_INTERACTIVE", "never");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        cmd
    }

    /// Runs git with `args`; `Err(stderr)` when it fails. Through
    /// [`run_bounded`]: its own process group, so that helpers git starts
    /// (remote-https, index-pack, upload-pack) die with it at the deadline;
    /// at most [`STDERR_CAP`] bytes kept of each stream.
    async fn run(&self, args: &[&str], stdout: bool) -> Result<std::result::Result<String, String>> {
        let mut cmd = self.command();
        cmd.args(args);
        let mut bounds = Bounds::until(self.deadline).max_output(STDERR_CAP);
        if !stdout {
            bounds = bounds.discard_stdout();
        }
        let output = run_bounded(cmd, &bounds).await.map_err(|e| match e {
            ExecError::Spawn { program, source } => SourceError::Spawn { program, source },
            ExecError::TimedOut(_) => SourceError::Timeout(self.timeout_secs),
            ExecError::Io(source) => SourceError::Spawn {
                program: self.binary.display().to_string(),
                source,
            },
        })?;
        if output.success() {
            Ok(Ok(output.stdout_text().trim().to_owned()))
        } else {
            Ok(Err(output.stderr_text()))
        }
    }

    /// Clones `url` at `reference` (empty: the default branch) into `dest`,
    /// an empty directory, and returns the commit checked out.
    pub(crate) async fn clone(&self, url: &str, reference: &str, dest: &Path) -> Result<String> {
        validate_url(url)?;
        if !reference.is_empty() {
            validate_ref(reference)?;
        }
        let dest_str = dest
            .to_str()
            .ok_or_else(|| SourceError::io("use", dest, std::io::Error::other("path is not UTF-8")))?;
        let shown = redact_url(url);
        let fail = |stderr: String| classify(&shown, reference, &stderr);
        if is_full_commit(reference) {
            self.run(&["init", "-q", "--", dest_str], false)
                .await?
                .map_err(fail)?;
            self.run(&["-C", dest_str, "remote", "add", "origin", "--", url], false)
                .await?
                .map_err(fail)?;
            self.run(
                &[
                    "-C",
                    dest_str,
                    "fetch",
                    "-q",
                    "--depth",
                    "1",
                    "--no-tags",
                    "origin",
                    reference,
                ],
                false,
            )
            .await?
            .map_err(fail)?;
            self.run(
                &["-C", dest_str, "checkout", "-q", "--detach", "FETCH_HEAD"],
                false,
            )
            .await?
            .map_err(fail)?;
        } else {
            let mut args = vec!["clone", "-q", "--depth", "1", "--no-tags"];
            if !reference.is_empty() {
                args.extend(["--branch", reference, "--single-branch"]);
            }
            args.extend(["--", url, dest_str]);
            self.run(&args, false).await?.map_err(fail)?;
        }
        let commit = self
            .run(&["-C", dest_str, "rev-parse", "HEAD"], true)
            .await?
            .map_err(fail)?;
        if !is_full_commit(&commit) {
            return Err(SourceError::GitUnavailable(format!(
                "git clone of {shown} produced no commit"
            )));
        }
        Ok(commit)
    }
}

/// The line of git's stderr worth showing: the first `fatal:`/`error:` line,
/// else the first non-empty one.
impl Git {
    /// The date of the commit checked out in `dir`; `None` when git cannot
    /// say.
    pub(crate) async fn commit_time(&self, dir: &Path) -> Option<std::time::SystemTime> {
        let dir = dir.to_str()?;
        let out = self
            .run(&["-C", dir, "log", "-1", "--format=%ct"], true)
            .await
            .ok()?
            .ok()?;
        let secs: u64 = out.trim().parse().ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }
}

pub(crate) fn first_line(stderr: &str) -> String {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .or_else(|| lines().find(|l| !l.starts_with("Cloning into")))
        .unwrap_or("git failed without a message")
        .chars()
        .take(500)
        .collect()
}

/// Turns git's stderr into an error of the right class.
fn classify(url: &str, reference: &str, stderr: &str) -> SourceError {
    let line = first_line(stderr);
    let lower = stderr.to_lowercase();
    if lower.contains("not allowed") && lower.contains("transport") {
        return SourceError::invalid(format!(
            "git url {url} uses a transport that is not allowed: {line}"
        ));
    }
    let ref_missing = lower.contains("remote branch")
        || lower.contains("couldn't find remote ref")
        || lower.contains("not our ref")
        || lower.contains("no such remote ref")
        || (lower.contains("upload-pack") && lower.contains("not our"));
    if !reference.is_empty() && ref_missing {
        return SourceError::GitNotFound(format!("git ref {reference:?} not found in {url}: {line}"));
    }
    let repo_missing = lower.contains("does not appear to be a git repository")
        || lower.contains("repository not found")
        || lower.contains("not found")
        || lower.contains("does not exist")
        || lower.contains("authentication failed")
        || lower.contains("could not read username")
        || lower.contains("permission denied");
    if repo_missing {
        return SourceError::GitNotFound(format!(
            "git repository {url} not found or not accessible: {line}"
        ));
    }
    let unreachable = [
        "could not resolve host",
        "could not resolve hostname",
        "failed to connect",
        "connection refused",
        "connection timed out",
        "operation timed out",
        "network is unreachable",
        "no route to host",
        "temporary failure in name resolution",
        "name or service not known",
    ];
    if unreachable.iter().any(|marker| lower.contains(marker)) {
        return SourceError::GitHostUnreachable {
            host: git_host(url).unwrap_or_else(|| url.to_owned()),
            detail: line,
        };
    }
    SourceError::GitUnavailable(format!("git clone of {url} failed: {line}"))
}

/// The host of a git URL (`https://user@host:port/path`, `git@host:path`).
fn git_host(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        // scp-like: user@host:path
        None => url.split_once(':')?.0,
    };
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_host_is_named_and_not_blamed_on_the_agent() {
        let err = classify(
            "https://user@git.example.org:8443/o/r.git",
            "",
            "Cloning into 'x'...\nfatal: unable to access 'https://git.example.org:8443/o/r.git/': Could not resolve host: git.example.org\n",
        );
        assert!(
            matches!(&err, SourceError::GitHostUnreachable { host, .. } if host == "git.example.org"),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.starts_with(crate::HOST_UNREACHABLE), "{message}");
        assert!(message.contains("Could not resolve host"), "{message}");
        use reporunner_error::ServiceError as _;
        assert_eq!(err.to_status().code(), tonic::Code::FailedPrecondition);
        let ssh = classify(
            "git@github.com:o/r.git",
            "",
            "ssh: connect to host github.com port 22: Connection refused\nfatal: Could not read from remote repository.",
        );
        assert!(
            matches!(&ssh, SourceError::GitHostUnreachable { host, .. } if host == "github.com"),
            "{ssh:?}"
        );
        assert_eq!(git_host("https://[::1]:9/r").as_deref(), Some("::1"));
        // A repository that is not there is still NOT_FOUND.
        let missing = classify(
            "https://github.com/o/r.git",
            "",
            "remote: Repository not found.\nfatal: repository 'x' not found",
        );
        assert!(matches!(missing, SourceError::GitNotFound(_)), "{missing:?}");
    }

    #[test]
    fn urls_that_smuggle_options_or_helpers_are_refused() {
        for bad in [
            "",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "a\nb",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?}");
        }
        for good in [
            "https://github.com/a/b.git",
            "git@github.com:a/b.git",
            "file:///tmp/x",
            "https://h/a::b",
        ] {
            validate_url(good).unwrap();
        }
    }

    #[test]
    fn refs_are_checked() {
        validate_ref("main").unwrap();
        validate_ref("release/v1.2").unwrap();
        for bad in ["-b", "a..b", "a b", "x:y", "HEAD~1"] {
            assert!(validate_ref(bad).is_err(), "{bad}");
        }
        assert!(is_full_commit(&"a".repeat(40)));
        assert!(!is_full_commit("abc123"));
    }

    #[test]
    fn credentials_never_reach_origins() {
        assert_eq!(
            redact_url("https://user:tok@github.com/a/b"),
            "https://github.com/a/b"
        );
        assert_eq!(redact_url("git@github.com:a/b.git"), "git@github.com:a/b.git");
    }

    #[test]
    fn first_line_prefers_fatal() {
        let err = "Cloning into 'x'...\nwarning: something\nfatal: Remote branch nope not found in upstream origin\n";
        assert_eq!(
            first_line(err),
            "fatal: Remote branch nope not found in upstream origin"
        );
        assert_eq!(
            classify("file:///r", "nope", err).to_string(),
            "git ref \"nope\" not found in file:///r: fatal: Remote branch nope not found in upstream origin"
        );
    }
}
