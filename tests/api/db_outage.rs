//! PostgreSQL goes away while the server runs and a sync is in progress, then comes
//! back. A TCP proxy sits between labelport and the test PostgreSQL (the machine's
//! shared server is never restarted): while it is "down" it closes every open
//! connection and every new one at once, as a restarting server does.
//!
//! Meanwhile requests answer 503 with a JSON error and `Retry-After` (no hang, no
//! panic, no 500); afterwards the server answers again by itself and the sync job
//! resumes from its checkpoint and completes.

use crate::faults::{assert_directory_equals, wait_in_progress};
use crate::helpers::{assert_error, spawn_app_with, Backend, PgDatabase};
use crate::storages::{create_storage, imported_annotations, wait_sync, TIMEOUT};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `upstream` that can be switched off and on.
struct TcpProxy {
    port: u16,
    down: watch::Sender<bool>,
}

impl TcpProxy {
    async fn start(upstream: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, _) = watch::channel(false);
        let states = down.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = states.subscribe();
                if *state.borrow() {
                    continue; // closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        TcpProxy { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// The PostgreSQL host and port the tests use, from [`crate::helpers::postgres_admin_url`].
fn postgres_address() -> String {
    let url = url::Url::parse(&crate::helpers::postgres_admin_url()).unwrap();
    format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_mid_sync_answers_503_then_recovers_and_the_job_completes() {
    // Arrange: a server on a fresh database reached through the proxy, and a slowed
    // sync of several pages.
    let pg = PgDatabase::create().await;
    let proxy = TcpProxy::start(postgres_address()).await;
    let proxied = url::Url::parse(&pg.url()).unwrap();
    let mut proxied = proxied.clone();
    proxied.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = proxied.to_string();
        s.sync.batch_size = 50;
        s.sync.write_delay = Duration::from_millis(100);
        s.sync.lease = Duration::from_secs(2);
    })
    .await;
    let (project, ids) = imported_annotations(&app, "outage", 1000).await;
    let dir = app.files_root.join("outage");
    std::fs::create_dir_all(&dir).unwrap();
    let id = create_storage(&app, project, &dir.display().to_string(), json!({})).await["id"].as_i64().unwrap();
    wait_in_progress(&app, id, 100).await;

    // Act 1: the database goes away for a few seconds.
    proxy.set_down(true);
    let outage = Instant::now();
    let mut answered = 0;
    while outage.elapsed() < Duration::from_secs(6) {
        // Assert 1: 503 JSON with Retry-After, for reads, writes and the storage the
        // sync works on; a hang would fail on the client's timeout.
        for r in [
            app.req(reqwest::Method::GET, &format!("/api/projects/{project}/")).timeout(TIMEOUT).send(),
            app.req(reqwest::Method::GET, &format!("/api/storages/export/localfiles/{id}")).timeout(TIMEOUT).send(),
            app.req(reqwest::Method::POST, "/api/projects/").json(&json!({"title": "x"})).timeout(TIMEOUT).send(),
        ] {
            let r = r.await.expect("an answer, not a hang");
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
            assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()), "Retry-After seconds: {body}");
            answered += 1;
        }
    }
    assert!(answered >= 3);

    // Act 2: the database is back.
    proxy.set_down(false);

    // Assert 2: the server answers again by itself (503 until its pool reconnects).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = app.get(&format!("/api/projects/{project}/")).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_error(r, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Assert 3: the job resumed (not requested again) and completed; every document is there.
    let s = wait_sync(&app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["meta"]["attempts"], 1, "the job was resumed, not requested again: {s}");
    assert_directory_equals(&dir, &ids);
    drop(app);
    drop(pg);
}
