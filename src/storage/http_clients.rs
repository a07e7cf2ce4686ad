//! The process's HTTP clients for cloud targets, one per distinct configuration.
//!
//! The sync engine builds a target for each storage (and the API one for each
//! validation). A new `reqwest::Client` each time would open new connections (and TLS
//! sessions) for every sync, and reads and parses the system's whole certificate
//! directory (~150 files here, a few ms) before its first request. Shared clients keep
//! their connection pools across targets, syncs and auto-exports; each request still
//! carries the settings of its target. (Tested in `s3`: two targets, one connection.)

use super::ssrf::CheckedResolver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What distinguishes one client from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientSpec {
    /// Limit on a whole request (`None`: none).
    pub timeout: Option<Duration>,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Idle connections kept per host (`None`: reqwest's default).
    pub idle_per_host: Option<usize>,
    /// Connect only through [`CheckedResolver`] and never through a proxy, so every
    /// connection is checked against SSRF (user-supplied endpoints).
    pub ssrf_checked: bool,
    /// Ignore proxy settings (metadata endpoints on link-local addresses).
    pub no_proxy: bool,
}

impl ClientSpec {
    /// A client for a target's requests: no redirects, the given connect limit.
    pub const fn new(connect_timeout: Duration) -> ClientSpec {
        ClientSpec { timeout: None, connect_timeout, idle_per_host: None, ssrf_checked: false, no_proxy: false }
    }
}

/// The process's client for `spec`, built on first use. Redirects are never followed.
pub fn shared(spec: ClientSpec) -> reqwest::Result<reqwest::Client> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientSpec, reqwest::Client>>> = OnceLock::new();
    let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(client) = clients.get(&spec) {
        return Ok(client.clone());
    }
    let mut builder =
        reqwest::Client::builder().connect_timeout(spec.connect_timeout).redirect(reqwest::redirect::Policy::none());
    if let Some(timeout) = spec.timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(idle) = spec.idle_per_host {
        builder = builder.pool_max_idle_per_host(idle);
    }
    if spec.no_proxy || spec.ssrf_checked {
        builder = builder.no_proxy();
    }
    if spec.ssrf_checked {
        builder = builder.dns_resolver(Arc::new(CheckedResolver));
    }
    let client = builder.build()?;
    clients.insert(spec, client.clone());
    Ok(client)
}
