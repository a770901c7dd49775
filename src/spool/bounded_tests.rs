//! Disk waits that stall: the runtime gets a single blocking thread, which a test occupies,
//! so every spool operation that needs the disk really waits (no mock of the spool).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::spool::SPILL_THRESHOLD;
use crate::spool::test_support::{envelope, runtime_with_one_disk_thread, stall_the_disk};

/// Wait until the disk work queued so far has run (the pool has one thread and takes its
/// work in order), so that a check afterwards sees what it did.
async fn disk_work_done() {
    tokio::task::spawn_blocking(|| ()).await.unwrap();
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(300)
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Waits (bounded) until `dir` is empty; returns how many files are left.
async fn files_left_in(dir: &Path) -> usize {
    for _ in 0..500 {
        if files_in(dir) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    files_in(dir)
}

#[test]
fn creating_an_entry_is_given_up_at_its_deadline() {
    runtime_with_one_disk_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let release = stall_the_disk().await;
        let error = spool.create_until(soon()).await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert!(!error.is_storage_full());
        drop(release);
        // The disk answers again: so does the spool.
        let far = Instant::now() + Duration::from_secs(30);
        let mut writer = spool.create_until(far).await.unwrap();
        writer.write_until(b"x\r\n", far).await.unwrap();
        assert!(matches!(
            writer.commit_until(envelope(), far).await,
            BoundedCommit::Committed(_)
        ));
    });
}

/// The spill file is being created when the deadline passes: the writer is dropped before
/// the creation runs, and the creation removes its own file.
#[test]
fn a_write_given_up_while_its_file_is_created_leaves_nothing_in_tmp() {
    runtime_with_one_disk_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut writer = spool.create().await.unwrap();
        let release = stall_the_disk().await;
        let big = vec![b'a'; SPILL_THRESHOLD + 1];
        let error = writer.write_until(&big, soon()).await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        drop(writer);
        drop(release);
        disk_work_done().await;
        assert_eq!(files_left_in(&dir.path().join("spool/tmp")).await, 0);
        assert_eq!(files_in(&dir.path().join("spool/queue")), 0);
    });
}

/// Writes into the spill file stall: one is given up, and the dropped writer removes the file.
#[test]
fn a_write_given_up_in_a_spilled_entry_leaves_nothing_in_tmp() {
    runtime_with_one_disk_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut writer = spool.create().await.unwrap();
        let chunk = vec![b'a'; SPILL_THRESHOLD + 1];
        writer.write(&chunk).await.unwrap();
        assert_eq!(files_in(&dir.path().join("spool/tmp")), 1);
        let release = stall_the_disk().await;
        // A file write is handed to the blocking pool and the next one waits for it: within
        // a few chunks a write must wait for the stalled disk.
        let mut outcome = Ok(());
        for _ in 0..8 {
            outcome = writer.write_until(&chunk, soon()).await;
            if outcome.is_err() {
                break;
            }
        }
        let error = outcome.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        drop(writer);
        drop(release);
        disk_work_done().await;
        assert_eq!(files_left_in(&dir.path().join("spool/tmp")).await, 0);
    });
}

/// A commit that outlives its deadline is not abandoned: the caller gets it back, and it
/// completes once the disk answers, durable in `queue/`.
#[test]
fn a_commit_past_its_deadline_goes_on_and_completes() {
    runtime_with_one_disk_thread().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let mut writer = spool.create().await.unwrap();
        writer
            .write(b"Subject: late\r\n\r\nbody\r\n")
            .await
            .unwrap();
        let release = stall_the_disk().await;
        let BoundedCommit::StillRunning(commit) = writer.commit_until(envelope(), soon()).await
        else {
            panic!("the commit cannot finish while the disk is stalled");
        };
        assert_eq!(files_in(&dir.path().join("spool/queue")), 0);
        drop(release);
        let committed = tokio::time::timeout(Duration::from_secs(30), commit)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (loaded, content) = spool.load_entry(&committed.id).await.unwrap();
        assert_eq!(loaded, committed);
        assert_eq!(content.head(), b"Subject: late\r\n\r\nbody\r\n");
        assert_eq!(files_left_in(&dir.path().join("spool/tmp")).await, 0);
    });
}
