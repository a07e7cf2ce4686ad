//! `labelport storages …` (the real binary) against a running test server, and
//! `LABELPORT_LOG_FORMAT=json` (issue 10).

use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::storages::{annotated_project, create_storage, files_in, get_storage, make_dir, wait_completed};
use labelport::sync::ExecutionOutcome;
use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary, with no SDK variables or log noise inherited from the test's environment.
fn labelport() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelport"));
    for var in ["LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "DATABASE_URL", "LABELPORT_LOG_FORMAT"] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

fn storages_cmd(app: &TestApp, args: &[&str]) -> Command {
    let mut cmd = labelport();
    cmd.arg("storages").args(args).args(["--url", &app.address, "--token", &app.token]);
    cmd
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the labelport binary runs")).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storages_list_prints_a_table_with_the_target_and_status_of_each_storage() {
    // Arrange
    let app = spawn_app(Backend::Sqlite).await;
    let (project, _, _) = annotated_project(&app, &["a", "b"]).await;
    let (_, p) = make_dir(&app, "listed");
    let id = create_storage(&app, project, &p, serde_json::json!({"title": "nightly"})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let other = app.create_project("empty").await;

    // Act: once with flags and a project, once with the SDK's variables and no project.
    let one = output(storages_cmd(&app, &["list", "--project", &project.to_string()])).await;
    let mut by_env = labelport();
    by_env.args(["storages", "list"]).env("LABEL_STUDIO_URL", &app.address).env("LABEL_STUDIO_API_KEY", &app.token);
    let all = output(by_env).await;
    let empty = output(storages_cmd(&app, &["list", "--project", &other.to_string()])).await;

    // Assert
    for out in [&one, &all] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        for header in ["TYPE", "ID", "PROJECT", "TITLE", "TARGET", "STATUS", "LAST SYNC", "LAST COUNT"] {
            assert!(lines[0].contains(header), "{stdout}");
        }
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[..6], ["localfiles", &id.to_string(), &project.to_string(), "nightly", &p, "completed"]);
        assert_eq!(cells.last(), Some(&"2"), "{stdout}");
    }
    assert!(empty.status.success());
    assert_eq!(text(&empty.stdout).lines().count(), 1, "only the header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storages_sync_wait_exits_zero_when_the_sync_completes() {
    // Arrange
    let app = spawn_app(Backend::Sqlite).await;
    let (project, _, _) = annotated_project(&app, &["a", "b", "c"]).await;
    let (dir, p) = make_dir(&app, "waited");
    let id = create_storage(&app, project, &p, serde_json::json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    std::fs::remove_file(dir.join(&files_in(&dir)[0])).unwrap();

    // Act
    let out = output(storages_cmd(&app, &["sync", "localfiles", &id.to_string(), "--full", "--wait"])).await;

    // Assert
    assert!(out.status.success(), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("completed, 3 annotation(s), 1 document(s) written"), "{}", text(&out.stdout));
    assert_eq!(files_in(&dir).len(), 3);
    assert_eq!(get_storage(&app, id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storages_sync_wait_exits_non_zero_with_the_traceback_when_the_sync_fails() {
    // Arrange: no background worker, so the directory goes between queueing and running.
    let app = spawn_app_with(Backend::Sqlite, |s| s.sync.run_worker = false).await;
    let engine = labelport::startup::engine(
        &app.state.db,
        &app.state.settings,
        &app.state.secrets,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let work = || async { while engine.try_execute_task().await.unwrap() == ExecutionOutcome::Worked {} };
    let (project, _, _) = annotated_project(&app, &["a"]).await;
    let (dir, p) = make_dir(&app, "doomed");
    let id = create_storage(&app, project, &p, serde_json::json!({})).await["id"].as_i64().unwrap();
    work().await;
    let attempts = wait_completed(&app, id).await["meta"]["attempts"].as_i64().unwrap();

    // Act
    let mut cmd = storages_cmd(&app, &["sync", "localfiles", &id.to_string(), "--wait"]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_storage(&app, id).await["meta"]["attempts"].as_i64() == Some(attempts) {
        assert!(Instant::now() < deadline, "the CLI never requested the sync");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
    work().await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();

    // Assert
    let storage = get_storage(&app, id).await;
    assert_eq!(storage["status"], "failed", "{storage}");
    let traceback = storage["traceback"].as_str().unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(traceback), "the traceback {traceback:?} is printed: {stderr}");
    assert!(stderr.contains("ended failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storages_commands_without_a_token_or_with_a_wrong_one_fail_with_a_message() {
    // Arrange
    let app = spawn_app(Backend::Sqlite).await;
    let mut no_token = labelport();
    no_token.args(["storages", "list", "--url", &app.address]);
    let mut wrong = labelport();
    wrong.args(["storages", "list", "--url", &app.address, "--token", "not-a-token"]);

    // Act
    let (no_token, wrong) = (output(no_token).await, output(wrong).await);

    // Assert
    assert!(!no_token.status.success());
    assert!(text(&no_token.stderr).contains("LABEL_STUDIO_API_KEY"), "{}", text(&no_token.stderr));
    assert!(!wrong.status.success());
    assert!(text(&wrong.stderr).contains("refused the token"), "{}", text(&wrong.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_log_line_is_a_json_object() {
    // Arrange
    let data = tempfile::tempdir().unwrap();
    let mut cmd = labelport();
    cmd.args(["serve", "--port", "0", "--data-dir"])
        .arg(data.path())
        .env("LABELPORT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("LABELPORT_SECRET_KEY", crate::helpers::TEST_SECRET_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();

    // Act: read until the server says it listens.
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let done = line.contains("labelport is listening");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Assert
    assert!(lines.iter().any(|l| l.contains("labelport is listening")), "{lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}
