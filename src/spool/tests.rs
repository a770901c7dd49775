//! Spool tests on a real filesystem (a temporary directory).

use super::*;
use crate::spool::test_support::envelope;
use crate::vocab::address::Address;
use crate::vocab::envelope::{Envelope, FailedRecipient, LastAttempt};

async fn commit(spool: &Spool, body: &[u8]) -> Envelope {
    let mut writer = spool.create().await.unwrap();
    writer.write(body).await.unwrap();
    writer.commit(envelope()).await.unwrap()
}

#[tokio::test]
async fn committed_entries_survive_a_reopen_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, recovery) = Spool::open(dir.path()).unwrap();
    assert!(recovery.entries.is_empty());
    let first = commit(&spool, b"Subject: one\r\n\r\nbody\r\n").await;
    let second = commit(&spool, b"Subject: two\r\n\r\nbody\r\n").await;
    assert_ne!(first.id, second.id);
    drop(spool);

    let (spool, recovery) = Spool::open(dir.path()).unwrap();
    let ids: Vec<&str> = recovery.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec![first.id.as_str(), second.id.as_str()]);
    let loaded = spool.load(&first.id).await.unwrap();
    assert_eq!(loaded, first);
    let (envelope, content) = spool.load_entry(&first.id).await.unwrap();
    assert_eq!(envelope, first);
    assert!(!content.is_streamed());
    assert_eq!(content.head(), b"Subject: one\r\n\r\nbody\r\n");
    // One file per entry, nothing else until an attempt fails.
    let files = std::fs::read_dir(dir.path().join("spool/queue"))
        .unwrap()
        .count();
    assert_eq!(files, 2);
}

#[tokio::test]
async fn an_abandoned_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut writer = spool.create().await.unwrap();
    writer.write(b"partial").await.unwrap();
    drop(writer);
    assert_eq!(tmp_files_after_cleanup(dir.path()).await, 0);
    let (_, recovery) = Spool::open(dir.path()).unwrap();
    assert!(recovery.entries.is_empty());
}

