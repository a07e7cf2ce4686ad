//! The sync engine: background workers that export annotations to storages.
//!
//! Terms:
//! - **change feed**: `annotation_changes`, written with every annotation change
//!   (see [`crate::db::changes`]); each storage keeps a **cursor** into it.
//! - **job**: a requested sync, stored in `sync_jobs`. A **full** job walks every
//!   annotation of the project (keyset pages by id, checkpointed after each page),
//!   writing what is missing or changed since it was last written (`export_links`
//!   hold a fingerprint per annotation), and prunes files of deleted annotations when
//!   `can_delete_objects` is on. An **incremental** job applies the change feed from
//!   the cursor: O(changes), not O(project).
//! - **auto-export**: with no job pending, a worker applies new change-feed entries
//!   to every storage of the project as soon as they commit; this is how annotation
//!   saves and deletions reach the files without blocking the HTTP request. While a
//!   full job runs, its pass applies the feed past the cursor about once a second,
//!   between two pages (its own claim covers the storage).
//! - **lease**: a worker works on a storage only while holding its lease, renewed at
//!   every checkpoint; a crashed worker's lease expires and another worker (or the
//!   restarted process) resumes the job from its checkpoint. Each claim has a new
//!   **generation** that fences the worker's database writes, and a deadline by the
//!   worker's own clock that fences its writes to the target ([`fence`]).
//! - **new work** reaches idle workers of other processes through PostgreSQL
//!   `LISTEN/NOTIFY` ([`crate::db::WORK_CHANNEL`]), with polling as the fallback.
//!
//! [`SyncEngine::try_execute_task`] does one unit of work, so tests can drive the
//! engine step by step; [`SyncEngine::run_until_stopped`] loops it.

pub mod document;
pub mod fence;
pub mod state;

use crate::background::{join, ApiLoad};
use crate::config::SyncSettings;
use crate::db::{
    Annotation, Backend, ChangeOp, Db, DbError, ExportRow, ExportStorage, JobProgress, Link, StorageFields, SyncJob,
    Task,
};
use crate::secrets::{OpenError, SecretBox};
use crate::storage::spec::{self, TargetConfig, TargetContext};
use crate::storage::{keys, StorageError, StorageTarget};
use crate::time::now_micros;
use bytes::Bytes;
use document::Users;
use fence::{Claim, LeaseLost};
use futures::FutureExt;
use state::Outcome;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a full pass looks for saves made since it started, and applies them.
const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// Builds the target of a storage.
pub type TargetFactory = Arc<dyn Fn(&ExportStorage) -> Result<Arc<dyn StorageTarget>, StorageError> + Send + Sync>;

/// What one step of the engine did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// Some storage was worked on.
    Worked,
    /// Nothing to do.
    Idle,
}

/// A job that cannot go on: the target refuses every write for a reason retrying
/// cannot fix. The job fails with this cause as its traceback.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct JobFailed(String);

/// Most failure lines kept in a traceback.
const MAX_ERROR_LINES: usize = 20;

/// The sync engine of one process.
#[derive(Clone)]
pub struct SyncEngine {
    db: Db,
    settings: Arc<SyncSettings>,
    targets: TargetFactory,
    owner: String,
    wake: Arc<Notify>,
    /// Built targets by storage id, with the fingerprint of the configuration they
    /// were built from.
    target_cache: Arc<std::sync::Mutex<TargetCache>>,
    /// Whether this process's new-work listener is connected (PostgreSQL).
    listening: Arc<AtomicBool>,
}

/// While new work is announced by `NOTIFY` (a listener is connected), idle loops poll
/// this many times less often: the poll only catches what no notification tells
/// (lease expiry has its own timer), and every loop of every process polls.
const POLL_FACTOR_WHILE_LISTENING: u32 = 10;

/// Targets by storage id, each with the fingerprint of its configuration.
type TargetCache = HashMap<i64, (u64, Arc<dyn StorageTarget>)>;

/// A hash of everything a target is built from (type, path, settings, sealed secrets).
fn target_fingerprint(storage: &ExportStorage) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    storage.storage_type.hash(&mut h);
    storage.fields.path.hash(&mut h);
    storage.fields.config.to_string().hash(&mut h);
    storage.fields.secrets.hash(&mut h);
    h.finish()
}

/// The wait after the `attempts`-th consecutive failed automatic export: from about
/// half a second, doubling, at most a minute, with jitter so workers spread out.
fn auto_export_backoff(attempts: u32) -> Duration {
    let ceiling = Duration::from_millis(500).saturating_mul(1 << attempts.saturating_sub(1).min(10));
    let ceiling = ceiling.min(Duration::from_secs(60));
    let half = ceiling / 2;
    half + Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 0..=half.as_millis() as u64))
}

/// The target of a storage as configured, its write-only fields opened with `secrets`.
pub fn default_targets(ctx: TargetContext, secrets: SecretBox) -> TargetFactory {
    Arc::new(move |storage: &ExportStorage| -> Result<Arc<dyn StorageTarget>, StorageError> {
        let config = target_config(&storage.fields, &secrets).map_err(|e| StorageError::Precondition(e.to_string()))?;
        spec::build(&storage.storage_type, &config, &ctx)
    })
}

/// How a storage's documents are serialised (indented for local files, compact for
/// the cloud types, as Label Studio writes them).
fn document_style(storage: &ExportStorage) -> document::DocumentStyle {
    spec::type_spec(&storage.storage_type).map_or(document::DocumentStyle::Indented, |t| t.document)
}

/// A storage's configuration as its target sees it, secrets opened.
pub fn target_config(f: &StorageFields, secrets: &SecretBox) -> Result<TargetConfig, OpenError> {
    Ok(TargetConfig {
        path: f.path.clone(),
        values: f.config.as_object().cloned().unwrap_or_default(),
        secrets: secrets.open_map(f.secrets.as_deref())?,
    })
}

fn version<J>(a: &Annotation<J>, t: &Task<J>) -> String {
    // Written once per exported annotation: built without `format!`.
    let mut v = String::with_capacity(40);
    v.push_str(itoa::Buffer::new().format(a.updated_at));
    v.push(':');
    v.push_str(itoa::Buffer::new().format(t.updated_at));
    v
}

/// A page of a full pass whose documents are being written.
struct PageInFlight {
    work: PageWork,
    /// Annotations in the page.
    count: i64,
    /// The page's last annotation id (its checkpoint).
    last: i64,
}

