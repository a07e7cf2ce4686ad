//! Threads for background work: the sync engine's blocking steps (reading export
//! pages, rendering documents, writing files) run here, at a lower scheduling
//! priority than the threads that answer requests. A long sync then takes the CPU
//! the API leaves and the API is not slowed down by it; on an idle machine a sync
//! runs exactly as fast (niceness only matters when threads compete for a core).
//!
//! `LABELPORT_SYNC_NICE` (default 10, 0 to turn it off) is added to the niceness of
//! each of these threads. On Linux niceness is per thread, so the process's other
//! threads keep theirs; an unprivileged process may lower its threads' priority,
//! never raise it back, which is why the threads are kept apart for this work.

use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// Runs `f` on a background thread (see the module docs); awaitable from any runtime.
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    pool().spawn_blocking(f)
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

    #[tokio::test]
    async fn background_work_runs_and_its_result_comes_back_to_the_caller() {
        assert_eq!(super::spawn_blocking(|| 6 * 7).await.unwrap(), 42);
    }
}
