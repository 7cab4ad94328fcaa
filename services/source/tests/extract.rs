//! Uploads of hostile archives: each is refused with InvalidArgument naming
//! the entry, nothing lands outside the root and staging is cleaned.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, RawEntry, gzip, tar, zip, zip_with_links};
use reporunner_error::ServiceError;
use reporunner_proto::agents::source::v1::{ArchiveFormat, FetchLimits};
use reporunner_source::SourceError;
use tar::EntryType;
use tonic::Code;

/// Asserts the refusal's class and that its message names `entry`.
fn assert_refused(
    result: reporunner_source::Result<reporunner_source::Fetched>,
    entry: &str,
    words: &str,
) -> String {
    let err: SourceError = match result {
        Ok(fetched) => panic!("accepted: {fetched:?}"),
        Err(err) => err,
    };
    let status = err.to_status();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&format!("{entry:?}")),
        "message {:?} does not name {entry:?}",
        status.message()
    );
    assert!(
        status.message().contains(words),
        "message {:?} lacks {words:?}",
        status.message()
    );
    status.message().to_owned()
}

#[tokio::test]
async fn tar_path_traversal_is_refused() {
    let env = Env::new();
    let archive = tar(&[
        RawEntry::file("ok.txt", b"fine"),
        RawEntry::file("../../../escaped.txt", b"owned"),
    ]);
    let msg = assert_refused(
        env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
        "../../../escaped.txt",
        "escapes the workspace",
    );
    assert_eq!(
        msg,
        r#"archive entry "../../../escaped.txt" escapes the workspace"#
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn zip_path_traversal_is_refused() {
    let env = Env::new();
    let archive = zip(&[("a.txt", b"fine"), ("../../../escaped.txt", b"owned")]);
    assert_refused(
        env.upload("evil.zip", ArchiveFormat::Unspecified, archive, None)
            .await,
        "../../../escaped.txt",
        "escapes the workspace",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn zip_backslash_and_drive_names_are_refused() {
    for name in ["..\\..\\escaped.txt", "C:/Windows/escaped.txt"] {
        let env = Env::new();
        let archive = zip(&[(name, b"owned")]);
        assert_refused(
            env.upload("evil.zip", ArchiveFormat::Zip, archive, None).await,
            name,
            "escapes the workspace",
        );
        env.assert_nothing_escaped(&[]);
    }
}

#[tokio::test]
async fn absolute_paths_are_refused() {
    let env = Env::new();
    let target = env.tmp.path().join("abs-escaped.txt");
    let name = target.to_str().unwrap().to_owned();
    let archive = gzip(&tar(&[RawEntry::file(&name, b"owned")]));
    assert_refused(
        env.upload("evil.tgz", ArchiveFormat::TarGz, archive, None).await,
        &name,
        "escapes the workspace",
    );
    assert!(!target.exists());
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn symlinks_pointing_outside_are_refused() {
    for target in ["../../../..", "/etc", "a/../../.."] {
        let env = Env::new();
        let archive = tar(&[
            RawEntry::dir("a/"),
            RawEntry::link("a/out", EntryType::Symlink, target),
        ]);
        assert_refused(
            env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
            "a/out",
            "escapes the workspace",
        );
        env.assert_nothing_escaped(&[]);
    }
}

/// Zip archives carry symlinks too (unix mode S_IFLNK, the target as the
/// entry's content): one inside is kept as a link, one that escapes is
/// refused naming it, and a file written through an inside link is refused.
#[tokio::test]
async fn zip_symlinks_inside_are_kept_and_escaping_ones_refused() {
    let env = Env::new();
    let archive = zip_with_links(&[
        ("proj/run.sh", Ok(b"#!/bin/sh\necho hi\n")),
        ("proj/latest", Err("run.sh")),
    ]);
    let fetched = env
        .upload("proj.zip", ArchiveFormat::Zip, archive, None)
        .await
        .unwrap();
    let path = std::path::Path::new(&fetched.workspace.path);
    assert_eq!(
        std::fs::read_link(path.join("proj/latest")).unwrap(),
        std::path::Path::new("run.sh")
    );
    env.assert_nothing_escaped(&["alice"]);

    for target in ["../../../..", "/etc/passwd", "a/../../.."] {
        let env = Env::new();
        let archive = zip_with_links(&[("a/out", Err(target))]);
        assert_refused(
            env.upload("evil.zip", ArchiveFormat::Zip, archive, None).await,
            "a/out",
            "escapes the workspace",
        );
        env.assert_nothing_escaped(&[]);
    }

    let env = Env::new();
    let archive = zip_with_links(&[("sub/link", Err("..")), ("sub/link/pwned.txt", Ok(b"owned"))]);
    assert_refused(
        env.upload("evil.zip", ArchiveFormat::Zip, archive, None).await,
        "sub/link/pwned.txt",
        "through the symlink",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn files_written_through_an_inside_symlink_are_refused() {
    // The link itself stays inside, so it is accepted; the second entry
    // would be written through it.
    let env = Env::new();
    let archive = tar(&[
        RawEntry::dir("sub/"),
        RawEntry::link("sub/link", EntryType::Symlink, ".."),
        RawEntry::file("sub/link/pwned.txt", b"owned"),
    ]);
    assert_refused(
        env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
        "sub/link/pwned.txt",
        "through the symlink",
    );
    env.assert_nothing_escaped(&[]);

    // Same name twice: a symlink, then a file that would follow it.
    let env = Env::new();
    let archive = tar(&[
        RawEntry::link("config", EntryType::Symlink, "other"),
        RawEntry::file("config", b"owned"),
    ]);
    assert_refused(
        env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
        "config",
        "symlink",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn hardlinks_pointing_outside_are_refused() {
    let env = Env::new();
    let archive = tar(&[RawEntry::link(
        "passwd",
        EntryType::Link,
        "../../../../etc/passwd",
    )]);
    assert_refused(
        env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
        "passwd",
        "escapes the workspace",
    );
    env.assert_nothing_escaped(&[]);

    let env = Env::new();
    let archive = tar(&[RawEntry::link("passwd", EntryType::Link, "/etc/passwd")]);
    assert_refused(
        env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
        "passwd",
        "hard link",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn hardlinks_inside_become_copies() {
    let env = Env::new();
    let archive = tar(&[
        RawEntry::file("a.txt", b"shared"),
        RawEntry::link("b.txt", EntryType::Link, "a.txt"),
    ]);
    let fetched = env
        .upload("ok.tar", ArchiveFormat::Tar, archive, None)
        .await
        .unwrap();
    let path = std::path::Path::new(&fetched.workspace.path);
    assert_eq!(std::fs::read(path.join("b.txt")).unwrap(), b"shared");
    assert_eq!(fetched.workspace.file_count, 2);
    env.assert_nothing_escaped(&["alice"]);
}

#[tokio::test]
async fn device_files_and_fifos_are_refused() {
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let env = Env::new();
        let archive = tar(&[RawEntry {
            kind,
            ..RawEntry::file("dev/thing", b"")
        }]);
        assert_refused(
            env.upload("evil.tar", ArchiveFormat::Tar, archive, None).await,
            "dev/thing",
            "device file or fifo",
        );
        env.assert_nothing_escaped(&[]);
    }
}

#[tokio::test]
async fn zip_bombs_are_refused_by_ratio() {
    let env = Env::new();
    let zeros = vec![0u8; 8 << 20];
    let archive = zip(&[("small.txt", b"hello"), ("zeros.bin", &zeros)]);
    assert!(archive.len() < 100_000, "{}", archive.len());
    let limits = FetchLimits {
        max_compression_ratio: 50,
        ..FetchLimits::default()
    };
    assert_refused(
        env.upload("bomb.zip", ArchiveFormat::Zip, archive, Some(limits))
            .await,
        "zeros.bin",
        "50 times",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn tar_gz_bombs_are_refused_by_ratio() {
    let env = Env::new();
    let zeros = vec![0u8; 8 << 20];
    let archive = gzip(&tar(&[RawEntry::file("zeros.bin", &zeros)]));
    assert_refused(
        env.upload("bomb.tgz", ArchiveFormat::Unspecified, archive, None)
            .await,
        "zeros.bin",
        "100 times",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn oversize_archives_are_refused() {
    let env = Env::new();
    let data = vec![7u8; 600_000];
    let archive = tar(&[RawEntry::file("a.bin", &data), RawEntry::file("b.bin", &data)]);
    let limits = FetchLimits {
        max_total_bytes: 1_000_000,
        max_compression_ratio: 1_000,
        ..FetchLimits::default()
    };
    // The compressed upload itself is over the limit.
    let err = env
        .upload("big.tar", ArchiveFormat::Tar, archive, Some(limits))
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(
        err.to_string()
            .contains("\"big.tar\" exceeds the limit of 1000000 bytes"),
        "{err}"
    );
    env.assert_nothing_escaped(&[]);

    // Small when compressed, too big when extracted.
    let archive = gzip(&tar(&[
        RawEntry::file("a.bin", &data),
        RawEntry::file("b.bin", &data),
    ]));
    assert_refused(
        env.upload("big.tgz", ArchiveFormat::TarGz, archive, Some(limits))
            .await,
        "b.bin",
        "limit of 1000000 bytes",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn too_many_files_are_refused() {
    let env = Env::new();
    let names: Vec<String> = (0..6).map(|i| format!("f{i}.txt")).collect();
    let entries: Vec<RawEntry<'_>> = names.iter().map(|n| RawEntry::file(n, b"x")).collect();
    let limits = FetchLimits {
        max_files: 5,
        ..FetchLimits::default()
    };
    assert_refused(
        env.upload("many.tar", ArchiveFormat::Tar, tar(&entries), Some(limits))
            .await,
        "f5.txt",
        "limit of 5 files",
    );
    env.assert_nothing_escaped(&[]);
}

#[tokio::test]
async fn a_good_archive_is_extracted_and_reused() {
    let env = Env::new();
    let archive = gzip(&tar(&[
        RawEntry::dir("proj/"),
        RawEntry {
            mode: 0o755,
            ..RawEntry::file("proj/run.sh", b"#!/bin/sh\necho hi\n")
        },
        RawEntry::file("proj/.git/config", b"[core]"),
        RawEntry {
            kind: EntryType::Regular,
            ..RawEntry::dir("proj/old-style-dir/")
        },
        RawEntry::link("proj/latest", EntryType::Symlink, "run.sh"),
    ]));
    let first = env
        .upload("proj.tar.gz", ArchiveFormat::Unspecified, archive.clone(), None)
        .await
        .unwrap();
    let ws = &first.workspace;
    assert!(!first.reused);
    assert!(ws.id.starts_with("sha256:"));
    assert_eq!(ws.origin, "upload:proj.tar.gz");
    assert_eq!(ws.file_count, 2);
    assert_eq!(ws.size_bytes, 18);
    assert!(ws.created_at.is_some());
    // The archive's newest file time is the content's date.
    assert_eq!(ws.content_time.map(|t| t.seconds), Some(1_700_000_000));
    let path = std::path::Path::new(&ws.path);
    assert_eq!(
        path,
        env.root().join("alice").join(ws.id.trim_start_matches("sha256:"))
    );
    assert_eq!(
        std::fs::read_link(path.join("proj/latest")).unwrap(),
        std::path::Path::new("run.sh")
    );
    assert!(!path.join("proj/.git").exists());
    assert!(path.join("proj/old-style-dir").is_dir());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path.join("proj/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0);

    let again = env
        .upload("again.tgz", ArchiveFormat::TarGz, archive, None)
        .await
        .unwrap();
    assert!(again.reused);
    assert_eq!(again.workspace.id, ws.id);
    env.assert_nothing_escaped(&["alice"]);
}

#[tokio::test]
async fn unknown_formats_and_bad_owners_are_refused() {
    let env = Env::new();
    let err = env
        .upload(
            "notes.txt",
            ArchiveFormat::Unspecified,
            b"just text".to_vec(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("not a tar, tar.gz or zip"), "{err}");
    env.assert_nothing_escaped(&[]);

    let spec = reporunner_source::UploadSpec {
        owner_id: "../bob".into(),
        format: ArchiveFormat::Tar,
        file_name: "x.tar".into(),
        limits: None,
    };
    let err = reporunner_source::SourceAgent::upload(
        env.source.as_ref(),
        spec,
        futures::stream::iter(Vec::<reporunner_source::Result<Vec<u8>>>::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("owner_id"), "{err}");
}

#[tokio::test]
async fn uploads_with_too_many_messages_are_refused() {
    let env = Env::with(|c| c.max_upload_messages = 3);
    // 30 KB of tar in 7000-byte chunks: 5 chunks plus the header.
    let archive = tar(&[RawEntry::file("a.bin", &[1u8; 20_000])]);
    let err = env
        .upload("chatty.tar", ArchiveFormat::Tar, archive, None)
        .await
        .unwrap_err();
    assert_eq!(err.to_status().code(), Code::InvalidArgument);
    assert!(err.to_string().contains("more than 3 messages"), "{err}");
    env.assert_nothing_escaped(&[]);
}
