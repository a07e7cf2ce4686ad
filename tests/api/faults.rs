//! Faults of a local-files target during a sync: the disk fills up, the directory
//! turns read-only or disappears. The sync ends `failed` with the cause and the
//! documents not written, the server keeps serving, and once the fault is gone the
//! next sync completes with every document whole and no temporary file left.
//!
//! Faults are real: a size-limited tmpfs mounted on the storage directory (root
//! bypasses permission bits, so read-only is a read-only remount). Mounting needs
//! root (or CAP_SYS_ADMIN); without it these tests fail, they do not skip.

use crate::backend_fn_tests;
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::storages::{create_storage, get_storage, imported_annotations, json_of, wait_sync, LF, POLL, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

backend_fn_tests!(
    a_full_disk_fails_the_sync_with_enospc_and_the_sync_after_freeing_space_completes,
    a_directory_made_read_only_mid_sync_fails_the_sync_and_the_next_sync_completes,
    a_directory_removed_mid_sync_fails_the_sync_with_not_found_and_the_next_sync_completes,
);

/// Annotations of each test project: several pages of [`BATCH`].
const ANNOTATIONS: usize = 240;
const BATCH: i64 = 20;

/// A tmpfs mounted on a directory, unmounted on drop (also when the test fails).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        mount(&["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"], path);
        Tmpfs { path: path.to_owned() }
    }

    /// `mount -o remount,<options>`: `size=…` frees space, `ro`/`rw` flips writability.
    /// Retried while busy: a read-only remount fails while a file is open for writing,
    /// and the sync opens one per document.
    fn remount(&self, options: &str) {
        let args = ["-o".to_owned(), format!("remount,{options}")];
        for _ in 0..200 {
            let out = Command::new("mount").args(&args).arg(&self.path).output().expect("run mount(8)");
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        mount(&[&args[0], &args[1]], &self.path);
    }
}

