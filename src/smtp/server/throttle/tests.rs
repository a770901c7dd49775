//! Table and timing tests of the AUTH throttle, on tokio's paused clock (time advances only
//! when every task waits, so the figures are exact and the tests take no real time).

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[test]
fn penalty_doubles_to_the_cap() {
    let settings = ThrottleSettings::default();
    let table = [
        (0, 0),
        (1, 1_000),
        (2, 2_000),
        (3, 4_000),
        (4, 8_000),
        (5, 10_000),
        (50, 10_000),
        (u32::MAX, 10_000),
    ];
    for (failures, millis) in table {
        assert_eq!(
            settings.penalty(failures),
            Duration::from_millis(millis),
            "{failures} failures"
        );
    }
    let off = ThrottleSettings {
        penalty_max: Duration::ZERO,
        ..ThrottleSettings::default()
    };
    assert_eq!(off.penalty(7), Duration::ZERO);
    assert_eq!(settings.max_guesses_per_minute(2), Some(12));
    assert_eq!(off.max_guesses_per_minute(2), None);
}

#[test]
fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
    let table = [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
        ("::ffff:192.0.2.7", "192.0.2.7", true),
        ("192.0.2.7", "192.0.2.8", false),
    ];
    for (a, b, same) in table {
        assert_eq!(
            AddressKey::from(ip(a)) == AddressKey::from(ip(b)),
            same,
            "{a} vs {b}"
        );
    }
    assert_eq!(
        AddressKey::from(ip("2001:db8:1:2::1")).to_string(),
        "2001:db8:1:2::/64"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_burst_any_user_waits_at_most_the_cap_and_is_admitted() {
    let throttle = AuthThrottle::new(ThrottleSettings::default());
    let shared = ip("127.0.0.1");
    for _ in 0..50 {
        throttle.record_failure(shared, "printer");
    }
    // Another address is not slowed by the first one's failures, except for the user guessed.
    let other = throttle
        .admit(ip("192.0.2.1"), "scanner", far())
        .await
        .unwrap();
    assert_eq!(other.waited, Duration::ZERO);
    drop(other);
    let guessed = throttle
        .admit(ip("192.0.2.1"), "printer", far())
        .await
        .unwrap();
    assert_eq!(guessed.waited, Duration::from_secs(10));
    drop(guessed);
    for user in ["printer", "scanner"] {
        throttle.record_failure(shared, "printer");
        let admitted = throttle.admit(shared, user, far()).await.unwrap();
        assert_eq!(admitted.waited, Duration::from_secs(10), "{user}");
    }
    // Failures leave the window.
    tokio::time::advance(Duration::from_secs(601)).await;
    let later = throttle.admit(shared, "printer", far()).await.unwrap();
    assert_eq!(later.waited, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn parallel_attempts_per_address_are_capped_first_come_first_served() {
    let throttle = Arc::new(AuthThrottle::new(ThrottleSettings::default()));
    let a = throttle.admit(ip("192.0.2.9"), "u1", far()).await.unwrap();
    let _b = throttle.admit(ip("192.0.2.9"), "u2", far()).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_secs(30),
        throttle.admit(ip("192.0.2.9"), "u3", far()),
    )
    .await;
    assert!(third.is_err(), "a third attempt from the address waits");
    assert!(
        throttle.admit(ip("192.0.2.10"), "u3", far()).await.is_ok(),
        "other addresses are not affected"
    );
    drop(a);
    assert!(throttle.admit(ip("192.0.2.9"), "u3", far()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_gives_up_and_leaves_no_slot_behind() {
    let throttle = AuthThrottle::new(ThrottleSettings::default());
    for _ in 0..10 {
        throttle.record_failure(ip("192.0.2.9"), "u");
    }
    let soon = Instant::now() + Duration::from_secs(3);
    assert_eq!(
        throttle.admit(ip("192.0.2.9"), "u", soon).await.err(),
        Some(NotAdmitted::DeadlinePassed)
    );
    let held = throttle.admit(ip("192.0.2.9"), "x", far()).await.unwrap();
    let _other = throttle.admit(ip("192.0.2.9"), "y", far()).await.unwrap();
    let soon = Instant::now() + Duration::from_secs(3);
    assert_eq!(
        throttle.admit(ip("192.0.2.9"), "z", soon).await.err(),
        Some(NotAdmitted::DeadlinePassed),
        "no slot before the deadline"
    );
    drop(held);
    drop(_other);
    assert_eq!(throttle.tracked().slot_entries, 0, "slot entries are freed");
}

/// `attackers` tasks guess for `minutes` of (paused) time, each from `source(i)` for `user(i)`;
/// returns how many guesses got a check.
async fn guesses(
    throttle: Arc<AuthThrottle>,
    attackers: usize,
    minutes: u64,
    source: fn(usize) -> IpAddr,
    user: fn(usize) -> String,
) -> u32 {
    let checked = Arc::new(AtomicU32::new(0));
    let end = Instant::now() + Duration::from_secs(60 * minutes);
    let mut tasks = Vec::new();
    for i in 0..attackers {
        let throttle = Arc::clone(&throttle);
        let checked = Arc::clone(&checked);
        tasks.push(tokio::spawn(async move {
            for _ in 0..100_000 {
                let Ok(admitted) = throttle.admit(source(i), &user(i), end).await else {
                    break;
                };
                if Instant::now() >= end {
                    break;
                }
                checked.fetch_add(1, Ordering::SeqCst);
                // The check itself takes a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                throttle.record_failure(source(i), &user(i));
                drop(admitted);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    checked.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn twenty_connections_from_one_address_get_the_stated_rate() {
    let throttle = Arc::new(AuthThrottle::new(ThrottleSettings::default()));
    let per_minute = throttle.settings().max_guesses_per_minute(2).unwrap();
    let total = guesses(
        Arc::clone(&throttle),
        20,
        5,
        |_| "192.0.2.66".parse().unwrap(),
        |i| format!("user{i}"),
    )
    .await;
    // The ramp to the cap (1+2+4+8 s) lets a few more through in the first minute.
    let bound = u32::try_from(per_minute * 5).unwrap() + 8;
    assert!(
        total <= bound,
        "{total} guesses in 5 minutes (bound {bound})"
    );
    assert!(total >= 10, "still served, only slowly: {total}");
}

#[tokio::test(start_paused = true)]
async fn sixty_addresses_guessing_one_user_get_the_stated_rate() {
    let throttle = Arc::new(AuthThrottle::new(ThrottleSettings::default()));
    let per_minute = throttle.settings().max_guesses_per_minute(2).unwrap();
    let total = guesses(
        Arc::clone(&throttle),
        60,
        5,
        |i| format!("198.51.100.{}", i + 1).parse().unwrap(),
        |_| "printer".to_string(),
    )
    .await;
    let bound = u32::try_from(per_minute * 5).unwrap() + 8;
    assert!(
        total <= bound,
        "{total} guesses in 5 minutes (bound {bound})"
    );
}

#[tokio::test(start_paused = true)]
async fn the_opt_in_lockout_is_per_address_and_username() {
    let throttle = AuthThrottle::new(ThrottleSettings {
        lockout_after: 3,
        ..ThrottleSettings::default()
    });
    let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
    for _ in 0..3 {
        throttle.record_failure(a, "Printer");
    }
    assert!(matches!(
        throttle.admit(a, "printer", far()).await.err(),
        Some(NotAdmitted::LockedOut { .. })
    ));
    assert!(throttle.admit(a, "scanner", far()).await.is_ok());
    assert!(throttle.admit(b, "printer", far()).await.is_ok());
    let default = AuthThrottle::new(ThrottleSettings::default());
    for _ in 0..30 {
        default.record_failure(a, "printer");
    }
    assert!(
        default.admit(a, "printer", far()).await.is_ok(),
        "off by default"
    );
}

#[tokio::test(start_paused = true)]
async fn tables_stay_bounded_and_keep_tracking_new_addresses() {
    let throttle = AuthThrottle::new(ThrottleSettings::default());
    for i in 0..(MAX_TRACKED as u32 + 1000) {
        let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        throttle.record_failure(address, &format!("user{i}"));
        if i % 1024 == 0 {
            tokio::time::advance(Duration::from_millis(10)).await;
        }
    }
    let tracked = throttle.tracked();
    assert!(tracked.addresses <= MAX_TRACKED && tracked.usernames <= MAX_TRACKED);
    let newest = IpAddr::V4(std::net::Ipv4Addr::from(
        0x0a00_0000 + MAX_TRACKED as u32 + 999,
    ));
    let admitted = throttle.admit(newest, "someone", far()).await.unwrap();
    assert!(
        admitted.waited > Duration::ZERO,
        "the newest address is still tracked"
    );
}
