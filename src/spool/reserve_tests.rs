//! Table tests of the disk reserve's state (samples given by hand), and of the spool's two
//! ways to create an entry under it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::spool::Spool;
use crate::spool::test_support::envelope;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

fn reserve(setting: MinFreeSpace) -> DiskReserve {
    let reserve = DiskReserve::new("/spool");
    reserve.set_setting(setting);
    reserve
}

#[test]
fn nothing_is_refused_before_the_first_sample() {
    let reserve = reserve(MinFreeSpace::Bytes(4 * MIB));
    assert!(!reserve.is_reached());
    assert!(reserve.admits(u64::MAX));
    assert_eq!(reserve.status().free_bytes, None);
    assert_eq!(reserve.problem(), None);
    // Counting written bytes before any sample guesses nothing either.
    reserve.consume(GIB);
    assert!(!reserve.is_reached());
}

#[test]
fn samples_cross_the_reserve_and_leave_it_with_a_margin() {
    let reserve = reserve(MinFreeSpace::Bytes(4 * MIB));
    // (free, reached after the sample): leaving needs 5% of the reserve above it.
    for (free, reached) in [
        (8 * MIB, false),
        (4 * MIB, false),
        (4 * MIB - 1, true),
        (MIB, true),
        (4 * MIB, true),
        (4 * MIB + 4 * MIB / 20 - 1, true),
        (4 * MIB + 4 * MIB / 20, false),
        (4 * MIB, false),
    ] {
        reserve.record(free, 8 * MIB);
        assert_eq!(reserve.is_reached(), reached, "free {free}");
        assert_eq!(reserve.admits(0), !reached, "free {free}");
        assert_eq!(reserve.problem().is_some(), reached, "free {free}");
    }
}

#[test]
fn the_default_reserve_is_resolved_against_the_filesystem_size() {
    let reserve = reserve(MinFreeSpace::Default);
    reserve.record(300 * MIB, 10 * GIB);
    assert_eq!(reserve.status().required_bytes, 512 * MIB);
    assert!(reserve.is_reached());
    let problem = reserve.problem().unwrap();
    assert!(problem.contains("300.0 MiB free"), "{problem}");
    assert!(problem.contains("reserve 512.0 MiB"), "{problem}");
    assert!(problem.contains("452 4.3.1"), "{problem}");
    reserve.record(2 * GIB, 100 * GIB);
    assert_eq!(reserve.status().required_bytes, GIB);
    assert!(!reserve.is_reached());
}

#[test]
fn zero_disables_the_reserve_even_on_a_full_disk() {
    for setting in [MinFreeSpace::Bytes(0), MinFreeSpace::Percent(0)] {
        let reserve = reserve(setting);
        reserve.record(0, 8 * MIB);
        assert!(!reserve.is_reached(), "{setting:?}");
        assert!(reserve.admits(u64::MAX), "{setting:?}");
        assert_eq!(reserve.status().required_bytes, 0);
    }
}

#[test]
fn a_new_setting_applies_at_once_to_the_last_sample() {
    let reserve = reserve(MinFreeSpace::Bytes(MIB));
    reserve.record(3 * MIB, 8 * MIB);
    assert!(!reserve.is_reached());
    reserve.set_setting(MinFreeSpace::Percent(5000));
    assert!(reserve.is_reached(), "4 MiB of 8 MiB required, 3 MiB free");
    reserve.set_setting(MinFreeSpace::Bytes(0));
    assert!(!reserve.is_reached());
}

#[test]
fn committed_bytes_count_before_the_next_sample() {
    let reserve = reserve(MinFreeSpace::Bytes(4 * MIB));
    reserve.record(6 * MIB, 8 * MIB);
    reserve.consume(MIB);
    assert!(!reserve.is_reached());
    assert_eq!(reserve.status().free_bytes, Some(5 * MIB));
    assert!(
        !reserve.admits(2 * MIB),
        "5 MiB free - 2 MiB is below 4 MiB"
    );
    reserve.consume(MIB + 1);
    assert!(reserve.is_reached());
}

#[test]
fn sampling_a_real_filesystem_gives_plausible_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let reserve = DiskReserve::new(dir.path());
    reserve.sample().unwrap();
    let status = reserve.status();
    let (free, total) = (status.free_bytes.unwrap(), status.total_bytes.unwrap());
    assert!(total > 0 && free <= total, "{status:?}");
    assert!(
        DiskReserve::new(dir.path().join("missing"))
            .sample()
            .is_err()
    );
}

#[tokio::test]
async fn below_the_reserve_client_mail_is_refused_as_storage_full_and_bounces_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path()).unwrap();
    spool.reserve().set_setting(MinFreeSpace::Bytes(4 * MIB));
    spool.reserve().record(8 * MIB, 16 * MIB);

    // Created above the reserve, committed after it was reached: refused, nothing left behind.
    let mut late = spool.create().await.unwrap();
    late.write(&vec![b'x'; 100 * 1024]).await.unwrap(); // spilled to a file in tmp/
    spool.reserve().record(3 * MIB, 16 * MIB);
    let error = late.commit(envelope()).await.unwrap_err();
    assert!(error.is_storage_full(), "{error}");
    assert!(error.to_string().contains("disk reserve"), "{error}");
    // The dropped entry removes its file on the blocking pool: wait for it (bounded).
    let tmp_files = || {
        std::fs::read_dir(dir.path().join("spool/tmp"))
            .unwrap()
            .count()
    };
    for _ in 0..500 {
        if tmp_files() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(tmp_files(), 0);

    let error = spool.create().await.unwrap_err();
    assert!(error.is_storage_full(), "{error}");

    // The relay's own DSN may use the reserve.
    let mut bounce = spool.create_bounce().await.unwrap();
    bounce.write(b"Subject: DSN\r\n\r\nx\r\n").await.unwrap();
    let stored = bounce.commit(envelope()).await.unwrap();
    assert!(spool.load(&stored.id).await.is_ok());
    assert_eq!(spool.list_queued().await.unwrap().len(), 1);

    // Space returns: client mail is stored again, and its size is counted at once.
    spool.reserve().record(8 * MIB, 16 * MIB);
    let mut writer = spool.create().await.unwrap();
    writer.write(&vec![b'y'; 1024]).await.unwrap();
    writer.commit(envelope()).await.unwrap();
    let free = spool.reserve().status().free_bytes.unwrap();
    assert!(free < 8 * MIB - 1024, "{free}");
}
