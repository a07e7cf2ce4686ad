//! Retries with exponential backoff and full jitter, for the requests of cloud
//! targets: throttling (429, 503 SlowDown), server errors and lost connections are
//! retried a bounded number of times; anything else fails at once.

use std::future::Future;
use std::time::Duration;

/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(20);

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Ceiling of the first wait; doubles per attempt up to 20 s.
    pub base: Duration,
}

/// Whether a failure may go away by itself.
pub trait Transient {
    /// Retrying the same request later may succeed.
    fn is_transient(&self) -> bool;
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (full jitter: uniform in `0..=ceiling`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << attempt.min(16)).min(MAX_DELAY);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::Rng::gen_range(&mut rand::thread_rng(), 0..=nanos))
    }

    /// Runs `op` until it succeeds, fails permanently, or the attempts run out.
    pub async fn run<T, E, F, Fut>(&self, mut op: F) -> Result<T, E>
    where
        E: Transient + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt + 1 < self.max_attempts => {
                    let wait = self.delay(attempt);
                    tracing::debug!(attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error.message = %e, "retrying a target request");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "E({})", self.0)
        }
    }
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    const FAST: RetryPolicy = RetryPolicy { max_attempts: 4, base: Duration::from_millis(1) };

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let out: Result<u32, E> = FAST
            .run(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(E(true))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 2);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried_and_attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let out: Result<(), E> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(false))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let out: Result<(), E> = FAST
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(true))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn delays_grow_but_stay_under_the_ceiling() {
        let p = RetryPolicy { max_attempts: 10, base: Duration::from_millis(100) };
        for attempt in 0..30 {
            assert!(p.delay(attempt) <= MAX_DELAY);
        }
        assert!(p.delay(0) <= Duration::from_millis(100));
    }
}
