//! The only code in the relay that calls `fsync` or `rename`.
//!
//! Each function is blocking and meant to run inside `spawn_blocking`. The durability recipe
//! is the classic one: write to a file in `tmp/`, `fsync` it, `rename` it into place, then
//! `fsync` the directory that now holds the name, so that after a power cut either the old
//! state or the complete new one is on disk.
//!
//! Everything created here is private whatever the umask: files 0600, directories 0700
//! (explicit modes at creation, and `chmod` where an existing path may be more open).

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

/// Create `dir` and any missing parents with mode 0700 (whatever the umask); a directory that
/// already exists keeps its mode (the state directory may be a mount point, or shared with a
/// group on purpose).
pub fn create_dir_if_missing(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Open `path` for writing, creating it if needed, private to the relay's user whatever the
/// umask, also when an older version created it more open (e.g. the lock file).
pub fn open_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Create `path` or truncate it, private to the relay's user whatever the umask, also when it
/// existed more open (e.g. a message exported by the CLI over an older export).
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Write `bytes` to `path` (created private or truncated), without fsync: for scratch files
/// such as the writability probe.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.write_all(bytes)
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

/// Give the new name `target` the content of `source`: a hard link where the filesystem
/// allows one, otherwise a [`copy_private`]. The caller syncs the target's directory.
pub fn link_or_copy(source: &Path, target: &Path) -> io::Result<()> {
    if fs::hard_link(source, target).is_ok() {
        return Ok(());
    }
    copy_private(source, target)
}

/// Copy `source` into a new file `target`, private (0600) whatever the source's mode or the
/// umask, and fsync it. A failed copy leaves no partial `target`. The caller syncs the
/// target's directory.
pub fn copy_private(source: &Path, target: &Path) -> io::Result<()> {
    let mut from = File::open(source)?;
    let mut to = create_new(target)?;
    let copied = io::copy(&mut from, &mut to).and_then(|_| to.sync_data());
    if copied.is_err() {
        drop(to);
        let _ = fs::remove_file(target);
    }
    copied
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_and_directories_are_private_also_when_they_existed_more_open() {
        let dir = tempfile::tempdir().unwrap();
        // An older version left a world-writable lock file.
        let lock = dir.path().join("relay.lock");
        fs::write(&lock, b"").unwrap();
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o666)).unwrap();
        open_private(&lock).unwrap();
        assert_eq!(mode(&lock), 0o600);
        let fresh = dir.path().join("fresh.lock");
        open_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);

        let nested = dir.path().join("a/b/c");
        create_dir_if_missing(&nested).unwrap();
        for path in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(path)), 0o700, "{path}");
        }
        let probe = dir.path().join("probe");
        write_private(&probe, b"probe").unwrap();
        assert_eq!(mode(&probe), 0o600);
    }

    #[test]
    fn a_copy_is_private_whatever_the_source_mode_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.msg");
        fs::write(&source, b"Subject: shared\r\n\r\nbody\r\n").unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();
        let copy = dir.path().join("copy.msg");
        copy_private(&source, &copy).unwrap();
        assert_eq!(mode(&copy), 0o600);
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&source).unwrap());
        // An existing target is an error and stays as it was.
        fs::write(&source, b"other").unwrap();
        assert!(copy_private(&source, &copy).is_err());
        assert_eq!(fs::read(&copy).unwrap(), b"Subject: shared\r\n\r\nbody\r\n");
        // A link shares the content.
        let linked = dir.path().join("linked.msg");
        link_or_copy(&source, &linked).unwrap();
        assert_eq!(fs::read(&linked).unwrap(), b"other");
    }
}
