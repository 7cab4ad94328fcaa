//! Safe extraction of tar, tar.gz and zip archives into a [`TreeWriter`].
//!
//! Names, types and sizes in headers are never trusted: every name goes
//! through [`parse_entry_path`], every byte written is counted by the writer,
//! and device files and fifos are refused.

use std::{
    fs,
    io::{self, BufReader, Read},
    path::Path,
    time::{Instant, SystemTime},
};

use reporunner_proto::agents::source::v1::ArchiveFormat;

use crate::{
    config::Limits,
    digest::{TreeSummary, scan},
    error::{Result, SourceError},
    tree::{TreeWriter, parse_entry_path},
};

/// Recognizes an archive by its first bytes.
pub fn sniff(path: &Path) -> Result<ArchiveFormat> {
    let mut head = Vec::with_capacity(512);
    fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| SourceError::io("read", path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(ArchiveFormat::TarGz)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(ArchiveFormat::Zip)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Ok(ArchiveFormat::Tar)
    } else {
        Err(SourceError::BadArchive(
            "the upload is not a tar, tar.gz or zip archive; name its format in the header if it is one"
                .into(),
        ))
    }
}

/// Unpacks the upload spooled at `spool` (`Unspecified`: recognised by its
/// first bytes) into `tree`, a fresh empty directory, removes the spool and
/// scans the tree. Returns its summary and the newest file time of the
/// archive's headers.
pub(crate) fn unpack(
    spool: &Path,
    format: ArchiveFormat,
    tree: &Path,
    limits: Limits,
    deadline: Instant,
    compressed: u64,
) -> Result<(TreeSummary, Option<SystemTime>)> {
    let format = match format {
        ArchiveFormat::Unspecified => sniff(spool)?,
        known => known,
    };
    let expanded_cap = compressed
        .max(1)
        .saturating_mul(limits.max_compression_ratio.into());
    let content_cap = limits.max_total_bytes.min(expanded_cap);
    let header_cap = limits
        .max_files
        .saturating_mul(2)
        .saturating_add(1024)
        .saturating_mul(1024)
        .min(expanded_cap);
    let stream_cap = content_cap.saturating_add(header_cap).saturating_add(1 << 20);
    let mut writer = TreeWriter::new(
        tree.to_path_buf(),
        "archive entry",
        limits,
        deadline,
        Some(compressed),
    );
    extract(spool, format, &mut writer, limits.max_files, stream_cap)?;
    fs::remove_file(spool).map_err(|e| SourceError::io("remove", spool, e))?;
    let summary = scan(tree, &limits, deadline)?;
    Ok((summary, writer.newest()))
}

/// Entries (of any type, skipped ones included) one archive may list.
fn entry_bound(writer_max_files: u64) -> u64 {
    writer_max_files.saturating_mul(4).saturating_add(1024)
}

/// Extracts `archive` (of a known format) through `writer`.
pub(crate) fn extract(
    archive: &Path,
    format: ArchiveFormat,
    writer: &mut TreeWriter,
    max_files: u64,
    stream_cap: u64,
) -> Result<()> {
    let open = || fs::File::open(archive).map_err(|e| SourceError::io("open", archive, e));
    match format {
        ArchiveFormat::Tar => extract_tar(
            Capped::new(BufReader::new(open()?), stream_cap),
            writer,
            max_files,
        ),
        ArchiveFormat::TarGz => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(open()?));
            extract_tar(Capped::new(gz, stream_cap), writer, max_files)
        }
        ArchiveFormat::Zip => extract_zip(open()?, writer, max_files),
        ArchiveFormat::Unspecified => Err(SourceError::BadArchive("the archive format is not known".into())),
    }
}

/// Reads at most `cap` bytes, then fails: bounds the decompressed stream
/// (tar headers, long names, padding) whatever the headers claim.
struct Capped<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, cap: u64) -> Self {
        Self {
            inner,
            left: cap,
            cap,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte of look-ahead tells a stream that ends exactly here from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "the uncompressed archive exceeds {} bytes",
                    self.cap
                ))),
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn unreadable(err: impl std::fmt::Display) -> SourceError {
    SourceError::BadArchive(format!("the archive cannot be read: {err}"))
}

