//! Slows down credential guessing: once one client address has failed too many token
//! checks (`LABELPORT_AUTH_FAILURES_PER_MINUTE`), its further failures are answered
//! 429 with `Retry-After` instead of 401. Requests with valid credentials are never
//! throttled, so a working client sharing the address (NAT, a proxy) is unaffected;
//! requests without credentials are not token checks and are not counted.
//!
//! Password logins (`POST /api/admin/login`) are limited differently: a password can
//! be guessed, and a limit that only changed the answer to wrong guesses would still
//! let the right one through. So every login attempt counts, before the password is
//! checked (and before its hash costs a core), and past the allowance the address gets
//! 429 whatever it sends until the allowance refills.

use super::error::ApiError;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

/// Addresses tracked before forgetting the ones whose failures have aged out.
const PRUNE_ABOVE: usize = 10_000;

/// Failed token checks allowed per client address: a burst of `per_minute`,
/// refilled at `per_minute` a minute.
/// Password login attempts get the same allowance, counted apart.
#[derive(Clone)]
pub struct FailedAuthLimiter {
    failures: Allowance,
    logins: Allowance,
}

/// `per_minute` events per address: a burst of that many, refilled at that rate.
#[derive(Clone)]
struct Allowance(Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>);

impl Allowance {
    fn new(per_minute: u32) -> Allowance {
        Allowance(NonZeroU32::new(per_minute).map(|n| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)))))
    }

    /// Counts one event of `ip`; `Some(wait)` when it is over its allowance.
    fn spend(&self, ip: IpAddr) -> Option<std::time::Duration> {
        let limiter = self.0.as_ref()?;
        if limiter.len() > PRUNE_ABOVE {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).err().map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

impl FailedAuthLimiter {
    /// A limiter allowing `per_minute` failures (and as many logins) a minute per
    /// address; 0 turns it off.
    pub fn new(per_minute: u32) -> FailedAuthLimiter {
        FailedAuthLimiter { failures: Allowance::new(per_minute), logins: Allowance::new(per_minute) }
    }
}

/// A password login: counted as an attempt before it is answered.
fn is_login(req: &Request) -> bool {
    req.method() == axum::http::Method::POST && matches!(req.uri().path(), "/api/admin/login" | "/api/admin/login/")
}

/// Whether the request presented credentials to check: an auth header, or a body
/// token on the refresh and blacklist endpoints.
fn presents_credentials(req: &Request) -> bool {
    let path = req.uri().path();
    req.headers().contains_key(header::AUTHORIZATION)
        || req.headers().contains_key("x-api-key")
        || path.starts_with("/api/token/refresh")
        || path.starts_with("/api/token/blacklist")
}

/// The middleware: a 401 to a request that presented credentials counts as a failure
/// of the peer address; over the allowance it becomes a 429.
pub async fn limit_failed_auth(limiter: FailedAuthLimiter, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    if let (Some(ip), true) = (peer, is_login(&req)) {
        if let Some(wait) = limiter.logins.spend(ip) {
            tracing::warn!(%ip, "too many password logins from one address");
            return throttled(wait);
        }
    }
    let counted = presents_credentials(&req);
    let response = next.run(req).await;
    let (Some(ip), true, StatusCode::UNAUTHORIZED) = (peer, counted, response.status()) else {
        return response;
    };
    let Some(wait) = limiter.failures.spend(ip) else {
        return response;
    };
    tracing::warn!(%ip, "too many failed token checks from one address");
    throttled(wait)
}

/// 429 with `Retry-After`, in whole seconds (at least one).
fn throttled(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Request was throttled. Expected available in {seconds} seconds."),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
