//! The source service over real gRPC on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, sync::Arc};

use common::{Env, RawEntry, gzip, tar};
use reporunner_proto::agents::source::v1::{
    ArchiveFormat, FetchRequest, GitSource, LocalSource, UploadArchiveHeader, UploadArchiveRequest,
    fetch_request, source_service_client::SourceServiceClient, upload_archive_request::Part,
};
use reporunner_server::{CancellationToken, GrpcServer};
use reporunner_source::SourceGrpc;
use tonic::{Code, transport::Channel};

struct Served {
    env: Env,
    client: SourceServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve() -> Served {
    let env = Env::local();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new().add_service(SourceGrpc::new(Arc::clone(&env.source)).into_server());
    tokio::spawn(server.serve(listener, shutdown.clone()));
    let client = SourceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Served {
        env,
        client,
        shutdown,
    }
}

fn header(owner: &str, name: &str) -> UploadArchiveRequest {
    UploadArchiveRequest {
        part: Some(Part::Header(UploadArchiveHeader {
            owner_id: owner.into(),
            format: ArchiveFormat::Unspecified.into(),
            file_name: name.into(),
            limits: None,
        })),
    }
}

fn chunk(bytes: &[u8]) -> UploadArchiveRequest {
    UploadArchiveRequest {
        part: Some(Part::Chunk(bytes.to_vec())),
    }
}

#[tokio::test]
async fn uploads_a_tar_gz_stream() {
    let mut served = serve().await;
    let archive = gzip(&tar(&[
        RawEntry::dir("app/"),
        RawEntry::file("app/main.py", b"print('hi')\n"),
        RawEntry::file("app/requirements.txt", b"requests==2.32.0\n"),
    ]));
    let mut messages = vec![header("carol", "app.tar.gz")];
    messages.extend(archive.chunks(100).map(chunk));
    let response = served
        .client
        .upload_archive(tokio_stream::iter(messages.clone()))
        .await
        .unwrap()
        .into_inner();
    let ws = response.workspace.unwrap();
    assert!(!response.reused);
    assert_eq!(ws.owner_id, "carol");
    assert_eq!(ws.origin, "upload:app.tar.gz");
    assert_eq!(ws.file_count, 2);
    assert_eq!(
        std::fs::read_to_string(Path::new(&ws.path).join("app/main.py")).unwrap(),
        "print('hi')\n"
    );

    let again = served
        .client
        .upload_archive(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert!(again.reused);
    assert_eq!(again.workspace.unwrap().id, ws.id);
    served.env.assert_nothing_escaped(&["carol"]);
}

#[tokio::test]
async fn malformed_upload_streams_are_invalid() {
    let mut served = serve().await;
    let archive = tar(&[RawEntry::file("a.txt", b"a")]);

    let cases: Vec<(Vec<UploadArchiveRequest>, &str)> = vec![
        (vec![chunk(&archive), header("carol", "a.tar")], "first message"),
        (vec![], "first message must be the header"),
        (
            vec![
                header("carol", "a.tar"),
                header("carol", "a.tar"),
                chunk(&archive),
            ],
            "exactly one header",
        ),
        (
            vec![header("carol", "a.tar"), UploadArchiveRequest { part: None }],
            "empty",
        ),
        (vec![header("", "a.tar"), chunk(&archive)], "owner_id"),
        (
            vec![
                header("carol", "evil.tar"),
                chunk(&tar(&[RawEntry::file("../../x", b"x")])),
            ],
            "archive entry \"../../x\" escapes the workspace",
        ),
    ];
    for (messages, words) in cases {
        let status = served
            .client
            .upload_archive(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(words),
            "{:?} lacks {words:?}",
            status.message()
        );
    }
    served.env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn fetch_over_grpc_copies_and_clones() {
    let mut served = serve().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("a.txt"), "a").unwrap();

    let local = served
        .client
        .fetch(FetchRequest {
            owner_id: "dave".into(),
            source: Some(fetch_request::Source::Local(LocalSource {
                path: project.path().display().to_string(),
            })),
            limits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.workspace.unwrap().file_count, 1);

    common::git(project.path(), &["init", "-q"]);
    common::git(project.path(), &["add", "-A"]);
    common::git(project.path(), &["commit", "-q", "-m", "one"]);
    let cloned = served
        .client
        .fetch(FetchRequest {
            owner_id: "dave".into(),
            source: Some(fetch_request::Source::Git(GitSource {
                url: format!("file://{}", project.path().display()),
                r#ref: String::new(),
            })),
            limits: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ws = cloned.workspace.unwrap();
    assert_eq!(ws.commit.len(), 40);
    assert!(cloned.reused, "same tree as the local copy");

    let status = served
        .client
        .fetch(FetchRequest {
            owner_id: "dave".into(),
            source: None,
            limits: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    served.env.assert_nothing_escaped(&["dave"]);
}
