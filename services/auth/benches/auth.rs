//! One-process figures of the auth domain on SQLite (a temporary directory):
//! login latency (argon2id, m=19 MiB, t=2, p=1), `Auth::authorize`
//! throughput (JWT verify plus the user, from Authorize's cache or read from
//! the store: one user called again and again, 1000 users in turn, and the
//! cache off, a read per call), and the reference: bare
//! `TokenIssuer::verify` throughput. Prints a markdown table.
//!
//!     cargo bench -p reporunner-auth --bench auth
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use reporunner_auth::{Auth, AuthConfig, AuthStore, NewUser, TokenIssuer};
use reporunner_proto::common::v1::Tier;

const KEY: &str = "0123456789abcdef0123456789abcdef-bench-key";
const PASSWORD: &str = "violet-umbrella-orbit-42";
const LOGINS: usize = 30;
const CALLS: u32 = 5000;
/// Calls of the cached figures (each takes about a microsecond).
const CACHED_CALLS: u32 = 100_000;
/// Users the many-users figure takes in turn.
const USERS: usize = 1000;

fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn per_second(calls: u32, elapsed: Duration) -> f64 {
    f64::from(calls) / elapsed.as_secs_f64()
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
    let store = AuthStore::connect(&url).await.unwrap();
    let config = AuthConfig {
        jwt_secret: Some(KEY.into()),
        ..AuthConfig::default()
    };
    let issuer = TokenIssuer::new(
        KEY.as_bytes(),
        &config.jwt_issuer,
        &config.jwt_audience,
        config.access_ttl(),
    );
    let auth = Auth::new(store, config, KEY.as_bytes()).await.unwrap();
    auth.register("benchuser", PASSWORD, None).await.unwrap();

    // (a) login latency, sequential, one hash at a time.
    let mut samples = Vec::with_capacity(LOGINS);
    let mut token = String::new();
    for _ in 0..LOGINS {
        let start = Instant::now();
        let (_, tokens) = auth.login("benchuser", PASSWORD, None).await.unwrap();
        samples.push(start.elapsed());
        token = tokens.access.token;
    }
    let login_p50 = p50(samples);

    // (c) the reference: bare token decode.
    for _ in 0..100 {
        black_box(issuer.verify(&token).unwrap());
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        black_box(issuer.verify(black_box(&token)).unwrap());
    }
    let decode_elapsed = start.elapsed();
    let decode_per_s = per_second(CALLS, decode_elapsed);
    let decode_per_call = decode_elapsed / CALLS;

    // (b) Authorize: verify plus the user, from the cache (one user, then
    // USERS in turn) and with the cache off (a store read per call).
    let authorize_per_s = authorize_throughput(&auth, std::slice::from_ref(&token), CACHED_CALLS).await;
    let mut tokens = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let user = auth
            .store()
            .create_user(NewUser {
                username: format!("user{i}"),
                password_hash: "not-a-hash".into(),
                tier: Tier::Premium,
            })
            .await
            .unwrap();
        tokens.push(issuer.issue(&user.id, Tier::Premium).unwrap().token);
    }
    let many_per_s = authorize_throughput(&auth, &tokens, CACHED_CALLS).await;
    let uncached = Auth::new(
        AuthStore::connect(&url).await.unwrap(),
        AuthConfig {
            jwt_secret: Some(KEY.into()),
            authorize_cache_ttl: Duration::ZERO,
            ..AuthConfig::default()
        },
        KEY.as_bytes(),
    )
    .await
    .unwrap();
    let uncached_per_s = authorize_throughput(&uncached, std::slice::from_ref(&token), CALLS).await;

    println!("| bench | reference | figure | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| login p50 (argon2id, {LOGINS} logins) | bare decode {:.2} µs/call | {:.1} ms | {:.0}x |",
        decode_per_call.as_secs_f64() * 1e6,
        login_p50.as_secs_f64() * 1e3,
        login_p50.as_secs_f64() / decode_per_call.as_secs_f64(),
    );
    println!(
        "| Authorize throughput, one user ({CACHED_CALLS} calls, cache on, SQLite) | bare decode {decode_per_s:.0} calls/s | {authorize_per_s:.0} calls/s | {:.3} |",
        authorize_per_s / decode_per_s,
    );
    println!(
        "| Authorize throughput, {USERS} users in turn ({CACHED_CALLS} calls, cache on, SQLite) | bare decode {decode_per_s:.0} calls/s | {many_per_s:.0} calls/s | {:.3} |",
        many_per_s / decode_per_s,
    );
    println!(
        "| Authorize throughput, cache off: a user read per call ({CALLS} calls, SQLite) | bare decode {decode_per_s:.0} calls/s | {uncached_per_s:.0} calls/s | {:.3} |",
        uncached_per_s / decode_per_s,
    );
    println!(
        "| bare decode `TokenIssuer::verify` ({CALLS} calls) | itself | {decode_per_s:.0} calls/s | 1.000 |"
    );
}

/// Authorize calls per second over `tokens` in turn, after a warm-up round.
async fn authorize_throughput(auth: &Auth, tokens: &[String], calls: u32) -> f64 {
    for token in tokens.iter().cycle().take(tokens.len().max(100)) {
        black_box(auth.authorize(token).await.unwrap());
    }
    let start = Instant::now();
    for token in tokens.iter().cycle().take(calls as usize) {
        black_box(auth.authorize(black_box(token)).await.unwrap());
    }
    per_second(calls, start.elapsed())
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
