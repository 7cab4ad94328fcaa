//! `AuthStore` against SQLite (a temporary file) and the real PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432`; each test
//! creates and drops its own database). Set `REPORUNNER_SKIP_PG=1` to skip
//! the PostgreSQL half where no server runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use reporunner_auth::{
    AuthError, AuthStore, NewUser,
    store::{AuditEntry, LoginReservation},
    token,
};
use reporunner_proto::{auth::v1::UsageKind, common::v1::Tier};

const HOUR: Duration = Duration::from_secs(3600);

struct TestDb {
    url: String,
    store: AuthStore,
    _db: common::TestDb,
}

impl TestDb {
    /// A second, independent connection pool on the same database (as a
    /// second replica of the service would have).
    async fn another_pool(&self) -> AuthStore {
        AuthStore::connect(&self.url).await.unwrap()
    }
}

async fn open(db: common::TestDb) -> TestDb {
    let store = AuthStore::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("migrating {}: {e:?}", db.url));
    TestDb {
        url: db.url.clone(),
        store,
        _db: db,
    }
}

async fn sqlite() -> TestDb {
    open(common::sqlite()).await
}

async fn postgres() -> Option<TestDb> {
    Some(open(common::postgres().await?).await)
}

/// Runs `$body(&TestDb)` once on SQLite and once on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = super::sqlite().await;
                super::$name(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = super::postgres().await {
                    super::$name(&db).await;
                }
            }
        }
    )*};
}

on_both!(
    users_are_created_found_changed_and_deleted,
    there_is_exactly_one_admin_and_it_is_protected,
    users_are_listed_in_pages,
    refresh_tokens_rotate_once_and_reuse_revokes_all,
    quota_is_counted_per_kind_and_refused_with_retry_after,
    quota_window_rolls,
    quota_is_atomic_across_two_pools,
    login_failures_are_counted_and_cleared,
    login_reservations_are_atomic_across_two_pools,
    login_reservations_roll_per_address_and_delay_per_pair,
    registrations_are_counted_atomically_per_address,
    audit_events_are_recorded_and_listed_newest_first,
    migrations_are_idempotent,
);

fn new_user(name: &str, tier: Tier) -> NewUser {
    NewUser {
        username: name.into(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        tier,
    }
}

async fn users_are_created_found_changed_and_deleted(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", Tier::Free)).await.unwrap();
    assert_eq!(alice.tier, Tier::Free);
    assert!(!alice.blocked);
    assert_eq!(store.find_user(&alice.id).await.unwrap().unwrap(), alice);
    assert_eq!(
        store.find_user_by_username("alice").await.unwrap().unwrap().id,
        alice.id
    );
    assert!(store.find_user_by_username("nobody").await.unwrap().is_none());

    let err = store
        .create_user(new_user("alice", Tier::Premium))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::UsernameTaken(ref n) if n == "alice"),
        "{err:?}"
    );
    for bad in ["", "a b", "x/y", &"n".repeat(65)] {
        let err = store.create_user(new_user(bad, Tier::Free)).await.unwrap_err();
        assert!(matches!(err, AuthError::InvalidArgument(_)), "{bad}: {err:?}");
    }

    let blocked = store.set_blocked(&alice.id, true).await.unwrap();
    assert!(blocked.blocked);
    assert!(store.find_user(&alice.id).await.unwrap().unwrap().blocked);
    assert!(!store.set_blocked(&alice.id, false).await.unwrap().blocked);

    assert_eq!(
        store.set_tier(&alice.id, Tier::Premium).await.unwrap().tier,
        Tier::Premium
    );
    assert_eq!(
        store.set_tier(&alice.id, Tier::Tester).await.unwrap().tier,
        Tier::Tester
    );
    assert!(matches!(
        store.set_tier(&alice.id, Tier::Unspecified).await,
        Err(AuthError::InvalidArgument(_))
    ));

    store
        .consume_quota(&alice.id, UsageKind::Search, "Search", 10, HOUR)
        .await
        .unwrap();
    store
        .store_refresh_token(&alice.id, "h1", i64::MAX)
        .await
        .unwrap();
    store.delete_user(&alice.id).await.unwrap();
    assert!(store.find_user(&alice.id).await.unwrap().is_none());
    assert!(store.find_refresh_token("h1").await.unwrap().is_none());
    assert!(matches!(
        store.delete_user(&alice.id).await,
        Err(AuthError::UserNotFound(_))
    ));
    assert!(matches!(
        store.set_blocked("missing", true).await,
        Err(AuthError::UserNotFound(_))
    ));
    // The name is free again.
    store.create_user(new_user("alice", Tier::Free)).await.unwrap();
}

