//! Errors a user can act on, each with its own exit code (listed in
//! `reporunner --help` and the README), and the exit code of any error.

use crate::stdout::StdoutError;

/// The exit code of a run that ended DEGRADED.
pub const DEGRADED_EXIT: u8 = 3;

/// An error the message alone tells the user how to act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Actionable {
    /// Some components run, others are down.
    #[error("the run is degraded: some components are down (see above)")]
    Degraded,
    #[error("not logged in to {server}; run `reporunner login USERNAME --server {server}`")]
    NotLoggedIn { server: String },
    #[error("the login for {server} has expired or was revoked ({detail}); run `reporunner login` again")]
    LoginExpired { server: String, detail: String },
    #[error("the server {server} cannot be reached ({detail}); is `reporunner serve` running there?")]
    ServerDown { server: String, detail: String },
    #[error("the git host {host} cannot be reached: {detail}")]
    HostUnreachable { host: String, detail: String },
    /// Ctrl-C.
    #[error("stopped")]
    Interrupted,
}

impl Actionable {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Degraded => DEGRADED_EXIT,
            Self::NotLoggedIn { .. } | Self::LoginExpired { .. } => 4,
            Self::ServerDown { .. } => 5,
            Self::HostUnreachable { .. } => 6,
            Self::Interrupted => 130,
        }
    }
}

/// The exit code for `err`, and what to print on standard error (nothing
/// when standard output was closed by its reader: `| head` is not a
/// failure).
pub fn exit_code(err: &anyhow::Error) -> (u8, Option<String>) {
    if let Some(stdout) = err.downcast_ref::<StdoutError>()
        && stdout.is_closed()
    {
        return (0, None);
    }
    match err.downcast_ref::<Actionable>() {
        Some(Actionable::Interrupted) => (130, Some("stopped".to_owned())),
        Some(actionable) => (actionable.exit_code(), Some(format!("error: {err:#}"))),
        None => (1, Some(format!("error: {err:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_actionable_error_has_its_own_code() {
        let errors = [
            Actionable::Degraded,
            Actionable::NotLoggedIn { server: "s".into() },
            Actionable::ServerDown {
                server: "s".into(),
                detail: "d".into(),
            },
            Actionable::HostUnreachable {
                host: "h".into(),
                detail: "d".into(),
            },
            Actionable::Interrupted,
        ];
        let mut codes: Vec<u8> = errors.iter().map(Actionable::exit_code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert!(!codes.contains(&0) && !codes.contains(&1) && !codes.contains(&2));
    }

    #[test]
    fn a_closed_pipe_is_quiet_and_ctrl_c_says_stopped() {
        let closed = anyhow::Error::from(StdoutError(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(exit_code(&closed), (0, None));
        let stopped = anyhow::Error::from(Actionable::Interrupted);
        assert_eq!(exit_code(&stopped), (130, Some("stopped".into())));
        let other = anyhow::anyhow!("boom");
        assert_eq!(exit_code(&other), (1, Some("error: boom".into())));
    }
}