enum PageWork {
    /// Task mode writes its page in place.
    Done(Tally),
    /// Annotation mode: the writers' task, giving what was written.
    Writing(JoinHandle<anyhow::Result<(Tally, Vec<Link>)>>),
}

/// Counters of some export work.
#[derive(Debug, Default)]
struct Tally {
    written: i64,
    deleted: i64,
    failed: i64,
    errors: Vec<String>,
    /// The first failure's cause, without its key.
    first_failure: Option<String>,
}

impl Tally {
    fn fail(&mut self, key: &str, e: &StorageError) {
        if self.first_failure.is_none() {
            self.first_failure = Some(e.to_string());
        }
        self.failed += 1;
        if self.errors.len() < MAX_ERROR_LINES {
            self.errors.push(format!("{key}: {e}"));
        }
    }

    /// Why the job cannot go on: a batch in which every write failed, after the
    /// target's own retries (bucket gone, access denied, endpoint down). Trying the
    /// rest of the project would only fail the same way, one document at a time.
    fn refused_everything(&self) -> Option<&str> {
        (self.failed > 0 && self.written == 0 && self.deleted == 0).then_some(()).and(self.first_failure.as_deref())
    }

    /// Counts this work in the metrics of `storage_type`.
    fn observe(&self, storage_type: &str) {
        crate::telemetry::metrics::documents(storage_type, self.written, self.deleted, self.failed);
    }

    fn add_to(&self, p: &mut JobProgress) {
        p.written += self.written;
        p.deleted += self.deleted;
        p.failed += self.failed;
        if !self.errors.is_empty() {
            let mut lines: Vec<String> =
                p.errors.as_deref().map(|e| e.lines().map(str::to_owned).collect()).unwrap_or_default();
            lines.extend(self.errors.iter().cloned());
            lines.truncate(MAX_ERROR_LINES);
            p.errors = Some(lines.join("\n"));
        }
    }
}

fn traceback(p: &JobProgress) -> Option<String> {
    (p.failed > 0).then(|| {
        format!(
            "{} document(s) could not be written. First failures (key: error):\n{}",
            p.failed,
            p.errors.as_deref().unwrap_or_default()
        )
    })
}

impl SyncEngine {
    /// An engine using `targets` to reach storages; `wake` is notified when work arrives.
    pub fn new(db: Db, settings: SyncSettings, targets: TargetFactory, wake: Arc<Notify>) -> SyncEngine {
        let owner = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        SyncEngine {
            db,
            settings: Arc::new(settings),
            targets,
            owner,
            wake,
            target_cache: Default::default(),
            listening: Default::default(),
        }
    }

    /// This worker's lease-owner name.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether new work reaches this engine by `NOTIFY` now (PostgreSQL, listener
    /// connected); idle loops then poll [`POLL_FACTOR_WHILE_LISTENING`] times less often.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Works until `stop` is cancelled; a job interrupted by the stop stays in the
    /// database and resumes from its checkpoint on the next start.
    pub async fn run_until_stopped(self, stop: CancellationToken) {
        if self.db.backend() == Backend::Sqlite {
            // The embedded database belongs to this process: leases found now are stale.
            if let Ok(n @ 1..) = self.db.release_all_leases().await {
                tracing::info!(storages = n, "resuming interrupted sync work");
            }
        }
        tracing::info!(worker = %self.owner, "sync engine started");
        // Pruning runs beside the worker, so a large delete never delays an export.
        let pruner = tokio::spawn(prune_until_stopped(self.db.clone(), stop.clone()));
        let listener = self.settings.listen.then(|| {
            let listener = self.db.clone();
            tokio::spawn(listener.listen_for_work_until_stopped(
                self.wake.clone(),
                self.listening.clone(),
                stop.clone(),
            ))
        });
        // Several loops, each claiming its own storage under its own lease name, so a
        // target that hangs or retries for a long time (an unreachable cloud endpoint)
        // holds up one loop, never the exports of every other storage.
        let loops: Vec<JoinHandle<()>> = (0..self.settings.parallel_storages)
            .map(|i| {
                let mut worker = self.clone();
                worker.owner = format!("{}-{i}", self.owner);
                tokio::spawn(worker.step_until_stopped(stop.clone()))
            })
            .collect();
        for worker in loops {
            if let Err(e) = worker.await {
                tracing::error!(error.message = %e, "a sync loop ended abnormally");
            }
        }
        let _ = pruner.await;
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        tracing::info!(worker = %self.owner, "sync engine stopped");
    }