async fn there_is_exactly_one_admin_and_it_is_protected(db: &TestDb) {
    let store = &db.store;
    assert!(store.find_admin().await.unwrap().is_none());
    let admin = store.create_user(new_user("root", Tier::Admin)).await.unwrap();
    assert!(admin.is_admin());
    assert_eq!(store.find_admin().await.unwrap().unwrap().id, admin.id);

    // Also through a second pool, as a second replica would try it.
    let other = db.another_pool().await;
    for s in [store, &other] {
        let err = s.create_user(new_user("root2", Tier::Admin)).await.unwrap_err();
        assert!(matches!(err, AuthError::AdminExists), "{err:?}");
    }
    assert!(store.find_user_by_username("root2").await.unwrap().is_none());

    assert!(matches!(
        store.set_blocked(&admin.id, true).await,
        Err(AuthError::AdminProtected("blocked"))
    ));
    assert!(matches!(
        store.delete_user(&admin.id).await,
        Err(AuthError::AdminProtected("deleted"))
    ));
    assert!(matches!(
        store.set_tier(&admin.id, Tier::Free).await,
        Err(AuthError::AdminProtected("downgraded"))
    ));
    let after = store.find_user(&admin.id).await.unwrap().unwrap();
    assert_eq!((after.tier, after.blocked), (Tier::Admin, false));

    let bob = store.create_user(new_user("bob", Tier::Free)).await.unwrap();
    assert!(matches!(
        store.set_tier(&bob.id, Tier::Admin).await,
        Err(AuthError::InvalidArgument(_))
    ));
    assert_eq!(store.find_user(&bob.id).await.unwrap().unwrap().tier, Tier::Free);
}