#[tokio::test]
async fn damaged_entries_are_quarantined_not_delivered_and_do_not_stop_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let good = commit(&spool, b"good\r\n").await;
    let truncated = commit(&spool, b"this body will be cut short\r\n").await;
    let damaged = commit(&spool, b"envelope will be edited\r\n").await;
    let lone = commit(&spool, b"content file will be missing\r\n").await;
    let updated = commit(&spool, b"updated envelope will not match\r\n").await;
    let queue = dir.path().join("spool/queue");
    let cut_path = queue.join(format!("{}.msg", truncated.id));
    let cut = std::fs::read(&cut_path).unwrap();
    std::fs::write(&cut_path, &cut[..cut.len() - 5]).unwrap();
    let msg_path = queue.join(format!("{}.msg", damaged.id));
    let bytes = std::fs::read(&msg_path).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    std::fs::write(&msg_path, text.replace("a@x.example", "b@x.example")).unwrap();
    let mut lone_update = lone.clone();
    lone_update.attempts = 1;
    spool.update(&lone_update).await.unwrap();
    std::fs::remove_file(queue.join(format!("{}.msg", lone.id))).unwrap();
    let mut wrong = updated.clone();
    wrong.body_len += 1;
    spool.update(&wrong).await.unwrap();
    std::fs::write(
        dir.path().join("spool/tmp/0000000000000001.msg"),
        b"leftover",
    )
    .unwrap();
    drop(spool);

    let (_, recovery) = Spool::open(dir.path()).unwrap();
    let ids: Vec<&str> = recovery.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec![good.id.as_str()]);
    assert_eq!(recovery.quarantined.len(), 4, "{:?}", recovery.quarantined);
    assert_eq!(recovery.tmp_removed, 1);
    let corrupt: Vec<String> = std::fs::read_dir(dir.path().join("spool/corrupt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(corrupt.contains(&format!("{}.msg", truncated.id)));
    assert!(corrupt.contains(&format!("{}.msg", damaged.id)));
    assert!(corrupt.contains(&format!("{}.env", lone.id)));
    assert!(corrupt.contains(&format!("{}.msg", updated.id)));
    assert!(corrupt.contains(&format!("{}.env", updated.id)));
}

#[tokio::test]
async fn a_body_damaged_after_startup_is_refused_at_read_time() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let entry = commit(&spool, b"original content\r\n").await;
    let body_path = dir.path().join(format!("spool/queue/{}.msg", entry.id));
    let mut bytes = std::fs::read(&body_path).unwrap();
    bytes[5] = b'N';
    std::fs::write(&body_path, &bytes).unwrap();
    // The trailer still verifies (so the envelope loads); the content does not.
    assert_eq!(spool.load(&entry.id).await.unwrap(), entry);
    assert!(matches!(
        spool.load_entry(&entry.id).await,
        Err(SpoolError::Corrupt { .. })
    ));
    spool.quarantine(&entry.id).await.unwrap();
    assert!(matches!(
        spool.load(&entry.id).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn update_remove_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut entry = commit(&spool, b"x\r\n").await;
    entry.attempts = 3;
    entry.last_attempt = Some(LastAttempt {
        at: 1,
        class: "transient".into(),
        stage: "connect".into(),
        reply: "connection refused".into(),
        hint: String::new(),
    });
    spool.update(&entry).await.unwrap();
    assert_eq!(spool.load(&entry.id).await.unwrap().attempts, 3);

    spool.remove(&entry.id).await.unwrap();
    assert!(matches!(
        spool.load(&entry.id).await,
        Err(SpoolError::NotFound(_))
    ));

    let failed = commit(&spool, b"y\r\n").await;
    spool.fail(&failed).await.unwrap();
    assert!(
        dir.path()
            .join(format!("spool/failed/{}.env", failed.id))
            .exists()
    );
    assert!(
        dir.path()
            .join(format!("spool/failed/{}.msg", failed.id))
            .exists()
    );
    let (_, recovery) = Spool::open(dir.path()).unwrap();
    assert!(recovery.entries.is_empty());
}

#[tokio::test]
async fn ids_are_unique_and_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..200 {
        let writer = spool.create().await.unwrap();
        assert!(
            crate::vocab::envelope::is_valid_id(writer.id()),
            "{}",
            writer.id()
        );
        assert!(ids.insert(writer.id().to_string()));
    }
}

#[test]
fn storage_full_is_recognised() {
    let full = SpoolError::Io {
        operation: "write body",
        source: io::Error::from(io::ErrorKind::StorageFull),
    };
    assert!(full.is_storage_full());
    let other = SpoolError::Io {
        operation: "write body",
        source: io::Error::from(io::ErrorKind::PermissionDenied),
    };
    assert!(!other.is_storage_full());
}

#[tokio::test]
async fn failed_parts_share_the_body_and_old_failures_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let entry = commit(&spool, b"shared body\r\n").await;
    let mut failed = entry.clone();
    failed.failures = vec![FailedRecipient {
        recipient: Address::parse("a@x.example").unwrap(),
        at: 1_000,
        class: "permanent".into(),
        stage: "rcpt".into(),
        reply: "550 5.1.10 RecipientNotFound".into(),
        hint: String::new(),
    }];
    let failed_id = spool.record_failed_recipients(&failed).await.unwrap();
    assert_ne!(failed_id, entry.id);
    // The queued entry is untouched and still verifies.
    let (queued, content) = spool.load_entry(&entry.id).await.unwrap();
    assert_eq!(queued, entry);
    assert_eq!(content.head(), b"shared body\r\n");
    let listed = spool.list_failed().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, failed_id);
    assert_eq!(listed[0].failures.len(), 1);
    let failed_file =
        std::fs::read(dir.path().join(format!("spool/failed/{failed_id}.msg"))).unwrap();
    let (_, failed_content) = format::split_entry(&failed_file).unwrap();
    assert_eq!(failed_content, b"shared body\r\n");
    assert_eq!(spool.purge_failed(999).await.unwrap(), 0);
    assert_eq!(spool.purge_failed(1_001).await.unwrap(), 1);
    assert!(spool.list_failed().await.unwrap().is_empty());
}