fn too_many_entries(writer: &TreeWriter, entry: &str, bound: u64) -> SourceError {
    SourceError::LimitExceeded {
        what: writer.what(),
        entry: entry.to_owned(),
        reason: format!("is past the limit of {bound} entries in one archive"),
    }
}

fn extract_tar<R: Read>(reader: R, writer: &mut TreeWriter, max_files: u64) -> Result<()> {
    use tar::EntryType;

    let bound = entry_bound(max_files);
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(unreadable)?;
    for (index, entry) in entries.enumerate() {
        writer.check_deadline()?;
        let mut entry = entry.map_err(unreadable)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if index as u64 >= bound {
            return Err(too_many_entries(writer, &name, bound));
        }
        if std::str::from_utf8(&entry.path_bytes()).is_err() {
            return Err(writer.refuse(&name, "has a name that is not UTF-8"));
        }
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(writer.refuse(&name, "is a device file or fifo, which is not allowed"));
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {
                continue;
            }
            _ => {}
        }
        let rel = match parse_entry_path(&name) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(reason) => return Err(writer.refuse(&name, reason)),
        };
        match kind {
            // Old tars mark directories only by a trailing slash.
            EntryType::Regular if name.ends_with('/') => writer.dir(&name, &rel)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let executable = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
                if let Ok(mtime) = entry.header().mtime() {
                    writer.saw_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
                }
                writer.file(&name, &rel, &mut entry, executable)?;
            }
            EntryType::Directory => writer.dir(&name, &rel)?,
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| writer.refuse(&name, "is a link without a target"))?;
                let target = std::str::from_utf8(&target)
                    .map_err(|_| writer.refuse(&name, "has a link target that is not UTF-8"))?
                    .to_owned();
                if kind == EntryType::Symlink {
                    writer.symlink(&name, &rel, &target)?;
                } else {
                    writer.hardlink(&name, &rel, &target)?;
                }
            }
            _ => return Err(writer.refuse(&name, "has an entry type that is not supported")),
        }
    }
    Ok(())
}

/// `S_IFMT` types that are neither files, directories nor symlinks.
fn is_special_mode(mode: u32) -> bool {
    matches!(mode & 0o170_000, 0o010_000 | 0o020_000 | 0o060_000 | 0o140_000)
}

fn extract_zip(file: fs::File, writer: &mut TreeWriter, max_files: u64) -> Result<()> {
    let bound = entry_bound(max_files);
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| SourceError::BadArchive(format!("the upload is not a readable zip archive: {e}")))?;
    for index in 0..zip.len() {
        writer.check_deadline()?;
        let mut entry = zip.by_index(index).map_err(unreadable)?;
        let name = match entry.name() {
            Ok(name) => name.into_owned(),
            Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
        };
        if index as u64 >= bound {
            return Err(too_many_entries(writer, &name, bound));
        }
        let mode = entry.unix_mode().unwrap_or(0);
        if is_special_mode(mode) {
            return Err(writer.refuse(&name, "is a device file or fifo, which is not allowed"));
        }
        let rel = match parse_entry_path(&name) {
            Ok(Some(rel)) => rel,
            Ok(None) => continue,
            Err(reason) => return Err(writer.refuse(&name, reason)),
        };
        if entry.is_symlink() {
            let mut target = Vec::new();
            (&mut entry)
                .take(4097)
                .read_to_end(&mut target)
                .map_err(unreadable)?;
            let target = String::from_utf8(target)
                .map_err(|_| writer.refuse(&name, "has a link target that is not UTF-8"))?;
            writer.symlink(&name, &rel, &target)?;
        } else if entry.is_dir() {
            writer.dir(&name, &rel)?;
        } else {
            writer.file(&name, &rel, &mut entry, mode & 0o111 != 0)?;
        }
    }
    Ok(())
}