    /// Claims and works on one storage after another until `stop` is cancelled.
    async fn step_until_stopped(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.try_execute_task_until(&stop).await {
                Ok(ExecutionOutcome::Worked) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(ExecutionOutcome::Idle) => {
                    let wait = self.idle_wait().await;
                    tokio::select! {
                        _ = self.wake.notified() => {},
                        _ = tokio::time::sleep(wait) => {},
                        _ = stop.cancelled() => {},
                    }
                }
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, error.message = %e, "sync engine step failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {},
                        _ = stop.cancelled() => {},
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// How long an idle worker sleeps unless woken: the poll interval, or less when
    /// a lease expires sooner (a worker that died leaves work nobody announces).
    async fn idle_wait(&self) -> Duration {
        let poll = match self.listening.load(Ordering::SeqCst) {
            true => self.settings.poll_interval * POLL_FACTOR_WHILE_LISTENING,
            false => self.settings.poll_interval,
        };
        match self.db.next_lease_expiry(now_micros()).await {
            Ok(Some(at)) => {
                let until = Duration::from_micros((at - now_micros()).max(0) as u64) + Duration::from_millis(5);
                until.min(poll)
            }
            _ => poll,
        }
    }

    /// One unit of work: claim a storage that needs it, run its job or auto-export
    /// its pending changes, release it.
    pub async fn try_execute_task(&self) -> anyhow::Result<ExecutionOutcome> {
        self.try_execute_task_until(&CancellationToken::new()).await
    }

    async fn try_execute_task_until(&self, stop: &CancellationToken) -> anyhow::Result<ExecutionOutcome> {
        let sent = Instant::now();
        let Some(lease) = self.db.claim_storage(&self.owner, self.settings.lease).await? else {
            return Ok(ExecutionOutcome::Idle);
        };
        let claim = Arc::new(Claim::new(lease, self.settings.lease, sent));
        let storage_id = claim.storage_id();
        let keep_alive = claim.keep_alive(self.db.clone());
        // A panic is a bug that would come back at every retry: it ends this claim's
        // work like a failure that cannot go on, and this loop stays alive.
        let result = match AssertUnwindSafe(self.work_on(&claim, stop)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => self.after_panic(&claim, panic_message(panic.as_ref())).await,
        };
        keep_alive.abort();
        let _ = keep_alive.await;
        match &result {
            // Keep the lease for a backoff that grows with each consecutive failure, so a
            // broken target is retried soon at first, then less often, never in a hot loop;
            // other storages are worked on meanwhile.
            Ok(Some(reason)) => {
                let wait = self.show_auto_export_failure(storage_id, reason).await?;
                self.db.renew_lease(&claim.lease, wait).await?;
                tracing::warn!(storage = storage_id, reason = %reason, retry_in_ms = wait.as_millis() as u64, "auto-export failed");
            }
            // Another worker holds it now: nothing of ours to release.
            Err(e) if e.is::<LeaseLost>() => {
                tracing::warn!(storage = storage_id, generation = claim.lease.generation, error.message = %e, "stopped");
                return Ok(ExecutionOutcome::Worked);
            }
            _ => self.db.release_lease(&claim.lease).await?,
        }
        result?;
        Ok(ExecutionOutcome::Worked)
    }

    /// After a panic in the work on a claimed storage: its active job fails with the
    /// panic's message, from its last checkpoint (as any job that cannot go on; a new
    /// sync starts over). Without a job, the automatic export counts as failed and is
    /// tried again after its backoff.
    async fn after_panic(&self, claim: &Arc<Claim>, message: &str) -> anyhow::Result<Option<String>> {
        let storage_id = claim.storage_id();
        tracing::error!(storage = storage_id, panic.message = %message, "a sync step panicked");
        let cause = format!("internal error in labelport: {message}");
        let Some(job) = self.db.active_job(storage_id).await? else {
            return Ok(Some(cause));
        };
        let storage = match self.db.storage_by_id(storage_id).await {
            Ok(s) => s,
            Err(DbError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let progress = JobProgress::of(&job);
        self.fail_job(claim, &storage, &job, &progress, &format!("Export stopped by an {cause}")).await?;
        Ok(None)
    }

    /// Shows a failed automatic export on the storage (`failed`, the cause as
    /// traceback) unless a sync job owns its state, and returns how long to wait
    /// before the next attempt.
    async fn show_auto_export_failure(&self, storage_id: i64, cause: &str) -> anyhow::Result<Duration> {
        let storage = match self.db.storage_by_id(storage_id).await {
            Ok(s) => s,
            Err(DbError::NotFound) => return Ok(Duration::ZERO),
            Err(e) => return Err(e.into()),
        };
        crate::telemetry::metrics::auto_export_failed(&storage.storage_type);
        let attempts = state::auto_export_attempts(&storage) + 1;
        let failed = state::auto_export_failed(&storage, now_micros(), cause);
        self.db.set_sync_state_if_idle(storage_id, &failed).await?;
        Ok(auto_export_backoff(attempts))
    }

    /// The storage's target, reused while its configuration is unchanged, so
    /// auto-export passes keep their connections and credentials.
    fn target_for(&self, storage: &ExportStorage) -> Result<Arc<dyn StorageTarget>, StorageError> {
        let fingerprint = target_fingerprint(storage);
        let mut cache = self.target_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, target)) = cache.get(&storage.id) {
            if *known == fingerprint {
                return Ok(target.clone());
            }
        }
        let target = (self.targets)(storage)?;
        cache.insert(storage.id, (fingerprint, target.clone()));
        Ok(target)
    }

    /// Returns `Some(reason)` when the storage should be left alone for a while.
    async fn work_on(&self, claim: &Arc<Claim>, stop: &CancellationToken) -> anyhow::Result<Option<String>> {
        let storage_id = claim.storage_id();
        if let Some(job) = self.db.active_job(storage_id).await? {
            self.run_job(claim, job, stop).await?;
            return Ok(None);
        }
        match self.db.storage_by_id(storage_id).await {
            Ok(storage) => self.auto_export(claim, &storage).await,
            Err(DbError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn auto_export(&self, claim: &Arc<Claim>, storage: &ExportStorage) -> anyhow::Result<Option<String>> {
        let target = match self.target_for(storage) {
            Ok(t) => t,
            Err(e) => return Ok(Some(e.to_string())),
        };
        let token = target.change_token().await.ok().flatten();
        if storage.baseline_done && token.is_some() && token != storage.target_token {
            // Changed behind our back: the next sync must walk everything again.
            self.db.reset_baseline(storage.id).await?;
        }
        if let Some(failed) = self.apply_feed(claim, storage, target.as_ref(), storage.cursor_seq, None).await? {
            return Ok(Some(failed));
        }
        if let Some(recovered) = state::auto_export_recovered(storage) {
            self.db.set_sync_state_if_idle(storage.id, &recovered).await?;
            tracing::info!(storage = storage.id, "auto-export works again");
        }
        Ok(None)
    }

    /// Applies the change feed after `cursor` to its end (or to `until`), moving the
    /// storage's cursor after each batch. `Some(reason)` when a batch failed: the
    /// cursor stays before it.
    async fn apply_feed(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        mut cursor: i64,
        until: Option<i64>,
    ) -> anyhow::Result<Option<String>> {
        let mut users = Users::new();
        let until = until.unwrap_or(i64::MAX);
        while cursor < until {
            let mut changes = self.db.changes_since(storage.project_id, cursor, self.settings.batch_size).await?;
            changes.retain(|c| c.seq <= until);
            let Some(last) = changes.last().map(|c| c.seq) else { break };
            let tally = self.apply_changes(claim, storage, target, &changes, &mut users).await?;
            tally.observe(&storage.storage_type);
            if tally.failed > 0 {
                return Ok(Some(tally.errors.join("; ")));
            }
            crate::telemetry::metrics::auto_exported(&storage.storage_type, &changes);
            let token = target.change_token().await.ok().flatten();
            if !self.db.advance_cursor(&claim.lease, last, token.as_deref()).await? {
                break;
            }
            cursor = last;
        }
        Ok(None)
    }

    async fn record_token(&self, claim: &Arc<Claim>, target: &dyn StorageTarget) -> anyhow::Result<()> {
        let token = target.change_token().await.ok().flatten();
        lease_held(claim, self.db.set_target_token(&claim.lease, token.as_deref()).await?)
    }

    /// Applies change-feed entries: rewrites documents of changed annotations,
    /// deletes documents of deleted ones (when the storage may delete).
    async fn apply_changes(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        changes: &[crate::db::Change],
        users: &mut Users,
    ) -> anyhow::Result<Tally> {
        let ids: BTreeSet<i64> = changes.iter().map(|c| c.annotation_id).collect();
        let ids: Vec<i64> = ids.into_iter().collect();
        let rows = self.db.export_rows(&ids).await?;
        let existing: BTreeSet<i64> = rows.iter().map(|(a, _)| a.id).collect();
        let gone: Vec<i64> = ids.iter().copied().filter(|id| !existing.contains(id)).collect();
        let mut tally = Tally::default();
        if storage.fields.export_mode == "task" {
            let tasks: BTreeSet<i64> = changes.iter().map(|c| c.task_id).collect();
            self.export_tasks(claim, storage, target, tasks, users, &mut tally).await?;
            lease_held(claim, self.db.delete_links(&claim.lease, storage.links_epoch, &gone).await?)?;
            return Ok(tally);
        }
        let written = self.write_annotations(claim, storage, target, rows, users, &mut tally).await?;
        lease_held(claim, self.db.upsert_links(&claim.lease, storage.links_epoch, &written).await?)?;
        let deletes = changes.iter().any(|c| c.op == ChangeOp::Delete);
        if deletes && !gone.is_empty() && storage.fields.can_delete_objects == Some(true) {
            let mut links = self.db.links(storage.link_set(), &gone).await?;
            // A deleted annotation without a link may still have a document: one written
            // late, after its deletion was exported, by a worker whose lease had ended
            // (it then puts a delete in the feed, see `lease_lost_after_writing`). Its key
            // is known, and deleting what is not there succeeds. Such a delete is sent
            // in case, and counted only if it fails: most often there never was a
            // document (the annotation was deleted before it was exported).
            let linked: BTreeSet<i64> = links.iter().map(|l| l.annotation_id).collect();
            let unlinked: BTreeSet<i64> = gone.iter().copied().filter(|id| !linked.contains(id)).collect();
            links.extend(unlinked.iter().map(|&id| Link {
                annotation_id: id,
                key: keys::annotation_key(id),
                version: String::new(),
                size: 0,
            }));
            self.delete_linked(claim, storage, target, links, &unlinked, &mut tally).await?;
        }
        Ok(tally)
    }

    /// Deletes the documents of `links`; those of `unrecorded` annotations (no link
    /// was recorded, so no document is known to exist) are not counted as deleted.
    async fn delete_linked(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        links: Vec<Link>,
        unrecorded: &BTreeSet<i64>,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let mut removed = Vec::new();
        claim.ensure_held()?;
        let results = target.delete_many(links.iter().map(|l| l.key.clone()).collect()).await;
        // A late delete needs no repair: these annotations are gone, and so should
        // their documents be.
        self.ensure_held_after(claim, &[], &[]).await?;
        for (link, result) in links.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    if !unrecorded.contains(&link.annotation_id) {
                        tally.deleted += 1;
                    }
                    removed.push(link.annotation_id);
                }
                Err(e) => tally.fail(&link.key, &e),
            }
        }
        lease_held(claim, self.db.delete_links(&claim.lease, storage.links_epoch, &removed).await?)
    }

    /// Deletes task `task_id`'s document `key` while the lease is held (checked
    /// before and after the request, as every publish is), counting the outcome.
    async fn delete_fenced(
        &self,
        claim: &Arc<Claim>,
        target: &dyn StorageTarget,
        task_id: i64,
        key: &str,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        claim.ensure_held()?;
        let result = target.delete(key).await;
        self.ensure_held_after(claim, &[], &[task_id]).await?;
        match result {
            Ok(()) => tally.deleted += 1,
            Err(e) => tally.fail(key, &e),
        }
        Ok(())
    }

    /// Checked after writes or deletes made under `claim`: [`LeaseLost`] when the
    /// claim no longer holds, after asking for a repair of what was attempted (the
    /// documents of `annotations`, and of the annotations of `tasks`).
    async fn ensure_held_after(
        &self,
        claim: &Arc<Claim>,
        annotations: &[(i64, i64)],
        tasks: &[i64],
    ) -> anyhow::Result<()> {
        if claim.may_publish() {
            return Ok(());
        }
        Err(self.lease_lost_after_writing(claim, annotations, tasks).await)
    }

    /// The claim ended while documents were being written or deleted. A write checks
    /// the claim right before it publishes, but a worker paused between that check and
    /// the write it guards (see [`fence`]) publishes late, possibly over what the
    /// worker that took over wrote since. Every write done in time was done before
    /// the lease could be claimed again, so one finished after the end is the only
    /// kind that can be late, and it is seen here: the attempted documents are put in
    /// the change feed again, and whoever holds the storage now writes their current
    /// version over whatever came late. Returns the [`LeaseLost`] to stop with.
    async fn lease_lost_after_writing(
        &self,
        claim: &Arc<Claim>,
        annotations: &[(i64, i64)],
        tasks: &[i64],
    ) -> anyhow::Error {
        let storage = claim.storage_id();
        if !annotations.is_empty() || !tasks.is_empty() {
            match self.db.request_reexport(storage, annotations, tasks).await {
                Ok(entries) => tracing::info!(
                    storage,
                    entries,
                    "the lease ended while writing; asked for the attempted documents to be exported again"
                ),
                Err(e) => tracing::warn!(
                    storage,
                    error.message = %e,
                    "the lease ended while writing, and asking for a re-export of the attempted documents failed"
                ),
            }
        }
        LeaseLost(storage).into()
    }

    async fn load_users(&self, users: &mut Users, ids: impl Iterator<Item = i64>) -> anyhow::Result<()> {
        let missing: Vec<i64> = ids.filter(|id| !users.contains_key(id)).collect();
        for user in self.db.users_by_ids(&missing).await? {
            users.insert(user.id, user);
        }
        Ok(())
    }

    /// Renders and writes annotation documents in parallel batches; returns the links
    /// of what was written, for the caller to record.
    async fn write_annotations(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        rows: Vec<ExportRow>,
        users: &mut Users,
        tally: &mut Tally,
    ) -> anyhow::Result<Vec<Link>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.load_users(users, rows.iter().filter_map(|(a, _)| a.completed_by)).await?;
        let users = Arc::new(users.clone());
        let style = document_style(storage);
        let chunk = rows.len().div_ceil(self.settings.writers).max(1);
        let mut batches = Vec::new();
        let mut rows = rows;
        while !rows.is_empty() {
            let rest = rows.split_off(chunk.min(rows.len()));
            batches.push(std::mem::replace(&mut rows, rest));
        }
        let delay = self.settings.write_delay;
        claim.ensure_held()?;
        let results = futures::future::join_all(batches.into_iter().map(|batch| {
            let users = users.clone();
            let may_publish = claim.publish_check();
            async move {
                let rendered = join(crate::background::spawn_blocking(move || {
                    batch
                        .iter()
                        .map(|(a, t)| {
                            let key = keys::annotation_key(a.id);
                            let body = Bytes::from(document::annotation_document_bytes(a, t, &users, style));
                            let link = Link {
                                annotation_id: a.id,
                                key: key.clone(),
                                version: version(a, t),
                                size: body.len() as i64,
                            };
                            // The task travels along: a lost lease asks for a repair by both.
                            ((link, a.task_id), (key, body))
                        })
                        .collect::<Vec<_>>()
                }))
                .await?;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let (links, items): (Vec<_>, Vec<_>) = rendered.into_iter().unzip();
                let results = target.put_many_guarded(items, may_publish).await;
                anyhow::Ok(links.into_iter().zip(results).collect::<Vec<_>>())
            }
        }))
        .await;
        let results: Vec<((Link, i64), Result<(), StorageError>)> =
            results.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().flatten().collect();
        // Documents held back (the lease lapsed) are neither failures nor written.
        if !claim.may_publish() {
            let attempted: Vec<(i64, i64)> = results
                .iter()
                .filter(|(_, r)| !is_held_back(r))
                .map(|((link, task), _)| (link.annotation_id, *task))
                .collect();
            return Err(self.lease_lost_after_writing(claim, &attempted, &[]).await);
        }
        let mut written = Vec::new();
        for ((link, _), result) in results {
            match result {
                Ok(()) => {
                    tally.written += 1;
                    written.push(link);
                }
                Err(e) => tally.fail(&link.key, &e),
            }
        }
        Ok(written)
    }

    /// Task mode: writes each task's document (all its annotations), or deletes it
    /// when the task has no annotations left and the storage may delete.
    async fn export_tasks(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        task_ids: BTreeSet<i64>,
        users: &mut Users,
        tally: &mut Tally,
    ) -> anyhow::Result<()> {
        let mut links = Vec::new();
        for task_id in task_ids {
            let key = keys::task_key(task_id, self.settings.task_json_extension);
            let task = self.db.task_by_id(task_id).await?;
            let annotations = match &task {
                Some(t) => self.db.task_annotations(t.id).await?,
                None => Vec::new(),
            };
            match task {
                Some(task) if !annotations.is_empty() => {
                    self.load_users(users, annotations.iter().filter_map(|a| a.completed_by)).await?;
                    let doc = document::task_document(&task, &annotations, users);
                    let body = Bytes::from(document::to_bytes_styled(&doc, document_style(storage)));
                    if !self.settings.write_delay.is_zero() {
                        tokio::time::sleep(self.settings.write_delay).await;
                    }
                    let size = body.len() as i64;
                    let result = target.put_many_guarded(vec![(key.clone(), body)], claim.publish_check()).await.pop();
                    let result = result.expect("one result per document");
                    let one_task = [task_id];
                    let attempted: &[i64] = if is_held_back(&result) { &[] } else { &one_task };
                    self.ensure_held_after(claim, &[], attempted).await?;
                    match result {
                        Ok(()) => {
                            tally.written += 1;
                            links.extend(annotations.iter().map(|a| Link {
                                annotation_id: a.id,
                                key: key.clone(),
                                version: version(a, &task),
                                size,
                            }));
                        }
                        Err(e) => tally.fail(&key, &e),
                    }
                }
                _ if storage.fields.can_delete_objects == Some(true) => {
                    self.delete_fenced(claim, target, task_id, &key, tally).await?
                }
                _ => {}
            }
        }
        lease_held(claim, self.db.upsert_links(&claim.lease, storage.links_epoch, &links).await?)
    }

    async fn run_job(&self, claim: &Arc<Claim>, mut job: SyncJob, stop: &CancellationToken) -> anyhow::Result<()> {
        let storage_id = claim.storage_id();
        // Read after the job, so the row reflects the state its queueing wrote.
        let mut storage = match self.db.storage_by_id(storage_id).await {
            Ok(s) => s,
            Err(DbError::NotFound) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if job.state == "queued" {
            let mut mode = job.mode.clone();
            if let (Ok(target), "incremental") = (&self.target_for(&storage), mode.as_str()) {
                // Someone else changed the location since our last write: make it match again.
                let token = target.change_token().await.ok().flatten();
                if token.is_some() && token != storage.target_token {
                    tracing::info!(storage = storage.id, "the target changed behind our back; running a full pass");
                    mode = "full".into();
                }
            }
            let start_seq = self.db.latest_change_seq().await?;
            let total = self.db.count_annotations(storage.project_id).await?;
            let started = state::started(&storage, now_micros());
            if !self.db.start_job(&job, &claim.lease, &mode, start_seq, total, &started).await? {
                return Ok(());
            }
            job = self.db.job(job.id).await?;
            storage = self.db.storage_by_id(storage.id).await?;
        } else {
            tracing::info!(storage = storage.id, job = %job.job_key, checkpoint = job.checkpoint_id, "resuming sync job");
        }
        let mut progress = JobProgress::of(&job);
        // The target of the row the pass works with: its links are of that location's
        // generation, and only that generation's baseline is done at the end.
        let target = match self.target_for(&storage) {
            Ok(t) => t,
            Err(e) => return self.fail_job(claim, &storage, &job, &progress, &e.to_string()).await,
        };
        if let Err(e) = target.validate().await {
            return self.fail_job(claim, &storage, &job, &progress, &e.to_string()).await;
        }
        let finished = if job.mode == "full" {
            // Bulk work: its blocking steps yield the CPU to the API's (see `background`).
            crate::background::bulk(self.full_pass(claim, &storage, &job, &target, &mut progress, stop)).await
        } else {
            self.incremental_pass(claim, &storage, &job, target.as_ref(), &mut progress, stop).await
        };
        let finished = match finished {
            Ok(f) => f,
            Err(e) => match e.downcast::<JobFailed>() {
                Ok(JobFailed(cause)) => {
                    // The documents that did fail (count and first keys) follow the cause.
                    let message = match traceback(&progress) {
                        Some(failures) => format!("Export to {target} stopped: {cause}\n{failures}"),
                        None => format!("Export to {target} stopped: {cause}"),
                    };
                    return self.fail_job(claim, &storage, &job, &progress, &message).await;
                }
                Err(e) => return Err(e),
            },
        };
        let Some(cursor) = finished else {
            return Ok(());
        };
        let total = if job.mode == "full" { job.total } else { self.db.count_annotations(storage.project_id).await? };
        let worked_on = storage.links_epoch;
        let storage = self.db.storage_by_id(storage.id).await?;
        let outcome = Outcome {
            processed: if job.mode == "full" { progress.processed } else { total },
            total,
            mode: job.mode.clone(),
            written: progress.written,
            deleted: progress.deleted,
            failed: progress.failed,
            errors: traceback(&progress),
        };
        let done = state::completed(&storage, now_micros(), &outcome);
        let job_state = if progress.failed > 0 { "failed" } else { "completed" };
        let baseline = (job.mode == "full" && progress.failed == 0).then_some(worked_on);
        if progress.failed > 0 {
            // What failed is behind the cursor now: the next sync must walk everything.
            self.db.reset_baseline(storage.id).await?;
        }
        self.record_token(claim, target.as_ref()).await?;
        let finished =
            self.db.finish_job(&job, &claim.lease, &progress, job_state, &done, Some(cursor), baseline).await?;
        lease_held(claim, finished)?;
        crate::telemetry::metrics::job_finished(
            &storage.storage_type,
            &job.mode,
            &done.status,
            done.meta["duration"].as_f64(),
        );
        tracing::info!(storage = storage.id, job = %job.job_key, mode = %job.mode, processed = progress.processed,
            written = progress.written, deleted = progress.deleted, failed = progress.failed, "sync job finished");
        Ok(())
    }

    async fn fail_job(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        job: &SyncJob,
        progress: &JobProgress,
        message: &str,
    ) -> anyhow::Result<()> {
        let storage = self.db.storage_by_id(storage.id).await?;
        let failed = state::failed(&storage, now_micros(), message);
        // Changes may have been passed over: the next sync walks everything.
        self.db.reset_baseline(storage.id).await?;
        lease_held(claim, self.db.finish_job(job, &claim.lease, progress, "failed", &failed, None, None).await?)?;
        crate::telemetry::metrics::job_finished(
            &storage.storage_type,
            &job.mode,
            &failed.status,
            failed.meta["duration"].as_f64(),
        );
        tracing::warn!(storage = storage.id, job = %job.job_key, error.message = %message, "sync job failed");
        Ok(())
    }

    /// Saves progress; `false` means stop (lease lost or storage deleted).
    async fn checkpoint(
        &self,
        claim: &Arc<Claim>,
        job: &SyncJob,
        progress: &JobProgress,
        processed_for_ping: i64,
    ) -> anyhow::Result<bool> {
        let storage = match self.db.storage_by_id(claim.storage_id()).await {
            Ok(s) => s,
            Err(DbError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let ping = state::ping(&storage, now_micros(), processed_for_ping, job.total);
        let sent = Instant::now();
        let saved = self.db.checkpoint_job(job, &claim.lease, self.settings.lease, progress, &ping).await?;
        if saved {
            claim.renewed(sent);
        }
        Ok(saved)
    }

    /// Walks every annotation from the checkpoint on. Returns the cursor to set, or
    /// `None` if the job was interrupted (stop, lost lease, storage deleted).
    async fn full_pass(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        job: &SyncJob,
        target: &Arc<dyn StorageTarget>,
        progress: &mut JobProgress,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<i64>> {
        if progress.checkpoint_id == 0 {
            if let Ok(n @ 1..) = target.remove_temporary_files().await {
                tracing::info!(storage = storage.id, files = n, "removed temporary files of interrupted writes");
            }
        }
        // Targets that list in bulk tell what is in place with one request per 1,000
        // keys, instead of one per document. Only documents we recorded writing can be
        // skipped: with none (a new storage), there is nothing to look up, however many
        // objects others keep at the location.
        let inventory = if !self.db.has_links(storage.link_set()).await? {
            Some(Arc::new(HashMap::new()))
        } else {
            match target.list_sizes().await {
                Ok(found) => found.map(Arc::new),
                Err(e) => {
                    tracing::warn!(storage = storage.id, error.message = %e, "listing the target failed; checking documents one by one");
                    None
                }
            }
        };
        // A pipeline with one page in flight at each stage, so memory stays flat: the
        // page after next is read, the next page is checked against the links and handed
        // to the writers, while this page's files are still being written and the page
        // before's links and checkpoint are saved. The writers never wait at a page
        // boundary. A page's checkpoint is saved only once its files are all written.
        let mut users = Users::new();
        let mut api = ApiLoad::new();
        let mut next_page = Some(self.read_page(storage.project_id, progress.checkpoint_id, &mut api));
        let mut writing: Option<PageInFlight> = None;
        let mut saving: Option<JoinHandle<anyhow::Result<bool>>> = None;
        let mut feed_checked = Instant::now();
        let stopped = loop {
            if stop.is_cancelled() {
                break true;
            }
            let page = join(next_page.take().expect("a page is always requested")).await??;
            let Some(last) = page.last().map(|(a, _)| a.id) else {
                break false;
            };
            next_page = Some(self.read_page(storage.project_id, last, &mut api));
            let count = page.len() as i64;
            let work = if storage.fields.export_mode == "task" {
                let tasks: BTreeSet<i64> = page.iter().map(|(a, _)| a.task_id).collect();
                let mut tally = Tally::default();
                self.export_tasks(claim, storage, target.as_ref(), tasks, &mut users, &mut tally).await?;
                PageWork::Done(tally)
            } else {
                let (todo, recorded) =
                    self.unchanged_filter(storage, target.as_ref(), inventory.as_deref(), page).await?;
                self.load_users(&mut users, todo.iter().filter_map(|(a, _)| a.completed_by)).await?;
                let (engine, claim, storage, target) = (self.clone(), claim.clone(), storage.clone(), target.clone());
                let mut page_users = users.clone();
                PageWork::Writing(tokio::spawn(crate::background::bulk(async move {
                    let mut tally = Tally::default();
                    let mut written = engine
                        .write_annotations(&claim, &storage, target.as_ref(), todo, &mut page_users, &mut tally)
                        .await?;
                    // A document written again as it was (its file had gone) needs no new link.
                    written.retain(|link| recorded.get(&link.annotation_id) != Some(link));
                    Ok((tally, written))
                })))
            };
            if let Some(previous) = writing.replace(PageInFlight { work, count, last }) {
                let settled = self.settle_page(claim, job, storage, progress, &mut saving, previous).await;
                if !matches!(settled, Ok(true)) {
                    // Let the page just handed over finish before giving up (its
                    // files are not recorded; the next sync finds them or writes them again).
                    if let Some(PageInFlight { work: PageWork::Writing(handle), .. }) = writing.take() {
                        let _ = handle.await;
                    }
                    return settled.map(|_| None);
                }
            }
            if feed_checked.elapsed() >= CATCH_UP_EVERY {
                feed_checked = Instant::now();
                if let Some((from, until)) = self.feed_pending_during(storage).await? {
                    // What is in flight was read before these changes: let it land
                    // first, apply them, then read the next page again.
                    if !self.settle_all(claim, job, storage, progress, &mut writing, &mut saving).await? {
                        return Ok(None);
                    }
                    // Saves are what users wait for: at the API's priority, as auto-export.
                    let applied = self.apply_feed(claim, storage, target.as_ref(), from, Some(until));
                    if let Some(failed) = crate::background::foreground(applied).await? {
                        tracing::warn!(storage = storage.id, reason = %failed, "applying saves during a sync failed; retried after it");
                    }
                    next_page = Some(self.read_page(storage.project_id, progress.checkpoint_id, &mut api));
                }
            }
        };
        if !self.settle_all(claim, job, storage, progress, &mut writing, &mut saving).await? {
            return Ok(None);
        }
        if stopped {
            return Ok(None);
        }
        if storage.fields.can_delete_objects == Some(true) {
            let mut after = 0;
            loop {
                let orphans = self.db.orphan_links(storage.link_set(), after, self.settings.batch_size).await?;
                let Some(last) = orphans.last().map(|l| l.annotation_id) else {
                    break;
                };
                after = last;
                let mut tally = Tally::default();
                if storage.fields.export_mode == "task" {
                    // A task file goes only when none of its annotations is left.
                    let ids: Vec<i64> = orphans.iter().map(|l| l.annotation_id).collect();
                    lease_held(claim, self.db.delete_links(&claim.lease, storage.links_epoch, &ids).await?)?;
                    let task_keys: BTreeSet<String> = orphans.into_iter().map(|l| l.key).collect();
                    for key in task_keys {
                        if self.db.count_links_with_key(storage.link_set(), &key).await? == 0 {
                            let task_id = keys::task_of_key(&key).unwrap_or_default();
                            self.delete_fenced(claim, target.as_ref(), task_id, &key, &mut tally).await?;
                        }
                    }
                } else {
                    self.delete_linked(claim, storage, target.as_ref(), orphans, &BTreeSet::new(), &mut tally).await?;
                }
                tally.add_to(progress);
                tally.observe(&storage.storage_type);
            }
        }
        Ok(Some(job.start_seq))
    }

    /// During a full pass: the storage's cursor and the feed's end now, if the
    /// change feed has entries of the project past the cursor. Saves made while the
    /// pass runs may be in pages it has written already; applying them meanwhile
    /// takes a save to the target in about [`CATCH_UP_EVERY`], not after the pass.
    /// (Entries from before the job started are the pass's own work too; applying
    /// them is only done earlier. What is applied gets its link, so the pass then
    /// skips it as unchanged.) Up to the end seen now only, so saves that keep
    /// coming cannot hold the pass up.
    async fn feed_pending_during(&self, storage: &ExportStorage) -> anyhow::Result<Option<(i64, i64)>> {
        let cursor = self.db.storage_by_id(storage.id).await?.cursor_seq;
        if self.db.changes_since(storage.project_id, cursor, 1).await?.is_empty() {
            return Ok(None);
        }
        Ok(Some((cursor, self.db.latest_change_seq().await?)))
    }

    /// Empties the pipeline: settles the page being written, then waits until its
    /// links and checkpoint are saved. `false`: the lease is lost.
    async fn settle_all(
        &self,
        claim: &Arc<Claim>,
        job: &SyncJob,
        storage: &ExportStorage,
        progress: &mut JobProgress,
        writing: &mut Option<PageInFlight>,
        saving: &mut Option<JoinHandle<anyhow::Result<bool>>>,
    ) -> anyhow::Result<bool> {
        if let Some(page) = writing.take() {
            if !self.settle_page(claim, job, storage, progress, saving, page).await? {
                return Ok(false);
            }
        }
        match saving.take() {
            Some(previous) => join(previous).await?,
            None => Ok(true),
        }
    }

    /// Waits for a page's writes, counts them, and saves its links and checkpoint in
    /// the background once the previous page's are saved. `false`: the lease is lost.
    async fn settle_page(
        &self,
        claim: &Arc<Claim>,
        job: &SyncJob,
        storage: &ExportStorage,
        progress: &mut JobProgress,
        saving: &mut Option<JoinHandle<anyhow::Result<bool>>>,
        page: PageInFlight,
    ) -> anyhow::Result<bool> {
        let (tally, written) = match page.work {
            PageWork::Done(tally) => (tally, Vec::new()),
            PageWork::Writing(handle) => join(handle).await??,
        };
        tally.add_to(progress);
        tally.observe(&storage.storage_type);
        if let Some(cause) = tally.refused_everything() {
            if let Some(saving) = saving.take() {
                join(saving).await??;
            }
            return Err(JobFailed(cause.to_owned()).into());
        }
        progress.processed += page.count;
        progress.checkpoint_id = page.last;
        if let Some(previous) = saving.take() {
            if !join(previous).await?? {
                return Ok(false);
            }
        }
        let (engine, job, snapshot, claim) = (self.clone(), job.clone(), progress.clone(), claim.clone());
        let epoch = storage.links_epoch;
        *saving = Some(tokio::spawn(async move {
            if !engine.db.upsert_links(&claim.lease, epoch, &written).await? {
                return Ok(false);
            }
            engine.checkpoint(&claim, &job, &snapshot, snapshot.processed).await
        }));
        Ok(true)
    }

    /// Starts reading the page of annotations after `after` in the background.
    /// On SQLite its size follows the API's load since the previous page ([`page_size`]).
    fn read_page(&self, project_id: i64, after: i64, api: &mut ApiLoad) -> JoinHandle<anyhow::Result<Vec<ExportRow>>> {
        let busy = api.busy_share();
        let limit = match self.db.backend() {
            Backend::Sqlite => page_size(self.settings.batch_size, busy),
            // There a page's cost is PostgreSQL's, per statement as much as per row:
            // smaller pages halved the sync's speed and left the API's tail as it was.
            Backend::Postgres => self.settings.batch_size,
        };
        let db = self.db.clone();
        tokio::spawn(crate::background::bulk(async move { Ok(db.export_page(project_id, after, limit).await?) }))
    }

    /// Drops rows whose document is already in place with the same fingerprint.
    /// `inventory` is the target's listing, when it has one. Also returns the links
    /// already recorded with the current fingerprint, in place or not.
    async fn unchanged_filter(
        &self,
        storage: &ExportStorage,
        target: &dyn StorageTarget,
        inventory: Option<&HashMap<String, u64>>,
        page: Vec<ExportRow>,
    ) -> anyhow::Result<(Vec<ExportRow>, HashMap<i64, Link>)> {
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok((page, HashMap::new()));
        };
        // A page is every annotation of the project in an id range, sorted by id.
        let links: BTreeMap<i64, Link> = self
            .db
            .links_between(storage.link_set(), first.0.id, last.0.id)
            .await?
            .into_iter()
            .map(|l| (l.annotation_id, l))
            .collect();
        // Skip only what is in place as we wrote it: same fingerprint, same size on the target.
        let candidates: Vec<&Link> =
            page.iter().filter_map(|(a, t)| links.get(&a.id).filter(|l| l.version == version(a, t))).collect();
        let sizes = match inventory {
            Some(listed) => candidates.iter().map(|l| Ok(listed.get(&l.key).copied())).collect(),
            None => target.sizes(candidates.iter().map(|l| l.key.clone()).collect()).await,
        };
        let in_place: BTreeSet<i64> = candidates
            .iter()
            .zip(sizes)
            .filter(|(link, size)| matches!(size, Ok(Some(n)) if *n == link.size as u64))
            .map(|(link, _)| link.annotation_id)
            .collect();
        let recorded: HashMap<i64, Link> = candidates
            .into_iter()
            .filter(|link| !in_place.contains(&link.annotation_id))
            .map(|link| (link.annotation_id, link.clone()))
            .collect();
        let todo: Vec<ExportRow> = page.into_iter().filter(|(a, _)| !in_place.contains(&a.id)).collect();
        Ok((todo, recorded))
    }

    /// Applies the change feed from the storage's cursor to its end.
    async fn incremental_pass(
        &self,
        claim: &Arc<Claim>,
        storage: &ExportStorage,
        job: &SyncJob,
        target: &dyn StorageTarget,
        progress: &mut JobProgress,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<i64>> {
        let mut users = Users::new();
        let mut cursor = self.db.storage_by_id(storage.id).await?.cursor_seq;
        loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            let changes = self.db.changes_since(storage.project_id, cursor, self.settings.batch_size).await?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            let tally = self.apply_changes(claim, storage, target, &changes, &mut users).await?;
            tally.add_to(progress);
            tally.observe(&storage.storage_type);
            if let Some(cause) = tally.refused_everything() {
                return Err(JobFailed(cause.to_owned()).into());
            }
            progress.processed += changes.len() as i64;
            if !self.db.advance_cursor(&claim.lease, last, None).await? {
                return Ok(None);
            }
            cursor = last;
            if !self.checkpoint(claim, job, progress, progress.processed).await? {
                return Ok(None);
            }
        }
        Ok(Some(cursor))
    }
}

/// The API's busy share above which the full pass reads smaller pages.
const API_BUSY_SHARE: f64 = 0.25;

/// The full pass's next page on SQLite: `batch` annotations, or a quarter of that while
/// the API was answering requests more than [`API_BUSY_SHARE`] of the time. Each page
/// ends in work at the API's priority (its links and checkpoint in a write turn), and
/// smaller pages keep those bursts short. With a sync running throughout, the issue-11
/// mix's p99 went from 8.0 / 11.2 / 18.9 ms to 4.7–5.5 / 6.0–6.9 / 9.3–10.7 ms
/// (docs/BENCHMARKS.md), the sync a fifth slower meanwhile; an idle server, or one a
/// client polls, keeps the larger pages' speed.
fn page_size(batch: i64, api_busy_share: f64) -> i64 {
    if api_busy_share > API_BUSY_SHARE {
        (batch / 4).max(1)
    } else {
        batch
    }
}

/// `Ok` if a fenced write went through, [`LeaseLost`] if the lease was lost.
fn lease_held(claim: &Arc<Claim>, written: bool) -> anyhow::Result<()> {
    if written {
        Ok(())
    } else {
        Err(LeaseLost(claim.storage_id()).into())
    }
}

/// What a panic's payload says: its message when it is text (as `panic!` and
/// `expect` give).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    match (payload.downcast_ref::<&'static str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (None, Some(text)) => text,
        (None, None) => "a panic without a message",
    }
}

/// Whether a write was held back by the lease check, i.e. surely not made.
fn is_held_back(result: &Result<(), StorageError>) -> bool {
    matches!(result, Err(StorageError::Precondition(_)))
}

/// Every minute, deletes the change-feed entries that every storage has passed.
async fn prune_until_stopped(db: Db, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {},
            _ = stop.cancelled() => return,
        }
        match db.prune_change_feed().await {
            Ok(n) if n > 0 => tracing::debug!(entries = n, "pruned the change feed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.message = %e, "pruning the change feed failed"),
        }
        match db.prune_stale_links(crate::db::LINKS_DELETED_PER_TRANSACTION).await {
            Ok(n) if n > 0 => tracing::debug!(links = n, "deleted the links of earlier storage locations"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error.message = %e, "deleting the links of earlier storage locations failed"),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "labelport".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_pass_reads_quarter_pages_only_while_the_api_is_busy() {
        assert_eq!(super::page_size(1000, 0.0), 1000);
        assert_eq!(super::page_size(1000, super::API_BUSY_SHARE), 1000, "a client polling the status");
        assert_eq!(super::page_size(1000, 0.9), 250);
        assert_eq!(super::page_size(2, 1.0), 1, "never an empty page");
    }
}