#[tokio::test]
async fn large_content_spills_to_a_file_and_commits_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let chunk = vec![b'z'; 10_000];
    let mut writer = spool.create().await.unwrap();
    for _ in 0..30 {
        writer.write(&chunk).await.unwrap();
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool/tmp"))
            .unwrap()
            .count(),
        1,
        "spilled to tmp/"
    );
    let entry = writer.commit(envelope()).await.unwrap();
    assert_eq!(entry.body_len, 300_000);
    assert_eq!(spool.load_entry(&entry.id).await.unwrap().1.len(), 300_000);
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool/tmp"))
            .unwrap()
            .count(),
        0
    );

    // Abandoned after spilling: the temporary file goes too.
    let mut writer = spool.create().await.unwrap();
    for _ in 0..30 {
        writer.write(&chunk).await.unwrap();
    }
    drop(writer);
    assert_eq!(tmp_files_after_cleanup(dir.path()).await, 0);
}

/// The files in `spool/tmp/` once a dropped writer's removal (on the blocking pool) has had
/// its chance: polled for at most 10 s.
async fn tmp_files_after_cleanup(state_dir: &std::path::Path) -> usize {
    let count = || {
        std::fs::read_dir(state_dir.join("spool/tmp"))
            .unwrap()
            .count()
    };
    for _ in 0..1000 {
        if count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_directory_syncs_and_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let spool = std::sync::Arc::new(spool);
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let spool = std::sync::Arc::clone(&spool);
            tokio::spawn(async move {
                let mut writer = spool.create().await.unwrap();
                writer
                    .write(format!("message {n}\r\n").as_bytes())
                    .await
                    .unwrap();
                writer.commit(envelope()).await.unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().id);
    }
    assert_eq!(ids.len(), 50);
    drop(spool);
    let (_, recovery) = Spool::open(dir.path()).unwrap();
    assert_eq!(recovery.entries.len(), 50);
}

#[tokio::test]
async fn content_over_the_in_memory_limit_is_verified_and_streamed_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut body = b"Subject: large\r\n\r\n".to_vec();
    body.resize(content::IN_MEMORY_LIMIT as usize + 10, b'x');
    body.extend_from_slice(b"\r\n");
    let entry = commit(&spool, &body).await;
    let (envelope, content) = spool.load_entry(&entry.id).await.unwrap();
    assert_eq!(envelope, entry);
    assert!(content.is_streamed());
    assert_eq!(content.len(), body.len() as u64);
    assert_eq!(content.head(), &body[..content::HEAD_LEN]);
    let sent: Vec<u8> = content
        .chunks(Box::new(|| panic!("no abort for intact content")))
        .unwrap()
        .flat_map(|c| c.into_owned())
        .collect();
    assert_eq!(sent, body[..body.len() - 2]);

    // Damage in the middle is found before anything is handed out.
    let path = dir.path().join(format!("spool/queue/{}.msg", entry.id));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600_000] = b'y';
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        spool.load_entry(&entry.id).await,
        Err(SpoolError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn spool_files_and_folders_are_private_to_the_relay_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // As an older version or a careless `mkdir` would have left it.
    let root = dir.path().join("spool");
    std::fs::create_dir_all(root.join("queue")).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let entry = commit(&spool, b"Subject: private\r\n\r\nbody\r\n").await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for folder in ["", "queue", "failed", "tmp", "corrupt", "state"] {
        assert_eq!(mode(&root.join(folder)), 0o700, "spool/{folder}");
    }
    assert_eq!(mode(&root.join(format!("queue/{}.msg", entry.id))), 0o600);
    let mut failed = entry.clone();
    failed.attempts = 1;
    spool.update(&failed).await.unwrap();
    assert_eq!(mode(&root.join(format!("queue/{}.env", entry.id))), 0o600);
}

fn failure_of(recipient: &str) -> FailedRecipient {
    FailedRecipient {
        recipient: Address::parse(recipient).unwrap(),
        at: 1_000,
        class: "permanent".into(),
        stage: "data-end".into(),
        reply: "554 5.2.252 SendAsDenied".into(),
        hint: String::new(),
    }
}

