//! A CLI session against a server: which server, which stored login, and
//! access tokens that refresh themselves.
//!
//! The server is `--server` (or `REPORUNNER_SERVER`), else the one the stored
//! login belongs to, else the local default. A stored login is used only for
//! the server that issued it. An access token that expires within a minute, or
//! that the server refuses as unauthenticated, is refreshed once with the
//! refresh token, and the rotated pair is stored again.

use std::{future::Future, path::PathBuf, time::Duration};

use reporunner_client::{ClientConfig, ServiceChannel};
use reporunner_proto::auth::v1::{
    RefreshRequest, TokenPair, admin_service_client::AdminServiceClient,
    auth_service_client::AuthServiceClient,
};
use tonic::{Code, Status};

use crate::{
    credentials::{self, Credentials},
    errors::Actionable,
};

/// Where a client goes when nothing says otherwise: `reporunner serve`'s default.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long the CLI waits for a server to report SERVING.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Refresh an access token this long before it expires.
const REFRESH_MARGIN_SECS: i64 = 60;

/// A server, and the login for it if there is one.
#[derive(Debug)]
pub struct Session {
    server: String,
    path: PathBuf,
    credentials: Option<Credentials>,
    config: ClientConfig,
}

impl Session {
    /// Opens the stored login at the default path and picks the server.
    pub fn open(server: Option<String>) -> anyhow::Result<Self> {
        Self::open_at(credentials::default_path()?, server)
    }

    /// Like [`Session::open`] with the stored login at `path`.
    pub fn open_at(path: PathBuf, server: Option<String>) -> anyhow::Result<Self> {
        let stored = credentials::load(&path)?;
        let server = match server {
            Some(server) => normalize_server(&server)?,
            None => match &stored {
                Some(stored) => stored.server.clone(),
                None => DEFAULT_SERVER.to_string(),
            },
        };
        let credentials = stored.filter(|c| c.server == server);
        Ok(Self {
            server,
            path,
            credentials,
            config: ClientConfig::default(),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    pub fn credentials_path(&self) -> &std::path::Path {
        &self.path
    }

    /// A health-checked channel to `service` (a full gRPC service name) on the server.
    pub async fn channel(&self, service: &str) -> anyhow::Result<ServiceChannel> {
        let channel = reporunner_client::connect(service, std::slice::from_ref(&self.server), &self.config)
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.server))?;
        channel
            .ready_within(READY_WITHIN)
            .await
            .map_err(|s| Actionable::ServerDown {
                server: self.server.clone(),
                detail: s.message().to_owned(),
            })?;
        Ok(channel)
    }

    pub async fn auth(&self) -> anyhow::Result<AuthServiceClient<ServiceChannel>> {
        Ok(AuthServiceClient::new(
            self.channel(reporunner_proto::auth::v1::auth_service_server::SERVICE_NAME)
                .await?,
        ))
    }

    pub async fn admin(&self) -> anyhow::Result<AdminServiceClient<ServiceChannel>> {
        Ok(AdminServiceClient::new(
            self.channel(reporunner_proto::auth::v1::admin_service_server::SERVICE_NAME)
                .await?,
        ))
    }

    /// Stores a fresh login for this server.
    pub fn save(&mut self, username: &str, tokens: TokenPair) -> anyhow::Result<()> {
        let credentials = Credentials {
            server: self.server.clone(),
            username: username.to_string(),
            access_token: tokens.access_token,
            access_expires_at: tokens.access_expires_at.map(|t| t.seconds).unwrap_or(0),
            refresh_token: tokens.refresh_token,
            refresh_expires_at: tokens.refresh_expires_at.map(|t| t.seconds).unwrap_or(0),
        };
        credentials::store(&self.path, &credentials)?;
        self.credentials = Some(credentials);
        Ok(())
    }

    /// Forgets the stored login; `false` when there was none.
    pub fn forget(&mut self) -> anyhow::Result<bool> {
        self.credentials = None;
        credentials::remove(&self.path)
    }

    /// An access token that is valid for at least a minute, refreshing it
    /// when needed.
    pub async fn access_token(&mut self) -> anyhow::Result<String> {
        self.require_login()?;
        let Some(credentials) = &self.credentials else {
            return Err(self.not_logged_in());
        };
        if credentials.access_expires_at != 0 && credentials.access_expires_at - REFRESH_MARGIN_SECS <= now()
        {
            self.refresh().await?;
        }
        self.credentials
            .as_ref()
            .map(|c| c.access_token.clone())
            .ok_or_else(|| self.not_logged_in())
    }

    /// Fails with "not logged in" (exit code 4) before anything is dialled
    /// when there is no stored login for this server.
    pub fn require_login(&self) -> anyhow::Result<()> {
        match &self.credentials {
            Some(_) => Ok(()),
            None => Err(self.not_logged_in()),
        }
    }

    fn not_logged_in(&self) -> anyhow::Error {
        Actionable::NotLoggedIn {
            server: self.server.clone(),
        }
        .into()
    }

    /// Trades the refresh token for a new pair and stores it.
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        let Some(credentials) = self.credentials.clone() else {
            return Err(self.not_logged_in());
        };
        if credentials.refresh_expires_at != 0 && credentials.refresh_expires_at <= now() {
            return Err(Actionable::LoginExpired {
                server: self.server.clone(),
                detail: "the refresh token expired".into(),
            }
            .into());
        }
        let response = self
            .auth()
            .await?
            .refresh(RefreshRequest {
                refresh_token: credentials.refresh_token.clone(),
            })
            .await;
        match response {
            Ok(response) => {
                let tokens = response
                    .into_inner()
                    .tokens
                    .ok_or_else(|| anyhow::anyhow!("the server's Refresh answer has no tokens"))?;
                self.save(&credentials.username, tokens)
            }
            Err(status) if status.code() == Code::Unauthenticated => Err(Actionable::LoginExpired {
                server: self.server.clone(),
                detail: status.message().to_owned(),
            }
            .into()),
            Err(status) => Err(describe(status)),
        }
    }

