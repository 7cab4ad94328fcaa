//! HTTP/JSON on the public port (reporunner-gateway): every public RPC as
//! a Connect JSON POST, server streams as server-sent events or Connect
//! envelopes, `/openapi.json`, and the same tokens, codes and messages as
//! gRPC. Real services over loopback, plain HTTP/1.1 from reqwest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use reporunner_node::ServiceName;
use reporunner_tests::Sandbox;
use serde_json::{Value, json};

const PASSWORD: &str = "correct-horse-battery-staple-41";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .http1_only()
        .build()
        .unwrap()
}

/// POSTs `body` as JSON to `/<method>` on `addr`: the status, the
/// `retry-after` header and the body as JSON.
async fn post(
    addr: std::net::SocketAddr,
    method: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .post(format!("http://{addr}/{method}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {text}"));
    (status, headers, json)
}

/// Reads a server-sent event stream to its end: each event's name
/// (`message` when unnamed) and data as JSON.
async fn events(response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut response = response;
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk())
        .await
        .expect("the event stream stalled")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event: ") {
                    name = rest.to_owned();
                } else if let Some(rest) = line.strip_prefix("data: ") {
                    data.push_str(rest);
                }
            }
            (name, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

async fn front_door() -> Sandbox {
    Sandbox::builder()
        .with(ServiceName::Auth)
        .with(ServiceName::EnvDetector)
        .with(ServiceName::Source)
        .with(ServiceName::Analyzer)
        .with(ServiceName::Orchestrator)
        .start()
        .await
        .unwrap()
}

const AUTH: &str = "reporunner.auth.v1.AuthService";
const ORCHESTRATOR: &str = "reporunner.orchestrator.v1.OrchestratorService";

async fn login(auth: std::net::SocketAddr, username: &str) -> String {
    let (status, _, body) = post(
        auth,
        &format!("{AUTH}/Register"),
        None,
        json!({ "username": username, "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(
        auth,
        &format!("{AUTH}/Login"),
        None,
        json!({ "username": username, "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["tokens"]["accessToken"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_run_is_created_watched_read_and_stopped_over_http_json_only() {
    let mesh = front_door().await;
    let auth = mesh.addr(ServiceName::Auth).unwrap();
    let orchestrator = mesh.addr(ServiceName::Orchestrator).unwrap();
    let token = login(auth, "http-alice").await;

    let (status, _, me) = post(auth, &format!("{AUTH}/WhoAmI"), Some(&token), json!({})).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["username"], "http-alice", "{me}");

    let (status, _, created) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/CreateRun"),
        Some(&token),
        json!({
            "source": { "localPath": common::fixture("run-flask") },
            "goal": "RUN_GOAL_ANALYZE",
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["run"]["id"].as_str().unwrap().to_owned();

    // WatchRun as server-sent events: every event, then `end` once the run is over.
    let response = client()
        .post(format!("http://{orchestrator}/{ORCHESTRATOR}/WatchRun"))
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .body(json!({ "runId": id }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let watched = events(response).await;
    let (last, rest) = watched.split_last().unwrap();
    assert_eq!(last.0, "end", "{watched:?}");
    assert!(rest.iter().all(|(name, _)| name == "message"), "{watched:?}");
    let states: Vec<&str> = rest
        .iter()
        .filter_map(|(_, m)| m["event"]["state"].as_str())
        .collect();
    assert!(states.contains(&"RUN_STATE_ANALYZING"), "{watched:?}");
    assert_eq!(states.last(), Some(&"RUN_STATE_SUCCEEDED"), "{watched:?}");
    let sequences: Vec<u64> = rest
        .iter()
        .map(|(_, m)| m["event"]["sequence"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    // The same stream as Connect envelopes: messages, then an end-of-stream `{}`.
    let mut framed = vec![0u8];
    let request = json!({ "runId": id }).to_string();
    framed.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(request.as_bytes());
    let response = client()
        .post(format!("http://{orchestrator}/{ORCHESTRATOR}/WatchRun"))
        .header("content-type", "application/connect+json")
        .bearer_auth(&token)
        .body(framed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/connect+json");
    let body = response.bytes().await.unwrap();
    let mut rest = &body[..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        frames.push((
            rest[0],
            serde_json::from_slice::<Value>(&rest[5..5 + len]).unwrap(),
        ));
        rest = &rest[5 + len..];
    }
    let (end, messages) = frames.split_last().unwrap();
    assert_eq!(*end, (2, json!({})), "{frames:?}");
    assert_eq!(messages.len(), watched.len() - 1, "{frames:?}");

    let (status, _, run) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/GetRun"),
        Some(&token),
        json!({ "runId": id }),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["run"]["state"], "RUN_STATE_SUCCEEDED", "{run}");
    assert_eq!(run["run"]["goal"], "RUN_GOAL_ANALYZE", "{run}");

    let (status, _, listed) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/ListRuns"),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["runs"][0]["id"], id.as_str(), "{listed}");

    let (status, _, stopped) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/StopRun"),
        Some(&token),
        json!({ "runId": id }),
    )
    .await;
    assert_eq!(status, 200, "{stopped}");

    // Another user's run is not found, as over gRPC.
    let bob = login(auth, "http-bob").await;
    let (status, _, refused) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/GetRun"),
        Some(&bob),
        json!({ "runId": id }),
    )
    .await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn bad_calls_get_the_grpc_code_as_http_status_and_a_message_naming_what_was_wrong() {
    let mesh = front_door().await;
    let auth = mesh.addr(ServiceName::Auth).unwrap();
    let orchestrator = mesh.addr(ServiceName::Orchestrator).unwrap();
    let token = login(auth, "http-carol").await;

    // No token: 401, the service's own message.
    let (status, _, body) = post(orchestrator, &format!("{ORCHESTRATOR}/ListRuns"), None, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated")),
        "{body}"
    );
    let (status, _, body) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/ListRuns"),
        Some("not-a-token"),
        json!({}),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // A misspelt field: 400, naming it and the message type.
    let (status, _, body) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/GetRun"),
        Some(&token),
        json!({ "runID": "x" }),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("runID") && message.contains("reporunner.orchestrator.v1.GetRunRequest"),
        "{message}"
    );
    // Not JSON at all; a wrong type; an unknown enum value.
    for bad in ["{", "[]", r#"{"runId": 5}"#, r#"{"pageSize": "many"}"#] {
        let response = client()
            .post(format!("http://{orchestrator}/{ORCHESTRATOR}/ListRuns"))
            .header("content-type", "application/json")
            .bearer_auth(&token)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_else(|_| panic!("{bad}"));
        assert_eq!(body["code"], "invalid_argument", "{bad}: {body}");
    }
    // A service's own validation, unchanged.
    let (status, _, body) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/CreateRun"),
        Some(&token),
        json!({ "goal": "RUN_GOAL_ANALYZE" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("source"), "{body}");

    // Methods only services call are not exposed; unknown routes are 404.
    for path in [
        format!("{AUTH}/Authorize"),
        format!("{AUTH}/ConsumeQuota"),
        format!("{ORCHESTRATOR}/Nope"),
        "reporunner.agents.runner.v1.RunnerService/Start".to_owned(),
    ] {
        let (status, _, body) = post(auth, &path, Some(&token), json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {body}"
        );
    }
    // Wrong verb and wrong media type.
    let response = client()
        .get(format!("http://{orchestrator}/{ORCHESTRATOR}/ListRuns"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = client()
        .post(format!("http://{orchestrator}/{ORCHESTRATOR}/ListRuns"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(body["message"].as_str().unwrap().contains("text/plain"), "{body}");
    // Too large a body: 413 before it is read whole.
    let response = client()
        .post(format!("http://{orchestrator}/{ORCHESTRATOR}/ListRuns"))
        .header("content-type", "application/json")
        .body(vec![b' '; reporunner_gateway::MAX_REQUEST_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A stream that fails before its first message is an HTTP error too.
    let response = client()
        .post(format!("http://{orchestrator}/{ORCHESTRATOR}/WatchRun"))
        .header("content-type", "application/json")
        .bearer_auth(&token)
        .body(json!({ "runId": "no-such-run" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // Every answer carries the security headers.
    let headers = response.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // gRPC on the same port is untouched.
    let mut grpc = mesh.orchestrator();
    grpc.list_runs(mesh.request(reporunner_proto::orchestrator::v1::ListRunsRequest::default()))
        .await
        .unwrap();
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn a_spent_quota_is_429_with_retry_after() {
    let mesh = Sandbox::builder()
        .settings(|s| {
            for tier in &mut s.auth.tiers {
                tier.metered_requests_per_hour = 1;
            }
        })
        .with(ServiceName::Auth)
        .with(ServiceName::EnvDetector)
        .with(ServiceName::Source)
        .with(ServiceName::Analyzer)
        .with(ServiceName::Orchestrator)
        .start()
        .await
        .unwrap();
    let auth = mesh.addr(ServiceName::Auth).unwrap();
    let orchestrator = mesh.addr(ServiceName::Orchestrator).unwrap();
    let token = login(auth, "http-dave").await;
    let create = json!({
        "source": { "localPath": common::fixture("run-flask") },
        "goal": "RUN_GOAL_ANALYZE",
    });
    let (status, _, body) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/CreateRun"),
        Some(&token),
        create.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = post(
        orchestrator,
        &format!("{ORCHESTRATOR}/CreateRun"),
        Some(&token),
        create,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("resource_exhausted")),
        "{body}"
    );
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn the_openapi_document_lists_every_exposed_method_and_no_internal_one() {
    let mesh = front_door().await;
    let auth = mesh.addr(ServiceName::Auth).unwrap();
    let orchestrator = mesh.addr(ServiceName::Orchestrator).unwrap();
    for (addr, services) in [
        (auth, vec![AUTH, "reporunner.auth.v1.AdminService"]),
        (orchestrator, vec![ORCHESTRATOR]),
    ] {
        let response = client()
            .get(format!("http://{addr}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let doc: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let pool = reporunner_proto::descriptor::pool();
        let mut expected = Vec::new();
        for name in services {
            for method in pool.get_service_by_name(name).unwrap().methods() {
                let path = format!("/{name}/{}", method.name());
                if !reporunner_node::NOT_OVER_HTTP.contains(&path.as_str()) {
                    expected.push(path);
                }
            }
        }
        expected.sort();
        assert_eq!(paths, expected);
        // Every $ref resolves.
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
    mesh.stop().await.unwrap();
}

#[tokio::test]
async fn failed_logins_over_http_are_throttled_by_the_callers_address() {
    let mesh = Sandbox::builder()
        .settings(|s| s.auth.login_failures_per_address_per_hour = 3)
        .with(ServiceName::Auth)
        .start()
        .await
        .unwrap();
    let auth = mesh.addr(ServiceName::Auth).unwrap();
    let (status, _, body) = post(
        auth,
        &format!("{AUTH}/Register"),
        None,
        json!({ "username": "http-erin", "password": PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Two callers on two loopback addresses.
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .http1_only()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let login = |client: reqwest::Client, username: &'static str, password: &'static str| async move {
        client
            .post(format!("http://{auth}/{AUTH}/Login"))
            .header("content-type", "application/json")
            .body(json!({ "username": username, "password": password }).to_string())
            .send()
            .await
            .unwrap()
    };
    let guesser = from([127, 0, 0, 2]);
    // Unknown accounts: only the address's bucket fills.
    for ghost in ["ghost-1", "ghost-2", "ghost-3"] {
        let answer = login(guesser.clone(), ghost, "wrong-password-123").await;
        assert_eq!(answer.status(), 401);
    }
    // The right password from the guesser's address: refused until the hour passes.
    let answer = login(guesser, "http-erin", PASSWORD).await;
    assert_eq!(answer.status(), 429);
    assert!(
        answer.headers().contains_key("retry-after"),
        "{:?}",
        answer.headers()
    );
    // From another address the owner logs in: the gateway passed each caller's own address on.
    let answer = login(from([127, 0, 0, 1]), "http-erin", PASSWORD).await;
    assert_eq!(answer.status(), 200);
    mesh.stop().await.unwrap();
}
