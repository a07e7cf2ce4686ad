//! `labelport storages …`: export storages of a running server, through its public
//! HTTP API (the same one the SDK uses), with the SDK's `LABEL_STUDIO_URL` and
//! `LABEL_STUDIO_API_KEY`.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, global = true, env = "LABEL_STUDIO_URL", default_value = "http://localhost:8080")]
    pub url: String,
    /// An API token: a legacy token, or a personal access token (JWT refresh token).
    #[arg(long, global = true, env = "LABEL_STUDIO_API_KEY", hide_env_values = true)]
    pub token: Option<String>,
}

/// `labelport storages …`
#[derive(Debug, Subcommand)]
pub enum StoragesCommand {
    /// List export storages (of one project, or of every project).
    List {
        /// Only this project's storages.
        #[arg(long)]
        project: Option<i64>,
    },
    /// Start a sync of one storage (ids are per type).
    Sync {
        /// Storage type, as in the API: localfiles, s3, gcs, azure, redis.
        #[arg(value_name = "TYPE")]
        storage_type: String,
        /// Storage id.
        id: i64,
        /// Walk every annotation instead of applying the change feed.
        #[arg(long)]
        full: bool,
        /// Wait for the sync to end, showing progress; exit non-zero when it fails.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs a `storages` command.
pub async fn run(remote: Remote, command: StoragesCommand) -> anyhow::Result<()> {
    let client = Client::connect(remote).await?;
    match command {
        StoragesCommand::List { project } => list(&client, project).await,
        StoragesCommand::Sync { storage_type, id, full, wait } => sync(&client, &storage_type, id, full, wait).await,
    }
}

/// An authenticated client of the server's API.
struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Client {
    async fn connect(remote: Remote) -> anyhow::Result<Client> {
        let token = remote
            .token
            .filter(|t| !t.trim().is_empty())
            .context("no API token: pass --token or set LABEL_STUDIO_API_KEY")?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let base = remote.url.trim_end_matches('/').to_owned();
        // Like the SDK: a JWT is a personal access token, exchanged for an access token.
        let auth = if token.split('.').count() == 3 {
            let r = http
                .post(format!("{base}/api/token/refresh/"))
                .json(&json!({ "refresh": token.trim() }))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
            let body = answer(r).await.context("exchanging the personal access token failed")?;
            let access = body["access"].as_str().context("the token refresh answered no access token")?;
            format!("Bearer {access}")
        } else {
            format!("Token {}", token.trim())
        };
        Ok(Client { http, base, auth })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).header("Authorization", &self.auth);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        answer(r).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }
}

/// The JSON body of a 2xx answer; otherwise an error with the server's message.
async fn answer(r: reqwest::Response) -> anyhow::Result<Value> {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&text).context("the server answered something that is not JSON");
    }
    let detail = serde_json::from_str::<Value>(&text).ok().map_or_else(|| text.clone(), |v| error_text(&v));
    match status {
        StatusCode::UNAUTHORIZED => bail!("the server refused the token ({status}): {detail}"),
        _ => bail!("the server answered {status}: {detail}"),
    }
}

