//! The only code in the relay that calls `fsync` or `rename`.
//!
//! Each function is blocking and meant to run inside `spawn_blocking`. The durability recipe
//! is the classic one: write to a file in `tmp/`, `fsync` it, `rename` it into place, then
//! `fsync` the directory that now holds the name, so that after a power cut either the old
//! state or the complete new one is on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Spool files hold people's mail: readable and writable by the relay's user only, whatever
/// the umask (the systemd unit sets `UMask=0077`, a shell or container often does not).
const FILE_MODE: u32 = 0o600;
/// Spool directories: the relay's user only.
const DIR_MODE: u32 = 0o700;

/// Create `path` exclusively (fails if it exists), for a new spool entry.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Create `dir` (and its parents) if needed and make it private to the relay's user, also
/// when an older version or another tool created it more open.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
}

/// Flush a file's data (and the metadata needed to read it back) to stable storage.
pub fn sync_file(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Make the names in `dir` durable (after a rename or an unlink in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to `tmp`, fsync it, and rename it over `target`. The caller syncs the
/// target's directory (possibly once for several renames).
pub fn write_and_rename(tmp: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Rename `from` to `to` (same filesystem).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)
}

/// Remove a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
