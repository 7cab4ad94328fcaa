//! The gRPC adapter: validation, error codes and conversion, called in-process.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use reporunner_analyzer::{AnalyzerConfig, RepoAnalyzer, grpc::AnalyzerGrpc};
use reporunner_proto::agents::analyzer::v1::{
    AnalyzeRequest, ExportFormat, ExportPlanRequest, analyzer_service_server::AnalyzerService,
};
use tonic::{Code, Request};

fn service() -> AnalyzerGrpc<RepoAnalyzer> {
    AnalyzerGrpc::new(Arc::new(RepoAnalyzer::new(AnalyzerConfig::default()).unwrap()))
}

fn fixture(name: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name);
    std::fs::canonicalize(dir).unwrap().display().to_string()
}

#[tokio::test]
async fn analyze_returns_the_plan_with_the_workspace_id() {
    let response = service()
        .analyze(Request::new(AnalyzeRequest {
            workspace_id: "ws-7".into(),
            workspace_path: fixture("procfile-override"),
            environment: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let plan = response.plan.unwrap();
    assert_eq!(plan.workspace_id, "ws-7");
    assert_eq!(
        plan.components[0].start.as_ref().unwrap().run,
        "gunicorn app:app --bind 0.0.0.0:$PORT --workers 2"
    );
}

#[tokio::test]
async fn bad_paths_are_the_callers_mistake() {
    let svc = service();
    let empty = svc
        .analyze(Request::new(AnalyzeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let missing = svc
        .analyze(Request::new(AnalyzeRequest {
            workspace_path: "/nonexistent/ws-9".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("/nonexistent/ws-9"));
    let relative = svc
        .analyze(Request::new(AnalyzeRequest {
            workspace_path: "some/dir".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(relative.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn export_renders_a_procfile_and_rejects_unknown_formats() {
    let svc = service();
    let plan = svc
        .analyze(Request::new(AnalyzeRequest {
            workspace_path: fixture("django-postgres"),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .plan;
    let file = svc
        .export_plan(Request::new(ExportPlanRequest {
            plan: plan.clone(),
            format: ExportFormat::Procfile as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(file.file_name, "Procfile");
    assert!(
        file.content
            .contains("web: python manage.py runserver 0.0.0.0:$PORT"),
        "{}",
        file.content
    );
    assert!(file.content.contains("release: python manage.py migrate"));
    let docker = svc
        .export_plan(Request::new(ExportPlanRequest {
            plan: plan.clone(),
            format: ExportFormat::Dockerfile as i32,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        docker.content.contains("FROM python:3.12-slim"),
        "{}",
        docker.content
    );
    let bad = svc
        .export_plan(Request::new(ExportPlanRequest { plan, format: 0 }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let none = svc
        .export_plan(Request::new(ExportPlanRequest {
            plan: None,
            format: ExportFormat::Json as i32,
        }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
}
