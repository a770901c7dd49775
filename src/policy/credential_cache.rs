//! A short-lived memory of credentials that were recently proven correct, so a printer that
//! reconnects for every page, or an application pool opening thirty sessions at once, pays
//! argon2 once an hour instead of once a message, and is let in at once even while someone
//! else's wrong guesses are being slowed down on the same address.
//!
//! Invariants: only successful checks are remembered (wrong guesses cannot fill or evict it
//! faster than right ones); an entry is an HMAC-SHA256 tag of (username, password) under a key
//! drawn at random when the policy is built and never leaves memory, so the cache reveals
//! neither the password nor whether a name is a user; entries expire after the TTL and the
//! cache holds at most [`MAX_ENTRIES`] (the oldest are dropped first); a configuration reload
//! builds a new policy and with it an empty cache, so a changed password is never served from
//! it. Answering a hit without delay leaks nothing: a hit means the guess was right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::hmac;
use tokio::time::Instant;

use super::Grant;
use crate::vocab::secret::Secret;

/// At most this many remembered credentials.
pub const MAX_ENTRIES: usize = 4096;

/// Recently proven (username, password) pairs, by keyed tag.
pub struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Remembered>>,
}

struct Remembered {
    grant: Arc<Grant>,
    proven_at: Instant,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// An empty cache; `ttl` zero disables it.
    pub fn new(ttl: Duration) -> CredentialCache {
        // Without randomness the key is still secret from clients (it never leaves memory),
        // only less unpredictable; the check behind the cache stays exact either way.
        let key: [u8; 32] = crate::vocab::random::unique_bytes();
        CredentialCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn tag(&self, username: &str, password: &Secret) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(username.len() as u64).to_be_bytes());
        context.update(username.as_bytes());
        context.update(password.expose().as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Remembered>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The grant of a pair proven within the TTL.
    pub fn lookup(&self, username: &str, password: &Secret) -> Option<Arc<Grant>> {
        if self.ttl.is_zero() {
            return None;
        }
        let tag = self.tag(username, password);
        let mut entries = self.lock();
        let remembered = entries.get(&tag)?;
        if remembered.proven_at.elapsed() < self.ttl {
            return Some(Arc::clone(&remembered.grant));
        }
        entries.remove(&tag);
        None
    }

    /// Remember a pair that was just proven correct.
    pub fn remember(&self, username: &str, password: &Secret, grant: &Arc<Grant>) {
        if self.ttl.is_zero() {
            return;
        }
        let tag = self.tag(username, password);
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&tag) {
            let ttl = self.ttl;
            entries.retain(|_, r| now.duration_since(r.proven_at) < ttl);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, r)| r.proven_at)
                    .map(|(tag, _)| *tag)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            tag,
            Remembered {
                grant: Arc::clone(grant),
                proven_at: now,
            },
        );
    }

    /// Number of remembered pairs (for tests and the status of the cache).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::{Access, Principal, SenderRewrite};
    use crate::vocab::address::Address;

    fn grant() -> Arc<Grant> {
        Arc::new(Grant::new(
            Principal::User("printer".into()),
            Access {
                account: "m365".into(),
                account_mailbox: Address::parse("relay@contoso.com").unwrap(),
                allowed_senders: vec![],
                sender_rewrite: SenderRewrite::Never,
                routes: vec![],
            },
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_exact_pairs_until_the_ttl() {
        let cache = CredentialCache::new(Duration::from_secs(3600));
        let pw = Secret::new("right");
        assert!(cache.lookup("printer", &pw).is_none());
        cache.remember("printer", &pw, &grant());
        assert!(cache.lookup("printer", &pw).is_some());
        assert!(cache.lookup("printer", &Secret::new("Right")).is_none());
        assert!(cache.lookup("Printer", &pw).is_none(), "exact name only");
        // ("ab", "c") and ("a", "bc") must not collide.
        cache.remember("ab", &Secret::new("c"), &grant());
        assert!(cache.lookup("a", &Secret::new("bc")).is_none());
        tokio::time::advance(Duration::from_secs(3601)).await;
        assert!(cache.lookup("printer", &pw).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_and_disabled_by_zero() {
        let cache = CredentialCache::new(Duration::from_secs(3600));
        for i in 0..MAX_ENTRIES + 50 {
            cache.remember(&format!("user{i}"), &Secret::new("pw"), &grant());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(
            cache.lookup("user0", &Secret::new("pw")).is_none(),
            "the oldest went first"
        );
        assert!(
            cache
                .lookup(&format!("user{}", MAX_ENTRIES + 49), &Secret::new("pw"))
                .is_some()
        );
        let off = CredentialCache::new(Duration::ZERO);
        off.remember("printer", &Secret::new("pw"), &grant());
        assert!(off.is_empty());
    }
}
