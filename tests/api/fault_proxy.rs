//! A reverse proxy in front of a storage emulator that injects faults: for a share of
//! the requests it answers an error status, or drops the connection without an
//! answer; it forwards the rest. It counts requests, and can be switched to refuse
//! everything (`down`), as a target that went away.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the proxy does with the `n`-th request (0-based).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forward it.
    Pass,
    /// Close the connection without answering.
    Drop,
    /// Answer with this status and body.
    Answer(u16, &'static str),
}

/// A running proxy.
pub struct FaultyProxy {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Requests seen so far.
    pub requests: Arc<AtomicU64>,
    /// While set, every request is dropped.
    pub down: Arc<AtomicBool>,
}

/// Starts a proxy to `upstream`, deciding each request's fate with `fault`.
pub async fn start(upstream: String, fault: impl Fn(u64) -> Fault + Send + Sync + 'static) -> FaultyProxy {
    // A dropped connection is a panic in the handler; keep those out of the output.
    std::panic::set_hook(Box::new(|info| {
        if !info.to_string().contains("fault injected") {
            eprintln!("{info}");
        }
    }));
    let requests = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let (counter, is_down, fault) = (requests.clone(), down.clone(), Arc::new(fault));
    let client = reqwest::Client::new();
    let handler = move |req: Request| {
        let (counter, is_down, fault, upstream, client) =
            (counter.clone(), is_down.clone(), fault.clone(), upstream.clone(), client.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let decision = if is_down.load(Ordering::SeqCst) { Fault::Drop } else { fault(n) };
            match decision {
                Fault::Drop => panic!("fault injected: connection dropped"),
                Fault::Answer(status, body) => {
                    return Response::builder().status(status).body(Body::from(body)).unwrap()
                }
                Fault::Pass => {}
            }
            forward(&client, &upstream, req).await
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    FaultyProxy { url, requests, down }
}

async fn forward(client: &reqwest::Client, upstream: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let mut request = client.request(parts.method.clone(), format!("{upstream}{uri}")).body(bytes);
    for (name, value) in parts.headers.iter() {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap();
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in headers.iter() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(body)).unwrap()
}
