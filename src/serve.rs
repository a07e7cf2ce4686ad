//! The HTTP server loop: hyper's HTTP/1 connections over a tokio listener, with the
//! limits `axum::serve` does not offer (issue #12, docs/SECURITY.md):
//!
//! - a **header timeout**: hyper closes a connection whose request line and headers
//!   are not complete this long after it started waiting for them (slowloris,
//!   half-open connections);
//! - a **keep-alive timeout**: a connection that is *idle* (no request in progress on
//!   it and no byte moved either way) for this long is closed;
//! - a **connection cap**: at most `max_connections` are open. At the cap the
//!   accept loop waits, and meanwhile asks idle connections to close, the way nginx
//!   reuses idle keep-alive connections when it runs out, so that a client holding
//!   many idle connections cannot lock others out;
//! - **graceful shutdown**: no new connections; idle ones close at once, the others
//!   finish their request first.
//!
//! The request timeout is a layer of the router ([`crate::api::router`]).

use crate::config::HttpSettings;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// At the connection cap, connections idle at least this long are closed to make room.
/// The grace keeps a just-accepted connection alive until its request has been read.
const EVICT_AFTER_IDLE: Duration = Duration::from_millis(250);
/// How often the accept loop asks again for room while it waits at the cap.
const PRESSURE_INTERVAL: Duration = Duration::from_millis(100);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Least time between two warnings that the connection cap was reached.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (bounded by the request timeout) and returns.
pub async fn serve_until_stopped(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = pin!(shutdown);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let room = Room::new(settings.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout).keep_alive(true);
    loop {
        let (stream, permit) = tokio::select! {
            _ = &mut shutdown => break,
            next = next_connection(&listener, &room) => match next {
                Some(next) => next,
                None => continue,
            },
        };
        let connection = Connection {
            activity: Arc::new(Activity::new()),
            keep_alive_timeout: settings.keep_alive_timeout,
            pressure: room.pressure.clone(),
            stop: stop.clone(),
            _permit: permit,
        };
        connections.spawn(connection.serve(stream, http.clone(), router.clone()));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    tracing::info!(connections = connections.len(), "no longer accepting connections; finishing open requests");
    connections.wait().await;
}

/// The connection cap, and the signal asking idle connections to make room.
struct Room {
    permits: Arc<Semaphore>,
    max: usize,
    pressure: Arc<Notify>,
    last_warning: std::sync::Mutex<Option<Instant>>,
}

impl Room {
    fn new(max: usize) -> Room {
        Room {
            permits: Arc::new(Semaphore::new(max)),
            max,
            pressure: Arc::new(Notify::new()),
            last_warning: std::sync::Mutex::new(None),
        }
    }

    /// A place for one more connection, waiting (and evicting idle ones) at the cap.
    async fn acquire(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        self.warn_full();
        loop {
            self.pressure.notify_waiters();
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    if let Ok(permit) = permit {
                        return permit;
                    }
                }
                _ = tokio::time::sleep(PRESSURE_INTERVAL) => {}
            }
        }
    }

    fn warn_full(&self) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
            *last = Some(Instant::now());
            tracing::warn!(
                max_connections = self.max,
                "connection cap reached (LABELPORT_MAX_CONNECTIONS): new connections wait, idle ones are closed"
            );
        }
    }
}

/// Waits for room, then accepts one connection (`None` after an accept error).
async fn next_connection(listener: &TcpListener, room: &Room) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = room.acquire().await;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(e) => {
            tracing::warn!(error.message = %e, "failed to accept a connection");
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            None
        }
    }
}

/// What a connection is doing: requests in progress, and when bytes last moved.
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` of the last read or write, or of the end of a request.
    last_active_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), in_flight: AtomicUsize::new(0), last_active_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_active_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been idle; `None` while a request is in progress.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

/// Counts one request as in progress until dropped.
/// Also counts it for the process ([`crate::background::Request`]), which bulk work
/// reads to tell how busy the API is.
struct InFlight {
    activity: Arc<Activity>,
    _process: crate::background::Request,
}

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { activity: activity.clone(), _process: crate::background::Request::start() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One accepted connection and what it needs to decide when to close.
struct Connection {
    activity: Arc<Activity>,
    keep_alive_timeout: Duration,
    pressure: Arc<Notify>,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, http: hyper::server::conn::http1::Builder, router: Router) {
        let activity = self.activity.clone();
        // The peer address, for per-client limits (`api::throttle`).
        let peer = stream.peer_addr().ok().map(axum::extract::ConnectInfo);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&activity);
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            let router = router.clone();
            async move {
                let response = crate::background::answer(router.oneshot(request)).await;
                drop(in_flight);
                response
            }
        });
        let io = TokioIo::new(TrackedIo { inner: stream, activity: self.activity.clone() });
        let mut conn = pin!(http.serve_connection(io, service));
        let mut draining = false;
        loop {
            let idle = self.activity.idle_for();
            let wait = self.keep_alive_timeout.saturating_sub(idle.unwrap_or_default());
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        // Timeouts, resets and malformed requests: the client's doing.
                        tracing::debug!(error.message = %e, "connection closed with an error");
                    }
                    return;
                }
                _ = self.stop.cancelled(), if !draining => {
                    if self.activity.idle_for().is_some() {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ = self.pressure.notified() => {
                    if self.activity.idle_for().is_some_and(|idle| idle >= EVICT_AFTER_IDLE) {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if self.activity.idle_for().is_some_and(|idle| idle >= self.keep_alive_timeout) {
                        return;
                    }
                }
            }
        }
    }
}

/// A TCP stream that records in [`Activity`] each time bytes move.
struct TrackedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