    /// Runs `call` with a valid access token; when the server answers
    /// UNAUTHENTICATED, refreshes once and runs it again.
    pub async fn call<T, F, Fut>(&mut self, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let token = self.access_token().await?;
        match call(token).await {
            Ok(value) => Ok(value),
            Err(status) if status.code() == Code::Unauthenticated => {
                self.refresh().await?;
                let token = self.access_token().await?;
                call(token).await.map_err(describe)
            }
            Err(status) => Err(describe(status)),
        }
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Result<tonic::Request<T>, Status> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("the stored access token is not valid metadata"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// A status as a user reads it: the message, the code, and when to retry.
pub fn describe(status: Status) -> anyhow::Error {
    let retry = status
        .metadata()
        .get(reporunner_error::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|secs| format!("; retry after {secs} s"))
        .unwrap_or_default();
    anyhow::anyhow!("{} ({:?}{retry})", status.message(), status.code())
}

/// Accepts `host:port` or a URL; answers a URL.
fn normalize_server(server: &str) -> anyhow::Result<String> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        anyhow::bail!("--server is empty; give a URL such as {DEFAULT_SERVER}");
    }
    let url = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    url.parse::<tonic::transport::Uri>()
        .map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
    Ok(url)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_urls_and_a_login_is_only_used_for_its_server() {
        assert_eq!(normalize_server("127.0.0.1:5").unwrap(), "http://127.0.0.1:5");
        assert_eq!(
            normalize_server("https://rr.example/").unwrap(),
            "https://rr.example"
        );
        assert!(normalize_server("  ").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        credentials::store(
            &path,
            &Credentials {
                server: "http://127.0.0.1:7".into(),
                username: "ada".into(),
                access_token: "a".into(),
                access_expires_at: 0,
                refresh_token: "r".into(),
                refresh_expires_at: 0,
            },
        )
        .unwrap();
        let same = Session::open_at(path.clone(), None).unwrap();
        assert_eq!(same.server(), "http://127.0.0.1:7");
        assert!(same.credentials().is_some());
        let other = Session::open_at(path, Some("127.0.0.1:8".into())).unwrap();
        assert!(other.credentials().is_none());
    }

    #[test]
    fn rate_limit_refusals_say_when_to_retry() {
        let mut status = Status::resource_exhausted("10 of 10 metered requests used");
        status
            .metadata_mut()
            .insert(reporunner_error::RETRY_AFTER, "42".parse().unwrap());
        let shown = describe(status).to_string();
        assert!(shown.contains("retry after 42 s"), "{shown}");
    }
}