#[tokio::test]
async fn a_failed_entry_goes_back_to_the_queue_with_a_fresh_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let body = b"Subject: requeue\r\n\r\nbody\r\n";
    let entry = commit(&spool, body).await;
    let mut failed = entry.clone();
    failed.attempts = 7;
    failed.received_at = 1_000;
    failed.failures = vec![failure_of("a@x.example")];
    spool.fail(&failed).await.unwrap();
    assert!(spool.list_queued().await.unwrap().is_empty());

    let requeued = spool.requeue(&entry.id).await.unwrap();
    assert_eq!(requeued.id, entry.id);
    assert_eq!(requeued.attempts, 0);
    assert!(requeued.failures.is_empty());
    assert_eq!(requeued.received_at, 1_000, "the arrival time is history");
    let now = unix_now();
    assert!(requeued.requeued_at.is_some_and(|at| at + 60 > now));
    assert_eq!(
        requeued.queue_lifetime_start(),
        requeued.requeued_at.unwrap()
    );
    assert!(spool.list_failed().await.unwrap().is_empty());
    let (loaded, content) = spool.load_entry(&entry.id).await.unwrap();
    assert_eq!(loaded, requeued);
    assert_eq!(content.head(), body);
    // Twice is an error, not a duplicate.
    assert!(matches!(
        spool.requeue(&entry.id).await,
        Err(SpoolError::NotFound(_))
    ));
    // It survives a restart as a queued entry.
    drop(spool);
    let (_, recovery) = Spool::open(dir.path()).unwrap();
    assert_eq!(recovery.entries, vec![requeued]);
}

#[tokio::test]
async fn a_failed_part_goes_back_with_only_its_failed_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let mut entry = commit(&spool, b"Subject: part\r\n\r\nbody\r\n").await;
    entry
        .recipients
        .push(Address::parse("b@x.example").unwrap());
    let mut part = entry.clone();
    part.recipients = vec![Address::parse("b@x.example").unwrap()];
    part.failures = vec![failure_of("b@x.example")];
    let part_id = spool.record_failed_recipients(&part).await.unwrap();
    let requeued = spool.requeue(&part_id).await.unwrap();
    assert_eq!(
        requeued.recipients,
        vec![Address::parse("b@x.example").unwrap()]
    );
    // Both entries are queued and verify; they share the content file.
    let ids: Vec<String> = spool
        .list_queued()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&entry.id) && ids.contains(&part_id));
    spool.load_entry(&part_id).await.unwrap();
    spool.remove(&entry.id).await.unwrap();
    spool.load_entry(&part_id).await.unwrap();
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_requeue_leaves_the_failed_entry_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    let entry = commit(&spool, b"Subject: crash\r\n\r\nbody\r\n").await;
    let mut failed = entry.clone();
    failed.failures = vec![failure_of("a@x.example")];
    spool.fail(&failed).await.unwrap();
    // The requeue wrote the new queue envelope, then the process died before the move.
    let queue = dir.path().join("spool/queue");
    let mut half = entry.clone();
    half.requeued_at = Some(unix_now());
    std::fs::write(
        queue.join(format!("{}.env", entry.id)),
        format::encode(&half).unwrap(),
    )
    .unwrap();
    drop(spool);
    let (spool, recovery) = Spool::open(dir.path()).unwrap();
    assert!(recovery.entries.is_empty());
    assert!(std::fs::read_dir(&queue).unwrap().next().is_none());
    let listed = spool.list_failed().await.unwrap();
    assert_eq!(listed.len(), 1);
    // And the requeue can simply be run again.
    spool.requeue(&entry.id).await.unwrap();
    assert_eq!(spool.list_queued().await.unwrap().len(), 1);
}

#[tokio::test]
async fn state_files_read_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    assert_eq!(spool.read_state("m365.recipients.json").await, None);
    spool
        .write_state("m365.recipients.json", b"[1,2]".to_vec())
        .await
        .unwrap();
    assert_eq!(
        spool.read_state("m365.recipients.json").await.as_deref(),
        Some(&b"[1,2]"[..])
    );
    assert_eq!(spool.read_state("../escape").await, None);
}
