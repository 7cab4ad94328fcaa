//! Login and registration throttling over real gRPC on loopback, with
//! clients bound to two loopback addresses (127.0.0.1 and 127.0.0.2) so the
//! service sees two different clients; on SQLite and PostgreSQL. And the
//! modes of the files the auth service keeps.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reporunner_auth::{Auth, AuthConfig, AuthStore, RegistrationMode, grpc::AdminGrpc, grpc::AuthGrpc};
use reporunner_error::RETRY_AFTER;
use reporunner_proto::{
    auth::v1::{
        CreateUserRequest, LoginRequest, RegisterRequest, admin_service_client::AdminServiceClient,
        auth_service_client::AuthServiceClient,
    },
    common::v1::Tier,
};
use reporunner_server::{CancellationToken, GrpcServer};
use tonic::{Code, Request, Status, transport::Channel, transport::Endpoint};

use common::{TestDb, postgres, sqlite};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "correct horse battery staple 93";
const PASSWORD: &str = "violet-umbrella-orbit-42";
const WRONG: &str = "not-the-password-at-all";
const KEY: &str = "0123456789abcdef0123456789abcdef-throttle-test";
const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The auth service on loopback with the admin created.
struct Server {
    service: Arc<Auth>,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The defaults with a fixed key and no per-pair delay (so that a test can
/// fail a hundred times in a row); the tests that need the delay set it.
fn config() -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(KEY.into()),
        login_delay_max: Duration::from_millis(0),
        login_delay_base: Duration::from_millis(0),
        ..AuthConfig::default()
    }
}

impl Server {
    async fn start(db: &TestDb, config: AuthConfig) -> Self {
        let store = AuthStore::connect(&db.url).await.unwrap();
        let service = Arc::new(Auth::new(store, config, KEY.as_bytes()).await.unwrap());
        service.ensure_admin(ADMIN, ADMIN_PASSWORD).await.unwrap();
        let (addr, shutdown) = GrpcServer::new()
            .add_service(AuthGrpc::new(service.clone()).into_server())
            .add_service(AdminGrpc::new(service.clone()).into_server())
            .spawn_on_loopback()
            .await
            .unwrap();
        Self {
            service,
            addr,
            shutdown,
        }
    }

    /// A channel whose connections leave from `local`.
    async fn channel_from(&self, local: IpAddr) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .local_address(Some(local))
            .connect()
            .await
            .unwrap()
    }

    async fn client_from(&self, local: IpAddr) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel_from(local).await)
    }
}

async fn login(
    client: &mut AuthServiceClient<Channel>,
    username: &str,
    password: &str,
) -> Result<String, Status> {
    let response = client
        .login(LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await?;
    Ok(response.into_inner().tokens.unwrap().access_token)
}

async fn register(client: &mut AuthServiceClient<Channel>, username: &str) -> Result<(), Status> {
    client
        .register(RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
        })
        .await
        .map(drop)
}

/// The refusal is RESOURCE_EXHAUSTED with a `retry-after` of 1 to `max` s.
fn assert_retry_after(status: &Status, max_secs: u64) -> u64 {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let secs: u64 = status
        .metadata()
        .get(RETRY_AFTER)
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=max_secs).contains(&secs), "retry-after {secs}");
    secs
}

async fn wrong_logins_from_one_address_never_lock_the_owner_out_from_another(db: &TestDb) {
    let server = Server::start(db, config()).await;
    let mut a = server.client_from(A).await;
    let mut b = server.client_from(B).await;
    for i in 0..100 {
        let err = login(&mut a, ADMIN, WRONG).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "wrong login {i}: {err:?}");
    }
    // The 101st try from A is refused before its password is checked, for an hour.
    let checks = server.service.password_checks();
    let refused = login(&mut a, ADMIN, WRONG).await.unwrap_err();
    assert!(assert_retry_after(&refused, 3600) > 3000);
    assert!(
        refused.message().contains("this address"),
        "{}",
        refused.message()
    );
    assert_eq!(server.service.password_checks(), checks);

    // The owner, elsewhere, still gets their password checked and is let in.
    let err = login(&mut b, ADMIN, WRONG).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    login(&mut b, ADMIN, ADMIN_PASSWORD)
        .await
        .expect("the owner logs in from another address");
    assert_eq!(server.service.password_checks(), checks + 2);
    // ... while A stays refused.
    let err = login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

