//! Group commit for directory fsyncs: many entries committed (or removed) at the same moment
//! share one `fsync` of the `queue/` directory.
//!
//! Invariant: [`DirSync::sync`] returns only after an fsync of the directory that *started
//! after* the call was made has succeeded, so every rename or unlink done before the call is
//! durable. While one fsync runs, new callers wait for the next one, which then covers all of
//! them at once.
//!
//! Cancel safety: a caller may drop its `sync()` future at any await (a timeout, a closed
//! connection). The caller that runs the fsync holds a [`RunningGuard`] that clears `running`
//! and wakes the waiters when dropped, so a dropped runner never blocks later commits: the
//! next waiter starts a new fsync (the abandoned one may still finish on the blocking pool,
//! which is harmless; its result is simply not recorded).

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::{SpoolError, fsio, on_blocking_pool};

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out.
    requested: u64,
    /// Every ticket up to this one is covered by a successful fsync.
    completed: u64,
    running: bool,
}

/// A coalescing fsync of one directory.
#[derive(Debug)]
pub struct DirSync {
    dir: PathBuf,
    state: Mutex<State>,
    done: Notify,
}

impl DirSync {
    pub fn new(dir: PathBuf) -> DirSync {
        DirSync {
            dir,
            state: Mutex::new(State::default()),
            done: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make every name change in the directory made before this call durable.
    ///
    /// # Errors
    /// The fsync's I/O error (the next caller tries again).
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let ticket = {
            let mut state = self.lock();
            state.requested += 1;
            state.requested
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let target = {
                let mut state = self.lock();
                if state.completed >= ticket {
                    return Ok(());
                }
                if state.running {
                    None
                } else {
                    state.running = true;
                    Some(state.requested)
                }
            };
            let Some(target) = target else {
                notified.await;
                continue;
            };
            let guard = RunningGuard { sync: self };
            let dir = self.dir.clone();
            let result =
                on_blocking_pool("sync the spool directory", move || fsio::sync_dir(&dir)).await;
            if result.is_ok() {
                let mut state = self.lock();
                state.completed = state.completed.max(target);
            }
            drop(guard);
            result?;
        }
    }
}

/// Held by the caller running an fsync: clears `running` and wakes the waiters however that
/// caller ends, including by being dropped mid-await.
struct RunningGuard<'a> {
    sync: &'a DirSync,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.sync.lock().running = false;
        self.sync.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_all_return_after_a_covering_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::new(dir.path().to_path_buf()));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let sync = Arc::clone(&sync);
                tokio::spawn(async move { sync.sync().await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let state = sync.lock();
        assert_eq!(state.requested, 64);
        assert_eq!(state.completed, 64);
        assert!(!state.running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_dropped_while_running_does_not_block_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::new(dir.path().to_path_buf()));
        // Poll the first caller until it is the one running the fsync, then drop it mid-way.
        {
            let first = sync.sync();
            tokio::pin!(first);
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = first.as_mut().poll(&mut context);
            assert!(sync.lock().running, "the first caller started an fsync");
        }
        assert!(
            !sync.lock().running,
            "dropping the runner releases the flag"
        );
        tokio::time::timeout(std::time::Duration::from_secs(30), sync.sync())
            .await
            .expect("a later commit completes")
            .unwrap();
        assert!(sync.lock().completed >= 2);
    }

    #[tokio::test]
    async fn a_failing_sync_is_reported_and_retried_by_the_next_caller() {
        let sync = DirSync::new(PathBuf::from("/nonexistent/spool/queue"));
        assert!(sync.sync().await.is_err());
        assert!(sync.sync().await.is_err());
        assert_eq!(sync.lock().completed, 0);
    }
}