async fn users_are_listed_in_pages(db: &TestDb) {
    let store = &db.store;
    let mut names: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
    for name in names.iter().rev() {
        store.create_user(new_user(name, Tier::Free)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (users, next) = store.list_users(3, &token).await.unwrap();
        pages += 1;
        assert!(users.len() <= 3);
        seen.extend(users.into_iter().map(|u| u.username));
        if next.is_empty() {
            break;
        }
        token = next;
        assert!(pages < 10, "paging does not end");
    }
    names.sort();
    assert_eq!(seen, names);
    assert_eq!(pages, 3);
    assert_eq!(store.list_users(0, "").await.unwrap().0.len(), 7);
    assert!(matches!(
        store.list_users(3, "garbage!").await,
        Err(AuthError::InvalidPageToken)
    ));
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_all(db: &TestDb) {
    let store = &db.store;
    let user = store.create_user(new_user("carol", Tier::Free)).await.unwrap();
    let far = reporunner_auth::now_ms() + 3_600_000;
    let first = token::new_refresh_token();
    store
        .store_refresh_token(&user.id, &first.hash, far)
        .await
        .unwrap();

    let second = token::new_refresh_token();
    let rotated = store
        .rotate_refresh_token(&first.hash, &second.hash, far)
        .await
        .unwrap();
    assert_eq!(rotated.user_id, user.id);
    let spent = store.find_refresh_token(&first.hash).await.unwrap().unwrap();
    assert!(spent.revoked_at_ms.is_some());
    assert_eq!(spent.replaced_by.as_deref(), Some(rotated.id.as_str()));

    // The spent token is presented again: refused, and the family is revoked.
    let third = token::new_refresh_token();
    assert!(matches!(
        store.rotate_refresh_token(&first.hash, &third.hash, far).await,
        Err(AuthError::InvalidToken)
    ));
    assert!(
        store
            .find_refresh_token(&second.hash)
            .await
            .unwrap()
            .unwrap()
            .revoked_at_ms
            .is_some()
    );
    assert!(matches!(
        store.rotate_refresh_token(&second.hash, &third.hash, far).await,
        Err(AuthError::InvalidToken)
    ));

    // Unknown and expired tokens are refused.
    assert!(matches!(
        store.rotate_refresh_token("unknown", &third.hash, far).await,
        Err(AuthError::InvalidToken)
    ));
    let old = token::new_refresh_token();
    store
        .store_refresh_token(&user.id, &old.hash, reporunner_auth::now_ms() - 1)
        .await
        .unwrap();
    assert!(matches!(
        store.rotate_refresh_token(&old.hash, &third.hash, far).await,
        Err(AuthError::InvalidToken)
    ));

    // Logout of one token, then of all.
    let a = token::new_refresh_token();
    let b = token::new_refresh_token();
    store.store_refresh_token(&user.id, &a.hash, far).await.unwrap();
    store.store_refresh_token(&user.id, &b.hash, far).await.unwrap();
    assert_eq!(
        store.revoke_refresh_token(&a.hash).await.unwrap().as_deref(),
        Some(user.id.as_str())
    );
    assert_eq!(store.revoke_refresh_token(&a.hash).await.unwrap(), None);
    assert_eq!(store.revoke_all_refresh_tokens(&user.id).await.unwrap(), 2); // b and `old`
    assert!(matches!(
        store.rotate_refresh_token(&b.hash, &third.hash, far).await,
        Err(AuthError::InvalidToken)
    ));
}

async fn quota_is_counted_per_kind_and_refused_with_retry_after(db: &TestDb) {
    let store = &db.store;
    let user = store.create_user(new_user("dave", Tier::Free)).await.unwrap();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let outcome = store
            .consume_quota(&user.id, UsageKind::MeteredRequest, "CreateRun", 3, HOUR)
            .await
            .unwrap();
        assert!(outcome.allowed);
        assert_eq!(outcome.limit, 3);
        remaining.push(outcome.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = store
        .consume_quota(&user.id, UsageKind::MeteredRequest, "CreateRun", 3, HOUR)
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let retry = refused.retry_after.unwrap();
    assert!(retry > Duration::from_secs(3590) && retry <= HOUR, "{retry:?}");
    assert!(refused.resets_at_ms > reporunner_auth::now_ms());

    // Other kinds have their own count.
    assert!(
        store
            .consume_quota(&user.id, UsageKind::Search, "Search", 3, HOUR)
            .await
            .unwrap()
            .allowed
    );

    let usage = store.usage(&user.id, HOUR).await.unwrap();
    let metered = usage
        .iter()
        .find(|u| u.kind == UsageKind::MeteredRequest)
        .unwrap();
    assert_eq!(
        (metered.last_window, metered.total),
        (3, 3),
        "a refusal is not usage"
    );
    let search = usage.iter().find(|u| u.kind == UsageKind::Search).unwrap();
    assert_eq!((search.last_window, search.total), (1, 1));

    assert!(matches!(
        store
            .consume_quota("missing", UsageKind::Search, "Search", 3, HOUR)
            .await,
        Err(AuthError::UserNotFound(_))
    ));
    assert!(matches!(
        store
            .consume_quota(&user.id, UsageKind::Unspecified, "x", 3, HOUR)
            .await,
        Err(AuthError::InvalidArgument(_))
    ));
}

async fn quota_window_rolls(db: &TestDb) {
    let store = &db.store;
    let user = store.create_user(new_user("erin", Tier::Free)).await.unwrap();
    let window = Duration::from_millis(400);
    assert!(
        store
            .consume_quota(&user.id, UsageKind::AgentCall, "x", 1, window)
            .await
            .unwrap()
            .allowed
    );
    let refused = store
        .consume_quota(&user.id, UsageKind::AgentCall, "x", 1, window)
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after.unwrap() <= window);
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    assert!(
        store
            .consume_quota(&user.id, UsageKind::AgentCall, "x", 1, window)
            .await
            .unwrap()
            .allowed
    );
    let usage = store.usage(&user.id, window).await.unwrap();
    assert_eq!((usage[0].last_window, usage[0].total), (1, 2));
}

async fn quota_is_atomic_across_two_pools(db: &TestDb) {
    let user = db.store.create_user(new_user("frank", Tier::Free)).await.unwrap();
    let pools = [db.store.clone(), db.another_pool().await];
    let calls = (0..30).map(|i| {
        let store = pools[i % 2].clone();
        let user_id = user.id.clone();
        tokio::spawn(async move {
            store
                .consume_quota(&user_id, UsageKind::MeteredRequest, "CreateRun", 10, HOUR)
                .await
        })
    });
    let outcomes = futures::future::join_all(calls).await;
    let allowed = outcomes
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|o| o.allowed)
        .count();
    assert_eq!(allowed, 10);
    let usage = db.store.usage(&user.id, HOUR).await.unwrap();
    assert_eq!(usage[0].total, 10);
}

async fn login_failures_are_counted_and_cleared(db: &TestDb) {
    let store = &db.store;
    for _ in 0..3 {
        store
            .record_login_failure("ghost", None, "192.0.2.1")
            .await
            .unwrap();
    }
    store
        .record_login_failure("other", None, "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(
        store.count_login_failures_from("192.0.2.1", HOUR).await.unwrap(),
        4
    );
    assert_eq!(store.count_login_failures("ghost", HOUR).await.unwrap(), 3);
    assert_eq!(
        store.count_login_failures("ghost", Duration::ZERO).await.unwrap(),
        0
    );
    store.clear_login_failures("ghost").await.unwrap();
    assert_eq!(store.count_login_failures("ghost", HOUR).await.unwrap(), 0);
    assert_eq!(store.count_login_failures("other", HOUR).await.unwrap(), 1);
}

fn no_delay(_: u64) -> Duration {
    Duration::ZERO
}

async fn login_reservations_are_atomic_across_two_pools(db: &TestDb) {
    let pools = [db.store.clone(), db.another_pool().await];
    let calls = (0..30).map(|i| {
        let store = pools[i % 2].clone();
        tokio::spawn(async move {
            store
                .reserve_login_attempt("victim", "198.51.100.1", 10, HOUR, no_delay)
                .await
        })
    });
    let outcomes = futures::future::join_all(calls).await;
    let reserved = outcomes
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|o| matches!(o, LoginReservation::Reserved { .. }))
        .count();
    assert_eq!(reserved, 10);
    assert_eq!(
        db.store
            .count_login_failures_from("198.51.100.1", HOUR)
            .await
            .unwrap(),
        10
    );
}

