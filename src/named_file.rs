//! Reading the files a configuration names: listener certificates and keys,
//! `client_certificate`, `ca_file`, `client_secret_file`, and the config file itself.
//!
//! Invariants: every such read goes through [`read_limited`] (or [`read_limited_text`]), so
//! none can make the relay read without end or block: the path must name a regular file
//! (not `/dev/zero`, a FIFO, a socket or a directory; it is opened with `O_NONBLOCK` so a FIFO
//! cannot block the open, then checked with `fstat` on the open file, so it cannot be swapped
//! in between) and at most the given number of bytes is ever read. Errors name the file and
//! say what is wrong; the caller adds the config key.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest certificate, key, CA bundle or secret file the relay reads (1 MiB). A PEM
/// certificate is 1–2 KiB, a chain a few KiB, the whole Mozilla CA bundle about 220 KiB, an
/// Entra secret value 40 bytes.
pub const NAMED_FILE_LIMIT: u64 = 1024 * 1024;

/// The largest configuration file the relay reads (4 MiB: thousands of `[[user]]` entries).
pub const CONFIG_FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// Read at most `limit` bytes of the regular file at `path`.
///
/// # Errors
/// A readable message naming the file when it cannot be opened, is not a regular file, or is
/// larger than `limit`.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        // A FIFO would block the open until a writer comes; a terminal would become ours.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let metadata = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!(
            "{} is {}, not a regular file",
            path.display(),
            kind(&metadata)
        ));
    }
    let too_large = || {
        format!(
            "{} is larger than {}, the most the relay reads",
            path.display(),
            size_text(limit)
        )
    };
    if metadata.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // One byte more than allowed tells a file that grew since `fstat`.
    read_up_to(file, limit.saturating_add(1), &mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// [`read_limited`] for a text file (UTF-8).
///
/// # Errors
/// As [`read_limited`], and when the file is not UTF-8 text.
pub fn read_limited_text(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_limited(path, limit)?)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

fn read_up_to(file: File, limit: u64, into: &mut Vec<u8>) -> std::io::Result<usize> {
    file.take(limit).read_to_end(into)
}

fn kind(metadata: &Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let small = dir.path().join("small.pem");
        std::fs::write(&small, b"0123456789").unwrap();
        type Expected<'a> = Result<&'a [u8], &'a str>;
        let cases: [(&Path, u64, Expected<'_>); 6] = [
            (&small, 10, Ok(b"0123456789")),
            (&small, 9, Err("is larger than 9 bytes")),
            (
                Path::new("/dev/zero"),
                NAMED_FILE_LIMIT,
                Err("is a character device"),
            ),
            (&fifo, NAMED_FILE_LIMIT, Err("is a FIFO")),
            (dir.path(), NAMED_FILE_LIMIT, Err("is a directory")),
            (
                &dir.path().join("missing"),
                NAMED_FILE_LIMIT,
                Err("cannot read"),
            ),
        ];
        for (path, limit, expected) in cases {
            let got = read_limited(path, limit);
            match expected {
                Ok(bytes) => assert_eq!(got.as_deref(), Ok(bytes), "{}", path.display()),
                Err(needle) => {
                    let error = got.unwrap_err();
                    assert!(error.contains(needle), "{}: {error}", path.display());
                    assert!(error.contains(&path.display().to_string()), "{error}");
                }
            }
        }
        assert!(read_limited_text(&small, 10).is_ok());
        std::fs::write(&small, [0xff, 0xfe]).unwrap();
        assert!(read_limited_text(&small, 10).unwrap_err().contains("UTF-8"));
    }
}