fn mount(args: &[&str], path: &Path) {
    let out = Command::new("mount").args(args).arg(path).output().expect("run mount(8)");
    assert!(
        out.status.success(),
        "the fault tests mount a tmpfs and need root or CAP_SYS_ADMIN: `mount {} {}` failed: {}",
        args.join(" "),
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file the server still holds open cannot keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A server whose syncs go page by page (`slow`: with a pause before each batch).
async fn app(backend: Backend, slow: bool) -> TestApp {
    spawn_app_with(backend, |s| {
        s.sync.batch_size = BATCH;
        s.sync.write_delay = Duration::from_millis(if slow { 50 } else { 0 });
    })
    .await
}

/// Waits until the storage's running sync has written at least `n` documents.
pub async fn wait_in_progress(app: &TestApp, id: i64, n: i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = get_storage(app, id).await;
        if s["status"] == "in_progress" && s["last_sync_count"].as_i64().unwrap_or(0) >= n {
            return;
        }
        assert_ne!(s["status"], "completed", "the sync ended before the fault; slow it down");
        assert!(Instant::now() < deadline, "the sync never got going: {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Checks a sync that stopped on a fault: `failed`, its traceback naming `cause` and
/// at least one document that is not in `dir`.
fn assert_failed_naming(s: &Value, cause: &str, dir: &Path) {
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains(cause), "the traceback names {cause:?}: {traceback}");
    assert!(traceback.contains("document(s) could not be written"), "{traceback}");
    let missing = traceback
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>();
    assert!(!missing.is_empty(), "the traceback lists the documents not written: {traceback}");
    for key in missing {
        assert!(!dir.join(key).exists(), "{key} is listed as not written but exists");
    }
}

/// The server still answers reads and writes.
async fn assert_still_serving(app: &TestApp, project: i64) {
    let r = app.get(&format!("/api/projects/{project}/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.post(&format!("/api/projects/{project}/import"), &json!([{"text": "during the fault"}])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// Requests a sync and waits for it to complete; then the directory holds exactly
/// one whole document per annotation and no temporary file.
async fn sync_again_and_assert_complete(app: &TestApp, id: i64, dir: &Path, ids: &[i64]) {
    json_of(app.post(&format!("{LF}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    let s = wait_sync(app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_directory_equals(dir, ids);
}

/// `dir` holds exactly one whole document per id in `ids`, and no temporary file.
pub fn assert_directory_equals(dir: &Path, ids: &[i64]) {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let stray: Vec<&String> = names.iter().filter(|n| n.starts_with(".labelport-tmp-")).collect();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
    let mut expected: Vec<String> = ids.iter().map(i64::to_string).collect();
    expected.sort();
    assert_eq!(names, expected, "one document per annotation, nothing else");
    for name in &names {
        let doc: Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap())
            .unwrap_or_else(|e| panic!("{name} is not whole JSON: {e}"));
        assert_eq!(doc["id"].to_string(), *name);
    }
}

async fn a_full_disk_fails_the_sync_with_enospc_and_the_sync_after_freeing_space_completes(backend: Backend) {
    // Arrange: a directory with room for a few dozen of the documents.
    let app = app(backend, false).await;
    let (project, ids) = imported_annotations(&app, "disk full", ANNOTATIONS).await;
    let dir = app.files_root.join("full");
    let disk = Tmpfs::mount(&dir, "160k");

    // Act: the sync on creation runs into the full disk.
    let id = create_storage(&app, project, &dir.display().to_string(), json!({})).await["id"].as_i64().unwrap();
    let s = wait_sync(&app, id).await;

    // Assert: failed with ENOSPC and the documents not written; what is there is whole.
    assert_failed_naming(&s, "No space left on device", &dir);
    let written = std::fs::read_dir(&dir).unwrap().count();
    assert!(written > 0 && written < ANNOTATIONS, "some documents fit: {written}");
    assert_still_serving(&app, project).await;

    // Act 2: space is freed; the next sync completes and nothing is missing.
    disk.remount("size=16m");
    sync_again_and_assert_complete(&app, id, &dir, &ids).await;
    drop(disk);
}

async fn a_directory_made_read_only_mid_sync_fails_the_sync_and_the_next_sync_completes(backend: Backend) {
    // Arrange
    let app = app(backend, true).await;
    let (project, ids) = imported_annotations(&app, "read-only", ANNOTATIONS).await;
    let dir = app.files_root.join("ro");
    let disk = Tmpfs::mount(&dir, "16m");
    let id = create_storage(&app, project, &dir.display().to_string(), json!({})).await["id"].as_i64().unwrap();

    // Act: the directory turns read-only while the sync writes.
    wait_in_progress(&app, id, 2 * BATCH).await;
    disk.remount("ro");
    let s = wait_sync(&app, id).await;

    // Assert
    assert_failed_naming(&s, "Read-only file system", &dir);
    assert_still_serving(&app, project).await;

    // Act 2: writable again.
    disk.remount("rw");
    sync_again_and_assert_complete(&app, id, &dir, &ids).await;
    drop(disk);
}

async fn a_directory_removed_mid_sync_fails_the_sync_with_not_found_and_the_next_sync_completes(backend: Backend) {
    // Arrange
    let app = app(backend, true).await;
    let (project, ids) = imported_annotations(&app, "removed", ANNOTATIONS).await;
    let dir = app.files_root.join("removed");
    std::fs::create_dir_all(&dir).unwrap();
    let id = create_storage(&app, project, &dir.display().to_string(), json!({})).await["id"].as_i64().unwrap();

    // Act
    wait_in_progress(&app, id, 2 * BATCH).await;
    // The sync keeps adding files while the tree is removed: removal may find a new
    // one in a directory it has just emptied; try again, as a user's `rm -rf` would.
    let removal = Instant::now() + TIMEOUT;
    while let Err(e) = std::fs::remove_dir_all(&dir) {
        assert!(e.kind() == std::io::ErrorKind::DirectoryNotEmpty && Instant::now() < removal, "{e}");
    }
    let s = wait_sync(&app, id).await;

    // Assert: the cause says the directory does not exist, and it is not recreated.
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains(&format!("{} does not exist", dir.display())), "{traceback}");
    assert!(!dir.exists(), "the directory is not recreated");
    assert_still_serving(&app, project).await;

    // Act 2: the directory is back (empty).
    std::fs::create_dir_all(&dir).unwrap();
    sync_again_and_assert_complete(&app, id, &dir, &ids).await;
}