async fn login_reservations_roll_per_address_and_delay_per_pair(db: &TestDb) {
    let store = &db.store;
    let window = Duration::from_millis(300);
    for _ in 0..2 {
        let r = store
            .reserve_login_attempt("u", "192.0.2.1", 2, window, no_delay)
            .await
            .unwrap();
        assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
    }
    match store
        .reserve_login_attempt("v", "192.0.2.1", 2, window, no_delay)
        .await
        .unwrap()
    {
        LoginReservation::AddressLimit { retry_after } => assert!(retry_after <= window),
        other => panic!("{other:?}"),
    }
    // The refusal recorded nothing; another address is not affected.
    assert_eq!(
        store.count_login_failures_from("192.0.2.1", HOUR).await.unwrap(),
        2
    );
    let r = store
        .reserve_login_attempt("u", "192.0.2.2", 2, window, no_delay)
        .await
        .unwrap();
    assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
    // Once the window has passed, the address may try again, and its old
    // failures are gone.
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let r = store
        .reserve_login_attempt("u", "192.0.2.1", 2, window, no_delay)
        .await
        .unwrap();
    assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
    assert_eq!(
        store.count_login_failures_from("192.0.2.1", HOUR).await.unwrap(),
        1
    );

    // A pair that failed waits its delay; the same account elsewhere does not.
    let second = |n: u64| Duration::from_secs(n.min(1));
    let r = store
        .reserve_login_attempt("w", "192.0.2.3", 100, HOUR, second)
        .await
        .unwrap();
    assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
    match store
        .reserve_login_attempt("w", "192.0.2.3", 100, HOUR, second)
        .await
        .unwrap()
    {
        LoginReservation::TooSoon { retry_after } => {
            assert!(retry_after <= Duration::from_secs(1) && retry_after > Duration::ZERO)
        }
        other => panic!("{other:?}"),
    }
    let r = store
        .reserve_login_attempt("w", "192.0.2.4", 100, HOUR, second)
        .await
        .unwrap();
    assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
    // A success there clears the pair.
    store.clear_login_failures_from("w", "192.0.2.3").await.unwrap();
    let r = store
        .reserve_login_attempt("w", "192.0.2.3", 100, HOUR, second)
        .await
        .unwrap();
    assert!(matches!(r, LoginReservation::Reserved { .. }), "{r:?}");
}

