//! Fencing a worker's writes to a target by its lease.
//!
//! The database refuses a lost lease's checkpoints and state updates by generation
//! ([`crate::db::Lease`]); a target (a directory, a bucket) cannot be asked. So a
//! worker checks, right before it publishes each document, that its lease is still
//! its own **by its own clock**: a lease renewed at instant `t` (measured before the
//! renewal was sent) lasts in the database until at least `t + term` of the wall
//! clock, and nobody can claim it before then. The worker publishes only before
//! `t + term - margin`, the margin covering clock skew between hosts.
//!
//! While a worker holds a claim, a keep-alive task renews the lease every third of
//! the term, so a live worker always has most of a term ahead of it, however long a
//! batch takes. A worker that is paused (SIGSTOP, a frozen VM, a stalled host) stops
//! renewing with everything else; when it wakes past its deadline the claim has
//! **lapsed**: it publishes nothing more and stops, whether or not another worker
//! took over meanwhile, and a later successful renewal does not revive it.
//!
//! What no check closes: a pause that falls between a target's last check and the
//! write it guards (one file's link or rename for local files; one request for the
//! cloud targets, which check once per batch) publishes late, possibly over what the
//! next worker wrote. Such a write ends after the deadline, so the check every batch
//! ends with sees it: the worker then puts the attempted documents back in the change
//! feed ([`crate::db::Db::request_reexport`]; a `delete` for annotations deleted
//! meanwhile) and stops, and the storage's holder writes their current version
//! again (or deletes the document). The late version is visible until then; a
//! process killed between its late write and that request leaves it in place.

use crate::db::{Db, Lease};
use crate::storage::MayPublish;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A worker lost its lease (another worker claimed it, or it lapsed by the
/// worker's own clock): it must stop working on the storage at once.
#[derive(Debug, thiserror::Error)]
#[error("the lease on storage {0} was lost; leaving the storage to whoever holds it now")]
pub struct LeaseLost(pub i64);

/// A held lease and until when this worker may publish under it.
#[derive(Debug)]
pub struct Claim {
    /// The lease, the fencing token of every database write.
    pub lease: Lease,
    term: Duration,
    deadline: Mutex<Instant>,
    lapsed: AtomicBool,
}

impl Claim {
    /// A lease claimed by a request sent at `sent`, lasting `term`.
    pub fn new(lease: Lease, term: Duration, sent: Instant) -> Claim {
        Claim { lease, term, deadline: Mutex::new(publish_deadline(sent, term)), lapsed: AtomicBool::new(false) }
    }

    /// The storage claimed.
    pub fn storage_id(&self) -> i64 {
        self.lease.storage_id
    }

    /// Records a successful renewal sent at `sent` (unless the claim has lapsed).
    pub fn renewed(&self, sent: Instant) {
        let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *deadline = (*deadline).max(publish_deadline(sent, self.term));
    }

    /// Marks the claim lost (a renewal was refused).
    pub fn lost(&self) {
        self.lapsed.store(true, Ordering::SeqCst);
    }

    /// Whether documents may be published now. Once the deadline has passed, never again.
    pub fn may_publish(&self) -> bool {
        if self.lapsed.load(Ordering::SeqCst) {
            return false;
        }
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= deadline {
            self.lost();
            return false;
        }
        true
    }

    /// [`LeaseLost`] unless documents may still be published: checked before a
    /// batch, and after it (documents held back are neither written nor failed).
    pub fn ensure_held(&self) -> anyhow::Result<()> {
        if self.may_publish() {
            Ok(())
        } else {
            Err(LeaseLost(self.storage_id()).into())
        }
    }

    /// The check a target makes before each document (see [`MayPublish`]).
    pub fn publish_check(self: &Arc<Self>) -> MayPublish {
        let claim = self.clone();
        Arc::new(move || claim.may_publish())
    }

    /// Renews the lease every third of its term until aborted or the lease is lost.
    pub fn keep_alive(self: &Arc<Self>, db: Db) -> JoinHandle<()> {
        let claim = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(claim.term / 3).await;
                let sent = Instant::now();
                match db.renew_lease(&claim.lease, claim.term).await {
                    Ok(true) => claim.renewed(sent),
                    Ok(false) => return claim.lost(),
                    // The database is unreachable: try again; the deadline decides.
                    Err(e) => {
                        tracing::warn!(storage = claim.storage_id(), error.message = %e, "renewing a lease failed")
                    }
                }
            }
        })
    }
}

/// A lease renewed at `sent` for `term` may be published under until `sent + term`
/// less a fifth of the term (at least 100 ms), for clock skew between hosts.
fn publish_deadline(sent: Instant, term: Duration) -> Instant {
    let margin = (term / 5).max(Duration::from_millis(100)).min(term / 2);
    sent + term - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease { storage_id: 7, owner: "w".into(), generation: 3 }
    }

    #[test]
    fn a_claim_may_publish_until_the_term_less_a_margin_and_renewals_extend_it() {
        let t0 = Instant::now();
        let claim = Claim::new(lease(), Duration::from_secs(10), t0);
        assert_eq!(*claim.deadline.lock().unwrap(), t0 + Duration::from_secs(8));
        claim.renewed(t0 + Duration::from_secs(5));
        assert_eq!(*claim.deadline.lock().unwrap(), t0 + Duration::from_secs(13));
        claim.renewed(t0);
        assert_eq!(*claim.deadline.lock().unwrap(), t0 + Duration::from_secs(13), "an older renewal never shortens it");
        assert!(claim.may_publish());
    }

    #[test]
    fn a_claim_past_its_deadline_has_lapsed_for_good() {
        let claim = Claim::new(lease(), Duration::from_millis(200), Instant::now());
        std::thread::sleep(Duration::from_millis(150));
        assert!(!claim.may_publish(), "past the deadline (term less 100 ms)");
        claim.renewed(Instant::now());
        assert!(!claim.may_publish(), "a renewal after the deadline passed does not revive it");
        assert!(claim.ensure_held().unwrap_err().is::<LeaseLost>());
    }

    #[test]
    fn a_lost_claim_may_not_publish() {
        let claim = Claim::new(lease(), Duration::from_secs(10), Instant::now());
        claim.lost();
        assert!(!claim.may_publish());
    }
}
