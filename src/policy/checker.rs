//! The password-check workers: a fixed, small set of threads, each with its argon2 work area
//! allocated once and reused, fed through a queue.
//!
//! Invariants: at most [`PasswordChecker::workers`] argon2 computations run at once, whatever
//! the AUTH load, and resident memory for them is at most that many work areas (19 MiB each for
//! the default hash parameters): they are never freed and reallocated, so glibc keeps no
//! per-thread arenas full of released blocks. Checks never run on the async runtime. A check
//! whose caller has gone away (connection closed) is skipped when its turn comes. When the
//! workers cannot be started (no threads), every check answers "no grant": a password is
//! never accepted without being checked. A worker with nothing to do for [`IDLE_RELEASE`]
//! gives its work area back to the operating system (see [`Argon2Scratch::release`]), so
//! resident memory returns to its idle level after a flood.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::password::Argon2Scratch;
use super::{Grant, Policy};
use crate::vocab::secret::Secret;

/// How long a worker keeps its work area without a check to run.
pub const IDLE_RELEASE: Duration = Duration::from_secs(20);

/// How many argon2 checks run at once: two, or one on a single-core machine.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The grant when the password is right.
    pub grant: Option<Arc<Grant>>,
    /// Whether the username is a configured `[[user]]` (for the log: an unknown name may be a
    /// password typed into the wrong prompt, and is never logged in full).
    pub known_user: bool,
}

struct Job {
    policy: Arc<Policy>,
    username: String,
    password: Secret,
    reply: oneshot::Sender<CheckResult>,
}

/// The checks waiting for a worker.
#[derive(Default)]
struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool of password-check workers; shared by every listener and kept across reloads.
pub struct PasswordChecker {
    queue: Arc<JobQueue>,
    workers: usize,
}

impl std::fmt::Debug for PasswordChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChecker")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl PasswordChecker {
    /// Start `workers` threads (at least one).
    pub fn start(workers: usize) -> PasswordChecker {
        let queue = Arc::new(JobQueue::default());
        let mut started = 0;
        for index in 0..workers.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{index}"))
                .spawn(move || work(&queue));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::error!(%error, "cannot start a password-check worker"),
            }
        }
        if started == 0 {
            queue.lock().closed = true;
        }
        PasswordChecker {
            queue,
            workers: started,
        }
    }

    /// Number of workers running.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Check `username` and `password` against `policy` on a worker.
    pub async fn check(
        &self,
        policy: Arc<Policy>,
        username: &str,
        password: Secret,
    ) -> CheckResult {
        let refused = |policy: &Policy| CheckResult {
            grant: None,
            known_user: policy.is_user(username),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            policy: Arc::clone(&policy),
            username: username.to_string(),
            password,
            reply,
        };
        let sent = {
            let mut state = self.queue.lock();
            if !state.closed {
                state.jobs.push_back(job);
            }
            !state.closed
        };
        self.queue.ready.notify_one();
        if !sent {
            tracing::error!("no password-check worker is running; AUTH is refused");
            return refused(&policy);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => refused(&policy),
        }
    }
}

impl Drop for PasswordChecker {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they finish their current check.
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// The next job, or `None` when the queue closed; gives the work area back while idle.
fn next_job(queue: &JobQueue, scratch: &mut Argon2Scratch) -> Option<Job> {
    let mut state = queue.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            return Some(job);
        }
        if state.closed {
            return None;
        }
        let (next, wait) = queue
            .ready
            .wait_timeout(state, IDLE_RELEASE)
            .unwrap_or_else(|p| p.into_inner());
        state = next;
        if wait.timed_out() && state.jobs.is_empty() {
            scratch.release();
        }
    }
}

fn work(queue: &JobQueue) {
    let mut scratch = Argon2Scratch::default();
    while let Some(job) = next_job(queue, &mut scratch) {
        if job.reply.is_closed() {
            continue;
        }
        let result = job
            .policy
            .check_password(&job.username, &job.password, &mut scratch);
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::{Access, Credential, SenderPattern, SenderRewrite, hash_password};
    use crate::vocab::address::Address;

    fn policy() -> Arc<Policy> {
        let mut policy = Policy::new();
        policy
            .add_user(
                "printer",
                Credential::Hash(hash_password(&Secret::new("right")).unwrap()),
                Access {
                    account: "m365".into(),
                    account_mailbox: Address::parse("relay@contoso.com").unwrap(),
                    allowed_senders: vec![SenderPattern::Any],
                    sender_rewrite: SenderRewrite::Never,
                    routes: vec![],
                },
            )
            .unwrap();
        Arc::new(policy)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_on_the_workers_many_at_once() {
        let checker = Arc::new(PasswordChecker::start(2));
        assert_eq!(checker.workers(), 2);
        let policy = policy();
        let mut checks = Vec::new();
        for i in 0..8 {
            let checker = Arc::clone(&checker);
            let policy = Arc::clone(&policy);
            checks.push(tokio::spawn(async move {
                let password = if i % 2 == 0 { "right" } else { "wrong" };
                (
                    i,
                    checker
                        .check(policy, "printer", Secret::new(password))
                        .await,
                )
            }));
        }
        for check in checks {
            let (i, result) = check.await.unwrap();
            assert_eq!(result.grant.is_some(), i % 2 == 0);
            assert!(result.known_user);
        }
        let unknown = checker
            .check(Arc::clone(&policy), "nobody", Secret::new("right"))
            .await;
        assert!(unknown.grant.is_none());
        assert!(!unknown.known_user);
    }
}
