//! Threads for bulk background work: the blocking steps of a full sync (reading
//! export pages, rendering documents, writing files) run here, at a lower
//! scheduling priority than the threads that answer requests. A long sync then
//! takes the CPU the API leaves and the API is not slowed down by it; on an idle
//! machine a sync runs exactly as fast (niceness only matters when threads compete
//! for a core). Auto-export (a save's document) stays at the API's priority: it is
//! what a user waits for.
//!
//! Work is bulk when its task runs inside [`bulk`]; [`spawn_blocking`] then uses
//! these threads, and tokio's blocking pool otherwise.
//!
//! `LABELPORT_SYNC_NICE` (default 10, 0 to turn it off) is added to the niceness of
//! each of these threads. On Linux niceness is per thread, so the process's other
//! threads keep theirs; an unprivileged process may lower its threads' priority,
//! never raise it back, which is why the threads are kept apart for this work.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

tokio::task_local! {
    static BULK: bool;
    static ANSWERING: ();
}

/// Runs `f` as bulk work: its blocking steps go to the background threads.
pub async fn bulk<F: Future>(f: F) -> F::Output {
    BULK.scope(true, f).await
}

/// Runs `f`, inside bulk work, as work someone waits for: at the API's priority.
pub async fn foreground<F: Future>(f: F) -> F::Output {
    BULK.scope(false, f).await
}

fn in_bulk() -> bool {
    BULK.try_with(|bulk| *bulk).unwrap_or(false)
}

/// Runs `f`, the answer to an HTTP request. Its short blocking steps (reads of a
/// SQLite file, see `db::lite_read`) may then run on the thread that polls it
/// instead of being handed to a blocking thread: a hand-off is two wake-ups, each of
/// which may wait for a core while a sync keeps them busy.
pub async fn answer<F: Future>(f: F) -> F::Output {
    ANSWERING.scope((), f).await
}

/// Whether the caller is answering a request ([`answer`]) and not doing bulk work.
/// Tasks a request spawns are not part of its answer.
pub fn answering() -> bool {
    ANSWERING.try_with(|()| ()).is_ok() && !in_bulk()
}

/// Runs `f` on a blocking thread: a background one inside [`bulk`], tokio's
/// otherwise. Awaitable from any runtime.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if in_bulk() {
        pool().spawn_blocking(f)
    } else {
        tokio::task::spawn_blocking(f)
    }
}

/// Awaits a spawned task and carries its panic on into the caller, as joining a
/// scoped thread does. A panic is a bug, not a failure to retry: it reaches the sync
/// engine's step, which stops the work it belongs to and says why, instead of
/// turning into an error that the step would retry for ever. Only a cancelled task
/// is left as an error.
pub async fn join<T>(handle: JoinHandle<T>) -> Result<T, tokio::task::JoinError> {
    handle.await.map_err(|e| match e.try_into_panic() {
        Ok(payload) => std::panic::resume_unwind(payload),
        Err(cancelled) => cancelled,
    })
}

/// Requests this process is answering now.
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);
/// Since when (µs after [`epoch`]) at least one request has been in flight.
static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);
/// Time (µs) with at least one request in flight, up to the last moment none was.
static BUSY_TOTAL: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// One request answered by this process, from [`start`](Self::start) until dropped.
/// The HTTP server holds one per request, so that bulk work can tell how busy the
/// API is ([`ApiLoad`]).
pub struct Request(());

impl Request {
    /// Counts a request as in flight.
    pub fn start() -> Request {
        if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) == 0 {
            BUSY_SINCE.store(now_us(), Ordering::Release);
        }
        Request(())
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if IN_FLIGHT.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = BUSY_SINCE.load(Ordering::Acquire);
            BUSY_TOTAL.fetch_add(now_us().saturating_sub(since), Ordering::AcqRel);
        }
    }
}

/// Time with a request in flight, up to now (µs).
fn busy_us() -> u64 {
    let total = BUSY_TOTAL.load(Ordering::Acquire);
    match IN_FLIGHT.load(Ordering::Acquire) {
        0 => total,
        _ => total + now_us().saturating_sub(BUSY_SINCE.load(Ordering::Acquire)),
    }
}