async fn parallel_wrong_guesses_from_one_address_check_at_most_the_limit(db: &TestDb) {
    let server = Server::start(
        db,
        AuthConfig {
            login_failures_per_address_per_hour: 100,
            max_concurrent_hashes: 4,
            ..config()
        },
    )
    .await;
    let client = server.client_from(A).await;
    let before = server.service.password_checks();
    let guesses = (0..300).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move { login(&mut client, ADMIN, &format!("guess-number-{i}")).await })
    });
    let results = futures::future::join_all(guesses).await;
    let codes: Vec<Code> = results
        .into_iter()
        .map(|r| r.unwrap().unwrap_err().code())
        .collect();
    let checked = server.service.password_checks() - before;
    let wrong = codes.iter().filter(|c| **c == Code::Unauthenticated).count();
    let refused = codes.iter().filter(|c| **c == Code::ResourceExhausted).count();
    assert_eq!(checked, 100, "password checks for 300 parallel guesses");
    assert_eq!((wrong, refused), (100, 200), "{codes:?}");
    // The owner elsewhere is unaffected.
    let mut b = server.client_from(B).await;
    login(&mut b, ADMIN, ADMIN_PASSWORD).await.unwrap();
}

async fn a_failure_delays_that_account_from_that_address_only_and_the_delay_doubles(db: &TestDb) {
    let server = Server::start(
        db,
        AuthConfig {
            login_delay_base: Duration::from_millis(500),
            login_free_failures: 0,
            login_delay_max: Duration::from_millis(2_000),
            ..config()
        },
    )
    .await;
    let mut a = server.client_from(A).await;
    let mut b = server.client_from(B).await;
    assert_eq!(
        login(&mut a, ADMIN, WRONG).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let checks = server.service.password_checks();
    // At once again from A: refused unchecked, with retry-after.
    let err = login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap_err();
    assert_retry_after(&err, 1);
    assert!(err.message().contains("your address"), "{}", err.message());
    assert_eq!(server.service.password_checks(), checks);
    // Another account from A is not delayed, nor this one from B.
    assert_eq!(
        login(&mut a, "someone", WRONG).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    login(&mut b, ADMIN, ADMIN_PASSWORD).await.unwrap();

    // After the delay A is checked again; a second failure doubles it.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        login(&mut a, ADMIN, WRONG).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap_err().code(),
        Code::ResourceExhausted,
        "the second failure's delay is 1000 ms"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap();
    // A success forgets A's failures of this account: the next wrong guess
    // waits the base delay again.
    assert_eq!(
        login(&mut a, ADMIN, WRONG).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap();
}

async fn login_forwarded_for(
    client: &mut AuthServiceClient<Channel>,
    forwarded_for: &str,
    password: &str,
) -> Result<(), Status> {
    let mut request = Request::new(LoginRequest {
        username: ADMIN.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    client.login(request).await.map(drop)
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(db: &TestDb) {
    let limited = AuthConfig {
        login_failures_per_address_per_hour: 3,
        ..config()
    };
    // Untrusted peer: a forged header does not escape A's bucket.
    let server = Server::start(db, limited.clone()).await;
    let mut a = server.client_from(A).await;
    for i in 0..3 {
        let err = login_forwarded_for(&mut a, &format!("198.51.100.{i}"), WRONG)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = login_forwarded_for(&mut a, "198.51.100.77", ADMIN_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(server);

    // A trusted proxy at A (a second server on the same database): the
    // client it names is the bucket.
    let proxied = Server::start(
        db,
        AuthConfig {
            trusted_proxies: vec![A],
            ..limited
        },
    )
    .await;
    let mut proxy = proxied.client_from(A).await;
    for _ in 0..3 {
        let err = login_forwarded_for(&mut proxy, "203.0.113.5, 127.0.0.1", WRONG)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = login_forwarded_for(&mut proxy, "203.0.113.5", ADMIN_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // A forged first hop does not help either: the last untrusted one counts.
    let err = login_forwarded_for(&mut proxy, "192.0.2.1, 203.0.113.5", ADMIN_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    login_forwarded_for(&mut proxy, "203.0.113.6", ADMIN_PASSWORD)
        .await
        .expect("another client behind the proxy is checked");
}

async fn a_registration_flood_from_one_address_is_throttled_but_not_others(db: &TestDb) {
    let server = Server::start(db, config()).await;
    let mut a = server.client_from(A).await;
    let mut b = server.client_from(B).await;
    let limit = AuthConfig::default().registrations_per_address_per_hour;
    assert_eq!(limit, 5);
    // Twelve at once: exactly the limit get through (the count is atomic).
    let flood = (0..12).map(|i| {
        let mut a = a.clone();
        tokio::spawn(async move { register(&mut a, &format!("flood{i}")).await })
    });
    let results: Vec<Result<(), Status>> = futures::future::join_all(flood)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), limit as usize);
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(assert_retry_after(err, 3600) > 3000);
        assert!(err.message().contains("registrations"), "{}", err.message());
    }
    let err = register(&mut a, "flood-next").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    register(&mut b, "neighbour")
        .await
        .expect("another address registers");
    login(&mut b, "neighbour", PASSWORD).await.unwrap();

    // The admin's CreateUser is not limited, even from A.
    let token = login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap();
    let mut admin = AdminServiceClient::new(server.channel_from(A).await);
    for i in 0..3 {
        let mut request = Request::new(CreateUserRequest {
            username: format!("created{i}"),
            password: PASSWORD.into(),
            tier: Tier::Free.into(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        admin.create_user(request).await.unwrap();
    }
}

async fn closed_registration_is_permission_denied(db: &TestDb) {
    let server = Server::start(
        db,
        AuthConfig {
            registration: RegistrationMode::Closed,
            ..config()
        },
    )
    .await;
    let mut a = server.client_from(A).await;
    let err = register(&mut a, "hopeful").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "registration is closed on this server; ask the admin"
    );
    // The admin still creates accounts.
    let token = login(&mut a, ADMIN, ADMIN_PASSWORD).await.unwrap();
    let mut admin = AdminServiceClient::new(server.channel_from(A).await);
    let mut request = Request::new(CreateUserRequest {
        username: "invited".into(),
        password: PASSWORD.into(),
        tier: Tier::Free.into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    admin.create_user(request).await.unwrap();
    login(&mut a, "invited", PASSWORD).await.unwrap();
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::sqlite();
                super::$name(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}

on_both!(
    wrong_logins_from_one_address_never_lock_the_owner_out_from_another,
    parallel_wrong_guesses_from_one_address_check_at_most_the_limit,
    a_failure_delays_that_account_from_that_address_only_and_the_delay_doubles,
    forwarded_for_is_believed_only_from_trusted_proxies,
    a_registration_flood_from_one_address_is_throttled_but_not_others,
    closed_registration_is_permission_denied,
);

#[cfg(unix)]
mod file_modes {
    use std::{os::unix::fs::PermissionsExt, path::Path};

    use reporunner_auth::{AuthConfig, AuthStore, config::JWT_KEY_FILE, files::create_private_dir};
    use sea_orm::ConnectionTrait;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn loosen(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What `reporunner` does on start (see `open_auth` in the CLI).
    async fn open(data_dir: &Path) -> AuthStore {
        create_private_dir(data_dir).unwrap();
        let config = AuthConfig::default();
        let store = AuthStore::connect(&config.database_url(data_dir)).await.unwrap();
        config.signing_key(data_dir).unwrap();
        store
    }

    #[tokio::test]
    async fn a_new_data_dir_is_0700_and_the_database_its_wal_and_the_key_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let store = open(&data_dir).await;
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&data_dir.join("auth.db")), 0o600);
        assert_eq!(mode(&data_dir.join(JWT_KEY_FILE)), 0o600);
        // SQLite creates -wal and -shm with the database's mode (the test
        // runs under the usual umask, which would give 0644 otherwise).
        store
            .db()
            .write()
            .execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .unwrap();
        store.record_login_failure("x", None, "unknown").await.unwrap();
        for companion in ["auth.db-wal", "auth.db-shm"] {
            assert_eq!(mode(&data_dir.join(companion)), 0o600, "{companion}");
        }
    }

    #[tokio::test]
    async fn loose_existing_files_are_tightened_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        // Closed, not dropped: a pooled connection still mapping the WAL
        // index would take a SIGBUS when it is truncated below.
        open(&data_dir).await.db().close().await.unwrap();
        for companion in ["auth.db-wal", "auth.db-shm"] {
            std::fs::write(data_dir.join(companion), b"").unwrap();
        }
        loosen(&data_dir, 0o755);
        for file in ["auth.db", "auth.db-wal", "auth.db-shm", JWT_KEY_FILE] {
            loosen(&data_dir.join(file), 0o644);
        }
        drop(open(&data_dir).await);
        assert_eq!(mode(&data_dir), 0o700);
        for file in ["auth.db", "auth.db-wal", "auth.db-shm", JWT_KEY_FILE] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
    }
}