async fn registrations_are_counted_atomically_per_address(db: &TestDb) {
    let pools = [db.store.clone(), db.another_pool().await];
    let calls = (0..12).map(|i| {
        let store = pools[i % 2].clone();
        tokio::spawn(async move {
            store
                .reserve_registration("198.51.100.2", &format!("name{i}"), 5, HOUR)
                .await
        })
    });
    let outcomes = futures::future::join_all(calls).await;
    let refused: Vec<Duration> = outcomes.into_iter().filter_map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(refused.len(), 7);
    assert!(refused.iter().all(|d| *d > Duration::from_secs(3500)));
    assert_eq!(
        db.store
            .reserve_registration("198.51.100.3", "other", 5, HOUR)
            .await
            .unwrap(),
        None
    );
}

async fn audit_events_are_recorded_and_listed_newest_first(db: &TestDb) {
    let store = &db.store;
    for i in 0..5 {
        store
            .record_audit(AuditEntry {
                actor_id: Some("admin".into()),
                target_id: Some(if i % 2 == 0 { "u1" } else { "u2" }.into()),
                action: "user.blocked".into(),
                detail: format!("event {i}"),
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store
        .record_audit(AuditEntry {
            action: "login.failed".into(),
            detail: "username ghost".into(),
            ..AuditEntry::default()
        })
        .await
        .unwrap();

    let mut details = Vec::new();
    let mut token = String::new();
    loop {
        let (events, next) = store.list_audit_events(None, 4, &token).await.unwrap();
        details.extend(events.into_iter().map(|e| e.detail));
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(
        details,
        [
            "username ghost",
            "event 4",
            "event 3",
            "event 2",
            "event 1",
            "event 0"
        ]
    );
    let (about_u1, _) = store.list_audit_events(Some("u1"), 0, "").await.unwrap();
    let details: Vec<_> = about_u1.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(details, ["event 4", "event 2", "event 0"]);
    assert_eq!(about_u1[0].actor_id.as_deref(), Some("admin"));
}

async fn migrations_are_idempotent(db: &TestDb) {
    db.store.create_user(new_user("gina", Tier::Free)).await.unwrap();
    let again = db.another_pool().await;
    again.migrate().await.unwrap();
    assert!(again.find_user_by_username("gina").await.unwrap().is_some());
}