/// The readable part of a Label Studio error body.
fn error_text(v: &Value) -> String {
    if let Some(errors) = v["validation_errors"].as_object() {
        let parts: Vec<String> = errors
            .iter()
            .map(|(field, msgs)| {
                let msgs: Vec<&str> = msgs.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                format!("{field}: {}", msgs.join(" "))
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    v["detail"].as_str().map_or_else(|| v.to_string(), str::to_owned)
}

async fn project_ids(client: &Client) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    for page in 1.. {
        let body = client.get(&format!("/api/projects/?page={page}&page_size=100")).await?;
        let results = body["results"].as_array().cloned().unwrap_or_default();
        ids.extend(results.iter().filter_map(|p| p["id"].as_i64()));
        if body["next"].is_null() || results.is_empty() {
            break;
        }
    }
    Ok(ids)
}

async fn list(client: &Client, project: Option<i64>) -> anyhow::Result<()> {
    let projects = match project {
        Some(p) => {
            client.get(&format!("/api/projects/{p}/")).await.with_context(|| format!("project {p}"))?;
            vec![p]
        }
        None => project_ids(client).await?,
    };
    let mut rows = Vec::new();
    for p in projects {
        let storages = client.get(&format!("/api/storages/export?project={p}")).await?;
        rows.extend(storages.as_array().into_iter().flatten().map(row));
    }
    print!("{}", table(&rows));
    Ok(())
}

const HEADERS: [&str; 8] = ["TYPE", "ID", "PROJECT", "TITLE", "TARGET", "STATUS", "LAST SYNC", "LAST COUNT"];

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a storage writes: path, bucket/prefix, container/prefix or host:port/db.
fn target(s: &Value) -> String {
    let with_prefix = |place: &Value| match s["prefix"].as_str().filter(|p| !p.is_empty()) {
        Some(prefix) => format!("{}/{prefix}", text(place)),
        None => text(place),
    };
    match s["type"].as_str().unwrap_or_default() {
        "localfiles" => text(&s["path"]),
        "s3" | "gcs" => with_prefix(&s["bucket"]),
        "azure" => with_prefix(&s["container"]),
        "redis" => format!("{}:{}/{}", text(&s["host"]), text(&s["port"]), text(&s["db"])),
        _ => "-".into(),
    }
}

fn row(s: &Value) -> [String; 8] {
    [
        text(&s["type"]),
        text(&s["id"]),
        text(&s["project"]),
        text(&s["title"]),
        target(s),
        text(&s["status"]),
        text(&s["last_sync"]),
        text(&s["last_sync_count"]),
    ]
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[[String; 8]]) -> String {
    let mut widths = HEADERS.map(|h| h.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(HEADERS.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

const FINAL: [&str; 3] = ["completed", "completed_with_errors", "failed"];

async fn sync(client: &Client, storage_type: &str, id: i64, full: bool, wait: bool) -> anyhow::Result<()> {
    let path = format!("/api/storages/export/{storage_type}/{id}");
    let query = if full { "?full=true" } else { "" };
    let started = client.call(Method::POST, &format!("{path}/sync{query}"), Some(json!({}))).await?;
    println!(
        "{storage_type} storage {id}: sync {} ({})",
        text(&started["status"]),
        if full { "full" } else { "incremental" }
    );
    if !wait {
        return Ok(());
    }
    // No length until the first ping tells the total, so the bar never shows a false 0/0 "done".
    let bar = ProgressBar::no_length();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} documents, {rate} {msg}")
            .expect("the progress template is valid")
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            }),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let storage = loop {
        let s = client.get(&path).await?;
        let status = s["status"].as_str().unwrap_or_default().to_owned();
        // The sync endpoint answers after the storage is queued, so a final status is this sync's.
        let finished = FINAL.contains(&status.as_str());
        if status == "in_progress" {
            if let Some(total) = s["meta"]["total_annotations"].as_u64() {
                bar.set_length(total);
            }
            if let Some(done) = s["last_sync_count"].as_u64() {
                bar.set_position(done);
            }
        }
        bar.set_message(status.clone());
        if finished {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    let status = storage["status"].as_str().unwrap_or_default();
    let count = text(&storage["last_sync_count"]);
    let written = text(&storage["meta"]["files_written"]);
    match status {
        "completed" => {
            println!("{storage_type} storage {id}: completed, {count} annotation(s), {written} document(s) written");
            Ok(())
        }
        _ => {
            eprintln!("{storage_type} storage {id}: {status}");
            if let Some(tb) = storage["traceback"].as_str() {
                eprintln!("{tb}");
            }
            bail!("the sync of {storage_type} storage {id} ended {status}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_column_shows_where_each_type_writes() {
        assert_eq!(target(&json!({"type": "localfiles", "path": "/data/out"})), "/data/out");
        assert_eq!(target(&json!({"type": "s3", "bucket": "b", "prefix": "exports"})), "b/exports");
        assert_eq!(target(&json!({"type": "gcs", "bucket": "b", "prefix": ""})), "b");
        assert_eq!(target(&json!({"type": "azure", "container": "c", "prefix": null})), "c");
        assert_eq!(target(&json!({"type": "redis", "host": "h", "port": "6380", "db": 2})), "h:6380/2");
    }

    #[test]
    fn a_table_aligns_its_columns() {
        let rows = [["localfiles", "1", "2", "-", "/x", "completed", "-", "3"].map(String::from)];
        let out = table(&rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].find("ID"), lines[1].find('1'));
        assert_eq!(lines[0].find("STATUS"), lines[1].find("completed"));
    }
}
