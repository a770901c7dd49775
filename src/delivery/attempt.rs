//! What one delivery attempt did to each recipient ([`AttemptOutcome`]), and the pure rules
//! over it: the fate of recipients an early stop left untried, the end of re-sending after
//! too many uncertain outcomes, which failure decides the retry. `settle` then brings the
//! spool, the queue and the log in line with it.
//!
//! Invariant: every recipient of the attempt is in exactly one list once
//! `AttemptOutcome::resolve_untried` has run (`untried` is then empty whenever `stop` is
//! set).

use super::failure::ClassifiedFailure;
use crate::vocab::address::Address;
use crate::vocab::verdict::{Class, Stage};

/// What one attempt did to each recipient.
#[derive(Debug, Default)]
pub struct AttemptOutcome {
    pub delivered: Vec<Address>,
    /// Exchange's reply to the content, for the log.
    pub reply: Option<String>,
    /// Refused for good.
    pub failed: Vec<(Address, ClassifiedFailure)>,
    /// Refused for now.
    pub deferred: Vec<(Address, ClassifiedFailure)>,
    /// Never offered: `stop` ended the attempt first.
    pub untried: Vec<Address>,
    /// The failure that ended the attempt early.
    pub stop: Option<ClassifiedFailure>,
    /// When the attempt began (for the log's duration).
    pub started: Option<std::time::Instant>,
}

impl AttemptOutcome {
    /// Give the untried recipients the stopping failure's fate.
    pub(super) fn resolve_untried(&mut self) {
        if let Some(stop) = self.stop.clone() {
            for recipient in std::mem::take(&mut self.untried) {
                if stop.verdict.class == Class::Permanent {
                    self.failed.push((recipient, stop.clone()));
                } else {
                    self.deferred.push((recipient, stop.clone()));
                }
            }
        }
    }

    /// Too many attempts ended with the connection lost after the final dot: Exchange
    /// probably has the message already, so the recipients whose outcome is unknown stop
    /// here (kept in `failed/`, no bounce) instead of getting a copy per retry.
    pub(super) fn stop_resending(&mut self, uncertain_attempts: u32) {
        let held = ClassifiedFailure::outcome_unknown(uncertain_attempts);
        let (unknown, known): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(_, f)| f.verdict.duplicate_possible);
        self.deferred = known;
        self.failed
            .extend(unknown.into_iter().map(|(r, _)| (r, held.clone())));
        if self
            .stop
            .as_ref()
            .is_some_and(|f| f.verdict.duplicate_possible)
        {
            self.stop = None;
        }
    }

    /// True when the attempt ended at its first MAIL FROM because the connection was gone
    /// (closed, or `421`) and nothing was sent or refused: what a reused session looks like
    /// after the server closed it while idle. Worth one immediate try on a new session.
    pub fn lost_an_idle_session(&self) -> bool {
        self.delivered.is_empty()
            && self.failed.is_empty()
            && self.deferred.is_empty()
            && self.stop.as_ref().is_some_and(|stop| {
                stop.stage == Stage::MailFrom.to_string() && matches!(stop.code, None | Some(421))
            })
    }

    /// The failure that decides when to retry: the stopping one, else the worst deferral.
    pub(super) fn deciding_failure(&self) -> Option<&ClassifiedFailure> {
        self.stop
            .as_ref()
            .filter(|f| f.verdict.class != Class::Permanent)
            .or_else(|| {
                self.deferred
                    .iter()
                    .map(|(_, f)| f)
                    .max_by_key(|f| (f.verdict.class == Class::Configuration, f.not_before))
            })
    }
}