/// How busy the API has been since the last look: the share of the time during which
/// this process was answering at least one request. A client polling a sync's status
/// keeps it near zero; a stream of requests, near one.
pub struct ApiLoad {
    at: u64,
    busy: u64,
}

impl ApiLoad {
    /// Starts measuring now.
    pub fn new() -> ApiLoad {
        ApiLoad { at: now_us(), busy: busy_us() }
    }

    /// The busy share since the previous call (or since [`new`](Self::new)), in 0..=1.
    pub fn busy_share(&mut self) -> f64 {
        let (at, busy) = (now_us(), busy_us());
        let share = (busy.saturating_sub(self.busy)) as f64 / (at.saturating_sub(self.at)).max(1) as f64;
        (self.at, self.busy) = (at, busy);
        share.min(1.0)
    }
}

impl Default for ApiLoad {
    fn default() -> ApiLoad {
        ApiLoad::new()
    }
}

/// A runtime used only for its blocking pool: every thread it starts lowers its
/// own priority first.
fn pool() -> &'static Runtime {
    static POOL: OnceLock<Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        let nice = niceness();
        Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(max_threads())
            .thread_name("labelport-bg")
            .on_thread_start(move || lower_priority(nice))
            .build()
            .expect("starting the background threads")
    })
}

/// Most background threads at once: twice the cores. A full sync's steps (page reads,
/// rendering, file writes) are mostly CPU, so more threads than that only take turns on
/// the cores, and each turn is a context switch; twice leaves room for steps that wait
/// on the disk. Tokio's default (512) let a 20k sync on 2 cores run ten such threads,
/// which together waited 0.5 s for a core during a 0.2 s sync; capped, the sync took
/// 8 % less time on tmpfs (docs/BENCHMARKS.md, 15th session). Background steps never
/// wait for each other, so a step waiting for a thread only waits for one to finish.
fn max_threads() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn niceness() -> i32 {
    std::env::var("LABELPORT_SYNC_NICE").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(10).clamp(0, 19)
}

fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::nice(nice) {
        tracing::debug!(error.message = %e, "could not lower a background thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_api_busy_share_is_the_share_of_time_with_a_request_in_flight() {
        // Arrange
        let mut load = super::ApiLoad::new();
        let pause = Duration::from_millis(60);

        // Act: two overlapping requests for one pause, then none for as long.
        let (a, b) = (super::Request::start(), super::Request::start());
        std::thread::sleep(pause);
        drop((a, b));
        std::thread::sleep(pause);
        let half = load.busy_share();
        std::thread::sleep(pause);
        let idle = load.busy_share();
        let held = super::Request::start();
        std::thread::sleep(pause);
        let busy = load.busy_share();
        drop(held);

        // Assert: overlapping requests count once; a request still in flight counts.
        assert!((0.35..=0.65).contains(&half), "{half}");
        assert_eq!(idle, 0.0);
        assert!(busy > 0.9, "{busy}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_lowers_its_own_priority_and_no_other_threads() {
        let mine = rustix::process::nice(0).unwrap();
        let theirs = std::thread::spawn(|| {
            super::lower_priority(5);
            rustix::process::nice(0).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(theirs, (mine + 5).min(19));
        assert_eq!(rustix::process::nice(0).unwrap(), mine, "the caller's thread keeps its priority");
    }

    /// More bulk steps than threads: they all run, never more at once than the cap.
    #[tokio::test]
    async fn bulk_steps_beyond_the_thread_cap_wait_for_a_thread_and_all_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let steps = (0..3 * super::max_threads()).map(|i| {
            let (running, most) = (running.clone(), most.clone());
            super::bulk(async move {
                super::spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(30));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
                .await
                .unwrap()
            })
        });
        let done = futures::future::join_all(steps).await;
        assert_eq!(done, (0..3 * super::max_threads()).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!((1..=super::max_threads()).contains(&most), "{most} steps at once");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bulk_work_runs_on_the_background_threads_and_the_rest_on_tokios() {
        let nice = || super::spawn_blocking(|| rustix::process::nice(0).unwrap());
        let normal = nice().await.unwrap();
        let bulk = super::bulk(async { nice().await.unwrap() }).await;
        let waited_for = super::bulk(super::foreground(async { nice().await.unwrap() })).await;
        assert_eq!(bulk, (normal + super::niceness()).min(19));
        assert_eq!(waited_for, normal);
    }
}
