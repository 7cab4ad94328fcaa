//! One-process figures of the auth domain on SQLite (a temporary directory):
//! login latency (argon2id, m=19 MiB, t=2, p=1), `Auth::authorize`
//! throughput (JWT verify plus a user read), and the reference: bare
//! `TokenIssuer::verify` throughput. Prints a markdown table.
//!
//!     cargo bench -p reporunner-auth --bench auth
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::cast_precision_loss)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use reporunner_auth::{Auth, AuthConfig, AuthStore, TokenIssuer};

const KEY: &str = "0123456789abcdef0123456789abcdef-bench-key";
const PASSWORD: &str = "violet-umbrella-orbit-42";
const LOGINS: usize = 30;
const CALLS: u32 = 5000;

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

    // (b) Authorize: verify plus a re-read of the user.
    for _ in 0..100 {
        black_box(auth.authorize(&token).await.unwrap());
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        black_box(auth.authorize(black_box(&token)).await.unwrap());
    }
    let authorize_per_s = per_second(CALLS, start.elapsed());

    println!("| bench | reference | figure | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| login p50 (argon2id, {LOGINS} logins) | bare decode {:.2} µs/call | {:.1} ms | {:.0}x |",
        decode_per_call.as_secs_f64() * 1e6,
        login_p50.as_secs_f64() * 1e3,
        login_p50.as_secs_f64() / decode_per_call.as_secs_f64(),
    );
    println!(
        "| Authorize throughput ({CALLS} calls, SQLite) | bare decode {decode_per_s:.0} calls/s | {authorize_per_s:.0} calls/s | {:.3} |",
        authorize_per_s / decode_per_s,
    );
    println!(
        "| bare decode `TokenIssuer::verify` ({CALLS} calls) | itself | {decode_per_s:.0} calls/s | 1.000 |"
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
