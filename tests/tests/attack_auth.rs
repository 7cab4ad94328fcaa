//! The account attacks on `reporunner serve`, through the mesh as `serve`
//! wires it (auth behind its public listener, clients bound to two loopback
//! addresses so the server sees two clients):
//! - 100 wrong logins on the admin's name from one address lock the admin
//!   out everywhere (they did: the right password then got
//!   RESOURCE_EXHAUSTED for an hour): now the right password from another
//!   address logs in;
//! - 300 parallel wrong guesses from one address check at most the
//!   configured number of passwords (they checked 127 of a limit of 100);
//! - a registration flood from one address is throttled (64 accounts in
//!   1.6 s before);
//! - the data directory is 0700 and its databases and keys 0600 (they were
//!   0644 in a 0755 directory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::Duration,
};

use reporunner_node::{ServiceName, Settings};
use reporunner_proto::auth::v1::{LoginRequest, RegisterRequest, auth_service_client::AuthServiceClient};
use reporunner_tests::{FRONT_DOOR, Sandbox};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "correct horse battery staple 93";
const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

async fn mesh(edit: impl FnOnce(&mut Settings)) -> Sandbox {
    Sandbox::builder()
        .with_all(FRONT_DOOR)
        .settings(|s| {
            s.admin.username = Some(ADMIN.into());
            s.admin.password = Some(ADMIN_PASSWORD.into());
            edit(s);
        })
        .start()
        .await
        .unwrap()
}

/// An auth client whose connections leave from `local`.
async fn auth_from(mesh: &Sandbox, local: IpAddr) -> AuthServiceClient<Channel> {
    let addr = mesh.addr(ServiceName::Auth).unwrap();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(local))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    AuthServiceClient::new(channel)
}

async fn login(client: &mut AuthServiceClient<Channel>, password: &str) -> Result<(), tonic::Status> {
    client
        .login(LoginRequest {
            username: ADMIN.into(),
            password: password.into(),
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_wrong_logins_from_one_address_do_not_lock_the_admin_out_from_another() {
    let mesh = mesh(|_| {}).await;
    let mut attacker = auth_from(&mesh, A).await;
    let mut refused = 0;
    for _ in 0..100 {
        match login(&mut attacker, "not-the-password-at-all").await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            other => panic!("a wrong password was answered {other:?}"),
        }
    }
    assert!(
        refused > 0,
        "100 wrong logins from one address were never slowed down"
    );
    let mut owner = auth_from(&mesh, B).await;
    login(&mut owner, ADMIN_PASSWORD)
        .await
        .expect("the admin logs in from another address");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_parallel_guesses_check_at_most_the_configured_number() {
    // No per-pair delay: only the per-address bound decides.
    let mesh = mesh(|s| {
        s.auth.login_delay_base = Duration::from_millis(0);
        s.auth.login_delay_max = Duration::from_millis(0);
    })
    .await;
    let attacker = auth_from(&mesh, A).await;
    let guesses = (0..300).map(|_| {
        let mut client = attacker.clone();
        tokio::spawn(async move { login(&mut client, "not-the-password-at-all").await })
    });
    let mut checked = 0;
    let mut refused = 0;
    for guess in guesses {
        match guess.await.unwrap() {
            Err(status) if status.code() == Code::Unauthenticated => checked += 1,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
                refused += 1;
            }
            other => panic!("a wrong password was answered {other:?}"),
        }
    }
    let limit = Settings::default().auth.login_failures_per_address_per_hour;
    assert!(
        checked <= limit as usize,
        "{checked} passwords checked, the limit is {limit}"
    );
    assert_eq!(checked + refused, 300);
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_flood_from_one_address_is_throttled() {
    let mesh = mesh(|_| {}).await;
    let mut flood = auth_from(&mesh, A).await;
    let mut created = 0;
    let mut refused = 0;
    for i in 0..30 {
        let answer = flood
            .register(RegisterRequest {
                username: format!("flood-{i}"),
                password: "lantern-meadow-copper-72".into(),
            })
            .await;
        match answer {
            Ok(_) => created += 1,
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    let limit = Settings::default().auth.registrations_per_address_per_hour;
    // The sandbox registered its own user from this address at start.
    assert!(
        created < limit as usize,
        "{created} accounts from one address, the limit is {limit}"
    );
    assert_eq!(created + refused, 30);
    // Another address still may register.
    let mut other = auth_from(&mesh, B).await;
    other
        .register(RegisterRequest {
            username: "from-elsewhere".into(),
            password: "lantern-meadow-copper-72".into(),
        })
        .await
        .expect("another address registers");
    mesh.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_is_private_and_its_databases_and_keys_are_0600() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = parent.path().join("data");
    let mesh = mesh(|s| s.data_dir = data.clone()).await;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in ["auth.db", "orchestrator.db", "jwt.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".db-wal") || name.ends_with(".db-shm") || name.ends_with(".key") {
            assert_eq!(mode(&entry.path()), 0o600, "{name}");
        }
    }
    mesh.stop().await.unwrap();
}
