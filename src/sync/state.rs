//! The export-storage status machine and its bookkeeping, exactly as Label Studio
//! reports them (contract §4.1, §4.2). Pure functions of the current state and the
//! clock, so they are tested without a database.
//!
//! ```text
//! initialized ─sync→ queued ─worker→ in_progress ─done→ completed
//!                      ▲                  │        ─write errors→ completed_with_errors
//!     (any state) ─────┘                  └─fatal→ failed
//! ```

use crate::db::{ExportStorage, SyncState};
use crate::time::{meta as meta_time, Micros};
use serde_json::{json, Map, Value};

/// Status strings.
pub mod status {
    /// Created, never synced.
    pub const INITIALIZED: &str = "initialized";
    /// A sync was requested and has not started.
    pub const QUEUED: &str = "queued";
    /// A worker is exporting.
    pub const IN_PROGRESS: &str = "in_progress";
    /// Every annotation was processed.
    pub const COMPLETED: &str = "completed";
    /// Finished, but some documents could not be written.
    pub const COMPLETED_WITH_ERRORS: &str = "completed_with_errors";
    /// The job could not run (e.g. the target is unusable).
    pub const FAILED: &str = "failed";
    /// Every valid status.
    pub const ALL: [&str; 6] = [INITIALIZED, QUEUED, IN_PROGRESS, FAILED, COMPLETED, COMPLETED_WITH_ERRORS];
}

/// Traceback set by the stale-job check (contract §4.4), verbatim.
pub const STALE_TRACEBACK: &str = "It appears the job was failed because the last ping time is too old, and no traceback information is available.\nThis typically occurs if job was manually removed or workers reloaded unexpectedly.";

/// Seconds without a ping after which an `in_progress` storage with no live job is stale.
pub const STALE_AFTER_SECONDS: i64 = 25;

fn meta_map(meta: &Value) -> Map<String, Value> {
    meta.as_object().cloned().unwrap_or_default()
}

fn seconds_between(from: Option<&Value>, to: Micros) -> f64 {
    let from = from.and_then(Value::as_str).and_then(crate::time::parse_any).unwrap_or(to);
    (to - from) as f64 / 1_000_000.0
}

/// `→ queued`: meta is replaced by `{attempts: previous + 1, time_queued}`, the
/// `last_sync*` fields are cleared. The traceback of an earlier failure is cleared
/// too (Label Studio keeps it; a fresh attempt should not show a stale error).
pub fn queued(current: &ExportStorage, now: Micros) -> SyncState {
    let attempts = current.meta.get("attempts").and_then(Value::as_i64).unwrap_or(0) + 1;
    SyncState {
        status: status::QUEUED.into(),
        meta: json!({ "attempts": attempts, "time_queued": meta_time(now) }),
        last_sync: None,
        last_sync_count: None,
        traceback: None,
    }
}

/// `→ in_progress`: adds `time_in_progress` and `time_last_ping`.
pub fn started(current: &ExportStorage, now: Micros) -> SyncState {
    let mut meta = meta_map(&current.meta);
    meta.insert("time_in_progress".into(), meta_time(now).into());
    meta.insert("time_last_ping".into(), meta_time(now).into());
    SyncState {
        status: status::IN_PROGRESS.into(),
        meta: Value::Object(meta),
        last_sync: None,
        last_sync_count: current.last_sync_count,
        traceback: current.traceback.clone(),
    }
}

/// A progress ping: `last_sync_count`, `time_last_ping`, `duration`, `total_annotations`.
pub fn ping(current: &ExportStorage, now: Micros, processed: i64, total: i64) -> SyncState {
    let mut meta = meta_map(&current.meta);
    meta.insert("time_last_ping".into(), meta_time(now).into());
    let duration = seconds_between(meta.get("time_in_progress"), now);
    meta.insert("duration".into(), json!(duration));
    meta.insert("total_annotations".into(), total.into());
    SyncState {
        status: status::IN_PROGRESS.into(),
        meta: Value::Object(meta),
        last_sync: None,
        last_sync_count: Some(processed),
        traceback: current.traceback.clone(),
    }
}

