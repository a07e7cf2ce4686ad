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
use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

tokio::task_local! {
    static BULK: bool;
}

/// Runs `f` as bulk work: its blocking steps go to the background threads.
pub async fn bulk<F: Future>(f: F) -> F::Output {
    BULK.scope(true, f).await
}

/// Runs `f`, inside bulk work, as work someone waits for: at the API's priority.
pub async fn foreground<F: Future>(f: F) -> F::Output {
    BULK.scope(false, f).await
}

/// Runs `f` on a blocking thread: a background one inside [`bulk`], tokio's
/// otherwise. Awaitable from any runtime.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if BULK.try_with(|bulk| *bulk).unwrap_or(false) {
        pool().spawn_blocking(f)
    } else {
        tokio::task::spawn_blocking(f)
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
            .thread_name("labelport-bg")
            .on_thread_start(move || lower_priority(nice))
            .build()
            .expect("starting the background threads")
    })
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