/// What a finished job reports beyond Label Studio's keys.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Annotations processed.
    pub processed: i64,
    /// Annotations in the project at start.
    pub total: i64,
    /// `full` or `incremental`.
    pub mode: String,
    /// Documents written.
    pub written: i64,
    /// Documents deleted.
    pub deleted: i64,
    /// Failed writes.
    pub failed: i64,
    /// Failure descriptions, if any.
    pub errors: Option<String>,
}

/// `→ completed` (or `completed_with_errors` when some writes failed): `last_sync`,
/// `last_sync_count`, `time_completed`, `duration`, `total_annotations`, then our
/// own counters (`sync_mode`, `files_written`, `files_deleted`, `write_errors`).
pub fn completed(current: &ExportStorage, now: Micros, outcome: &Outcome) -> SyncState {
    // Label Studio's key order: the queue/start keys, then the completion keys.
    let old = meta_map(&current.meta);
    let mut meta: Map<String, Value> = ["attempts", "time_queued", "time_in_progress", "time_last_ping"]
        .iter()
        .filter_map(|k| old.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    meta.insert("time_completed".into(), meta_time(now).into());
    meta.insert("duration".into(), json!(seconds_between(meta.get("time_in_progress"), now)));
    meta.insert("total_annotations".into(), outcome.total.into());
    meta.insert("sync_mode".into(), outcome.mode.clone().into());
    meta.insert("files_written".into(), outcome.written.into());
    meta.insert("files_deleted".into(), outcome.deleted.into());
    meta.insert("write_errors".into(), outcome.failed.into());
    let with_errors = outcome.failed > 0;
    SyncState {
        status: if with_errors { status::COMPLETED_WITH_ERRORS } else { status::COMPLETED }.into(),
        meta: Value::Object(meta),
        last_sync: Some(now),
        last_sync_count: Some(outcome.processed),
        traceback: if with_errors { outcome.errors.clone() } else { current.traceback.clone() },
    }
}

/// `→ failed` from a job error: `time_failure`, `duration`, the message as traceback.
pub fn failed(current: &ExportStorage, now: Micros, message: &str) -> SyncState {
    let mut meta = meta_map(&current.meta);
    meta.insert("time_failure".into(), meta_time(now).into());
    meta.insert("duration".into(), json!(seconds_between(meta.get("time_in_progress"), now)));
    SyncState {
        status: status::FAILED.into(),
        meta: Value::Object(meta),
        last_sync: current.last_sync,
        last_sync_count: current.last_sync_count,
        traceback: Some(message.to_owned()),
    }
}

/// Traceback prefix of an automatic export that failed (labelport): the storage shows
/// `failed` with the cause until a later attempt succeeds.
pub const AUTO_EXPORT_FAILED: &str = "Automatic export failed; retrying with backoff. Cause: ";

/// Meta key holding an ongoing automatic-export failure: since when, how many
/// attempts, and the status (with its traceback) to restore once it recovers.
const AUTO_EXPORT_KEY: &str = "auto_export_failure";

/// Consecutive failed attempts of automatic export recorded on a storage (0 if none).
pub fn auto_export_attempts(current: &ExportStorage) -> u32 {
    current.meta.get(AUTO_EXPORT_KEY).and_then(|f| f.get("attempts")).and_then(Value::as_u64).unwrap_or(0) as u32
}

/// `→ failed` because automatic export failed (no job involved): the cause as
/// traceback, and in `meta` the attempts so far and the status to go back to.
pub fn auto_export_failed(current: &ExportStorage, now: Micros, cause: &str) -> SyncState {
    let mut meta = meta_map(&current.meta);
    let previous = match meta.get(AUTO_EXPORT_KEY) {
        Some(f) => f.clone(),
        None => json!({
            "since": meta_time(now),
            "previous_status": current.status,
            "previous_traceback": current.traceback,
            "attempts": 0,
        }),
    };
    let attempts = previous.get("attempts").and_then(Value::as_u64).unwrap_or(0) + 1;
    let mut failure = previous;
    failure["attempts"] = json!(attempts);
    failure["last_attempt"] = json!(meta_time(now));
    meta.insert(AUTO_EXPORT_KEY.into(), failure);
    SyncState {
        status: status::FAILED.into(),
        meta: Value::Object(meta),
        last_sync: current.last_sync,
        last_sync_count: current.last_sync_count,
        traceback: Some(format!("{AUTO_EXPORT_FAILED}{cause}")),
    }
}

/// The state to go back to once automatic export works again, if it had failed.
pub fn auto_export_recovered(current: &ExportStorage) -> Option<SyncState> {
    let mut meta = meta_map(&current.meta);
    let failure = meta.remove(AUTO_EXPORT_KEY)?;
    let showing_it = current.status == status::FAILED
        && current.traceback.as_deref().is_some_and(|t| t.starts_with(AUTO_EXPORT_FAILED));
    let (status, traceback) = if showing_it {
        // A storage that had failed before keeps showing that failure's cause.
        let previous = failure.get("previous_status").and_then(Value::as_str).unwrap_or(status::COMPLETED);
        let traceback = failure.get("previous_traceback").and_then(Value::as_str).map(str::to_owned);
        (previous.to_owned(), traceback)
    } else {
        (current.status.clone(), current.traceback.clone())
    };
    Some(SyncState {
        status,
        meta: Value::Object(meta),
        last_sync: current.last_sync,
        last_sync_count: current.last_sync_count,
        traceback,
    })
}

/// The stale-job check run on storage lists: an `in_progress` storage whose last
/// ping is older than [`STALE_AFTER_SECONDS`] and that has no live job becomes
/// `failed` with Label Studio's message; meta and counters are left alone.
pub fn stale(current: &ExportStorage, now: Micros, has_live_job: bool) -> Option<SyncState> {
    if current.status != status::IN_PROGRESS || has_live_job {
        return None;
    }
    let last_ping =
        current.meta.get("time_last_ping").and_then(Value::as_str).and_then(crate::time::parse_any).unwrap_or(now);
    (now - last_ping > STALE_AFTER_SECONDS * 1_000_000).then(|| SyncState {
        status: status::FAILED.into(),
        meta: current.meta.clone(),
        last_sync: current.last_sync,
        last_sync_count: current.last_sync_count,
        traceback: Some(STALE_TRACEBACK.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::StorageFields;

    #[test]
    fn an_auto_export_failure_shows_until_it_recovers_and_restores_the_status() {
        let s = storage(status::COMPLETED, json!({"attempts": 1}));
        let failed = auto_export_failed(&s, 1_000_000, "bucket gone");
        assert_eq!(failed.status, status::FAILED);
        assert!(failed.traceback.as_deref().unwrap().ends_with("bucket gone"));
        let mut s2 = s.clone();
        s2.status = failed.status.clone();
        s2.meta = failed.meta.clone();
        s2.traceback = failed.traceback.clone();
        assert_eq!(auto_export_attempts(&s2), 1);
        let again = auto_export_failed(&s2, 2_000_000, "still gone");
        assert_eq!(again.meta["auto_export_failure"]["attempts"], 2);
        assert_eq!(again.meta["auto_export_failure"]["previous_status"], status::COMPLETED);
        let back = auto_export_recovered(&s2).unwrap();
        assert_eq!(back.status, status::COMPLETED);
        assert_eq!(back.traceback, None);
        assert!(back.meta.get("auto_export_failure").is_none());
        assert!(auto_export_recovered(&s).is_none(), "nothing to recover from");
    }

    #[test]
    fn recovering_to_an_earlier_failure_restores_its_traceback() {
        let mut s = storage(status::FAILED, json!({"attempts": 1}));
        s.traceback = Some("Export to x stopped: no such container".into());
        let failed = auto_export_failed(&s, 1_000_000, "unreachable");
        s.meta = failed.meta;
        s.traceback = failed.traceback;
        let back = auto_export_recovered(&s).unwrap();
        assert_eq!(back.status, status::FAILED);
        assert_eq!(back.traceback.as_deref(), Some("Export to x stopped: no such container"));
    }

    fn storage(status: &str, meta: Value) -> ExportStorage {
        ExportStorage {
            id: 1,
            storage_type: "localfiles".into(),
            project_id: 1,
            fields: StorageFields::default(),
            status: status.into(),
            last_sync: None,
            last_sync_count: None,
            last_sync_job: None,
            traceback: None,
            meta,
            created_at: 0,
            cursor_seq: 0,
            baseline_done: false,
            target_token: None,
            links_epoch: 0,
        }
    }

    fn apply(s: &mut ExportStorage, f: impl FnOnce(&ExportStorage) -> SyncState) {
        let st = f(s);
        s.status = st.status;
        s.meta = st.meta;
        s.last_sync = st.last_sync;
        s.last_sync_count = st.last_sync_count;
        s.traceback = st.traceback;
    }

    const T0: Micros = 1_795_892_297_408_272;

    #[test]
    fn a_full_cycle_produces_label_studios_meta_keys_in_order() {
        let mut s = storage(status::INITIALIZED, json!({}));
        apply(&mut s, |s| queued(s, T0));
        assert_eq!(s.status, "queued");
        assert_eq!(s.meta, json!({"attempts": 1, "time_queued": "2026-11-28 18:58:17.408272+00:00"}));
        apply(&mut s, |s| started(s, T0 + 3_326));
        assert_eq!(s.status, "in_progress");
        apply(&mut s, |s| ping(s, T0 + 5_000, 1, 2));
        assert_eq!(s.last_sync_count, Some(1));
        assert_eq!(s.meta["total_annotations"], 2);
        let outcome = Outcome { processed: 1, total: 1, mode: "full".into(), written: 1, ..Default::default() };
        apply(&mut s, |s| completed(s, T0 + 15_571, &outcome));
        assert_eq!(s.status, "completed");
        assert_eq!(s.last_sync, Some(T0 + 15_571));
        let keys: Vec<&str> = s.meta.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys[..7],
            [
                "attempts",
                "time_queued",
                "time_in_progress",
                "time_last_ping",
                "time_completed",
                "duration",
                "total_annotations"
            ]
        );
        assert_eq!(s.meta["duration"], json!(0.012245));
        assert_eq!(s.meta["total_annotations"], json!(1));
    }

    #[test]
    fn attempts_keep_counting_across_syncs_and_queueing_clears_counters() {
        let mut s = storage(status::COMPLETED, json!({"attempts": 4, "time_completed": "x"}));
        s.last_sync = Some(T0);
        s.last_sync_count = Some(9);
        s.traceback = Some("old".into());
        apply(&mut s, |s| queued(s, T0));
        assert_eq!(s.meta["attempts"], 5);
        assert!(s.meta.get("time_completed").is_none());
        assert_eq!((s.last_sync, s.last_sync_count, s.traceback), (None, None, None));
    }

    #[test]
    fn write_errors_end_in_completed_with_errors_with_a_traceback() {
        let s = storage(status::IN_PROGRESS, json!({"attempts": 1}));
        let outcome =
            Outcome { processed: 3, total: 3, failed: 2, errors: Some("11: disk full".into()), ..Default::default() };
        let st = completed(&s, T0, &outcome);
        assert_eq!(st.status, "completed_with_errors");
        assert_eq!(st.traceback.as_deref(), Some("11: disk full"));
    }

    #[test]
    fn failure_records_time_failure_and_keeps_last_sync_null() {
        let s = storage(status::IN_PROGRESS, json!({"attempts": 1, "time_in_progress": meta_time(T0)}));
        let st = failed(&s, T0 + 1_000_000, "boom");
        assert_eq!(st.status, "failed");
        assert_eq!(st.meta["duration"], json!(1.0));
        assert!(st.meta.get("time_failure").is_some());
        assert_eq!(st.last_sync, None);
    }

    #[test]
    fn only_old_pings_without_a_live_job_are_stale() {
        let s = storage(status::IN_PROGRESS, json!({"time_last_ping": meta_time(T0)}));
        assert!(stale(&s, T0 + 10_000_000, false).is_none());
        assert!(stale(&s, T0 + 30_000_000, true).is_none());
        let st = stale(&s, T0 + 30_000_000, false).unwrap();
        assert_eq!(st.traceback.as_deref(), Some(STALE_TRACEBACK));
        assert!(stale(&storage(status::COMPLETED, json!({})), T0 + 99_000_000, false).is_none());
    }
}
