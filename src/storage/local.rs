//! Local files: one file per key in a directory under `LOCAL_FILES_DOCUMENT_ROOT`.
//!
//! Security: every operation opens the storage directory *through* a handle on the
//! document root with `cap-std`, which resolves the path inside that root only:
//! `..`, absolute symlinks and symlinks that lead out of the root are refused by
//! the kernel-assisted lookup, on every batch, not just at validation time. So a
//! directory swapped for an escaping symlink after validation is not followed.
//!
//! Atomicity: a new document is written to an unnamed file in the directory
//! (`O_TMPFILE`) and linked under its key only once complete, so it appears whole or
//! not at all, and a crash leaves nothing behind; this takes one directory update per
//! file instead of the three of create-then-rename, which is what makes bulk exports
//! fast. A document that replaces an existing one (or a file system without
//! `O_TMPFILE`) goes through a named temporary file renamed over the key, so readers
//! see the old or the new file, never a partial one. With `fsync` on, the file is
//! flushed before it is linked or renamed and the directory after it, so the new
//! content also survives a power cut; off by default, as a crash of the process alone
//! cannot lose linked or renamed data.

use super::spec::{ConfigError, DocumentStyle, FieldKind, FieldSpec, TargetConfig, TargetContext, TypeSpec};
use super::{keys::is_safe_key, local_path, MayPublish, Result, StorageError, StorageTarget};
use bytes::Bytes;
use cap_std::fs::Dir;
use futures::future::BoxFuture;
use std::fmt;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Prefix of temporary files; a crash can leave some behind, which
/// [`StorageTarget::remove_temporary_files`] clears.
pub const TEMP_PREFIX: &str = ".labelport-tmp-";

/// Temporary files younger than this may belong to a writer still at work (another
/// storage can share the directory), so cleanup leaves them alone.
const TEMP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Makes temporary names unique across every writer of this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The `localfiles` type (contract §3).
pub const SPEC: TypeSpec = TypeSpec {
    name: "localfiles",
    title: "Local files",
    model: "LocalFilesExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"path","label":"Absolute local path","required":true}]}]"#,
    fields: &[FieldSpec { name: "path", secret: false, kind: FieldKind::LocalPath }],
    response: &[
        "id",
        "type",
        "synchronizable",
        "path",
        "regex_filter",
        "use_blob_urls",
        "last_sync",
        "last_sync_count",
        "last_sync_job",
        "status",
        "traceback",
        "meta",
        "title",
        "description",
        "created_at",
        "can_delete_objects",
        "project",
    ],
    check: check_config,
    build: Some(build),
    checks_connection: false,
    masks_validate_errors: false,
    document: DocumentStyle::Indented,
};

/// The path rules of contract §3.12, with Label Studio's messages.
fn check_config<'a>(config: &'a TargetConfig, ctx: &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async move {
        local_path::check(config.path.as_deref(), &ctx.local_files).map(|_| ()).map_err(ConfigError::NonField)
    })
}

fn build(config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    let path = config.path.as_deref().unwrap_or_default();
    local_path::check(Some(path), &ctx.local_files).map_err(StorageError::Precondition)?;
    let root = local_path::document_root(&ctx.local_files);
    Ok(Arc::new(LocalFileSystem::new(root, Path::new(path), ctx.fsync)?))
}

/// A directory `relative` below `root`.
#[derive(Clone)]
pub struct LocalFileSystem {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    relative: PathBuf,
    fsync: bool,
    /// Random per target, so processes that reuse a pid never collide either.
    nonce: u32,
    /// Whether unnamed temporary files (`O_TMPFILE` + `linkat`) work here.
    tmpfile: std::sync::atomic::AtomicBool,
}

impl fmt::Display for LocalFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalFileSystem({})", self.inner.root.join(&self.inner.relative).display())
    }
}

fn io_error(target: &LocalFileSystem, what: &str, e: std::io::Error) -> StorageError {
    let location = target.inner.root.join(&target.inner.relative);
    match e.kind() {
        ErrorKind::NotFound => StorageError::NotFound(format!("{what}: {} does not exist", location.display())),
        ErrorKind::PermissionDenied => StorageError::PermissionDenied(format!(
            "{what}: permission denied or path escapes the document root ({})",
            location.display()
        )),
        ErrorKind::NotADirectory => {
            StorageError::Precondition(format!("{what}: {} is not a directory", location.display()))
        }
        _ => StorageError::Generic { target: target.to_string(), source: format!("{what}: {e}").into() },
    }
}

impl LocalFileSystem {
    /// The directory `path`, which must lie below `root`. Nothing is opened yet.
    pub fn new(root: impl Into<PathBuf>, path: &Path, fsync: bool) -> Result<LocalFileSystem> {
        let root = root.into();
        let relative = path
            .strip_prefix(&root)
            .map_err(|_| StorageError::PermissionDenied(format!("{} is not below {}", path.display(), root.display())))?
            .to_path_buf();
        if relative.as_os_str().is_empty() {
            return Err(StorageError::PermissionDenied("the storage path cannot be the document root itself".into()));
        }
        let tmpfile = std::sync::atomic::AtomicBool::new(true);
        Ok(LocalFileSystem { inner: Arc::new(Inner { root, relative, fsync, nonce: rand::random(), tmpfile }) })
    }

    /// Opens the storage directory inside the root, refusing any escape: the path is
    /// resolved (symlinks inside the root are fine), must still lie below the resolved
    /// root, and is then opened beneath the root handle, which refuses a symlink
    /// swapped in meanwhile.
    fn open(&self) -> Result<Dir> {
        let real_root =
            self.inner.root.canonicalize().map_err(|e| io_error(self, "resolving LOCAL_FILES_DOCUMENT_ROOT", e))?;
        let real = self
            .inner
            .root
            .join(&self.inner.relative)
            .canonicalize()
            .map_err(|e| io_error(self, "resolving the storage directory", e))?;
        let relative = match real.strip_prefix(&real_root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
            _ => {
                return Err(StorageError::PermissionDenied(format!(
                    "{self} resolves to {}, which is not inside LOCAL_FILES_DOCUMENT_ROOT",
                    real.display()
                )))
            }
        };
        let root = Dir::open_ambient_dir(&real_root, cap_std::ambient_authority())
            .map_err(|e| io_error(self, "opening LOCAL_FILES_DOCUMENT_ROOT", e))?;
        let dir = root.open_dir(&relative).map_err(|e| io_error(self, "opening the storage directory", e))?;
        if !dir.dir_metadata().map_err(|e| io_error(self, "reading the storage directory", e))?.is_dir() {
            return Err(StorageError::Precondition(format!("{self} is not a directory")));
        }
        Ok(dir)
    }

    fn temp_name(&self, key: &str) -> String {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{TEMP_PREFIX}{key}.{}.{:08x}.{n}", std::process::id(), self.inner.nonce)
    }

    /// Writes one document. With `may_publish`, asks it right before the document
    /// becomes visible (link or rename), after its bytes are written: a writer
    /// frozen while writing publishes nothing once it wakes without its lease.
    fn write_one(&self, dir: &Dir, key: &str, body: &[u8], may_publish: Option<&MayPublish>) -> Result<()> {
        if !is_safe_key(key) {
            return Err(StorageError::PermissionDenied(format!("invalid key {key:?}")));
        }
        let publish = || may_publish.is_none_or(|may| may());
        if self.inner.tmpfile.load(Ordering::Relaxed) {
            match self.write_unnamed(dir, key, body, &publish) {
                Ok(Unnamed::Linked) => return Ok(()),
                Ok(Unnamed::Exists(file)) => return self.replace_with(dir, key, &file),
                Ok(Unnamed::HeldBack) => return Err(super::held_back()),
                // No O_TMPFILE or no /proc here: use named temporary files from now on.
                Err(e) if is_unsupported(&e) => self.inner.tmpfile.store(false, Ordering::Relaxed),
                Err(e) => return Err(io_error(self, &format!("writing {key}"), e)),
            }
        }
        let temp = self.temp_name(key);
        let result = (|| -> std::io::Result<bool> {
            let mut file = dir.create(&temp)?;
            file.write_all(body)?;
            if self.inner.fsync {
                file.sync_all()?;
            }
            drop(file);
            if !publish() {
                return Ok(false);
            }
            dir.rename(&temp, dir, key)?;
            Ok(true)
        })();
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = dir.remove_file(&temp);
                Err(super::held_back())
            }
            Err(e) => {
                let _ = dir.remove_file(&temp);
                Err(io_error(self, &format!("writing {key}"), e))
            }
        }
    }

    /// Writes `body` to an unnamed file in `dir` and, if `publish()` still allows,
    /// links it as `key`. When `key` already exists, returns the still unnamed file
    /// for [`Self::replace_with`].
    fn write_unnamed(&self, dir: &Dir, key: &str, body: &[u8], publish: &dyn Fn() -> bool) -> std::io::Result<Unnamed> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::openat(dir, ".", OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::from(0o666))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(body)?;
        if self.inner.fsync {
            file.sync_all()?;
        }
        if !publish() {
            return Ok(Unnamed::HeldBack); // the unnamed file vanishes when closed
        }
        match link_unnamed(&file, dir, key) {
            Ok(()) => Ok(Unnamed::Linked),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Unnamed::Exists(file)),
            Err(e) => Err(e),
        }
    }

    /// Replaces `key` atomically with a complete unnamed file: link it under a
    /// temporary name, then rename that over the key.
    fn replace_with(&self, dir: &Dir, key: &str, file: &std::fs::File) -> Result<()> {
        let temp = self.temp_name(key);
        let result = link_unnamed(file, dir, &temp).and_then(|()| dir.rename(&temp, dir, key));
        if let Err(e) = result {
            let _ = dir.remove_file(&temp);
            return Err(io_error(self, &format!("writing {key}"), e));
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Dir) -> Result<()> {
        if self.inner.fsync {
            // The handle itself may be path-only; open the directory for reading to fsync it.
            let handle = dir.open(".").map_err(|e| io_error(self, "syncing the directory", e))?;
            handle.sync_all().map_err(|e| io_error(self, "syncing the directory", e))?;
        }
        Ok(())
    }

    /// Writes a batch with one directory handle; with `may_publish`, each file only
    /// while it answers `true`.
    async fn write_batch(&self, items: Vec<(String, Bytes)>, may_publish: Option<MayPublish>) -> Vec<Result<()>> {
        let this = self.clone();
        let n = items.len();
        let outcome = blocking(move || {
            // One directory handle for the batch: containment is re-checked per batch.
            let dir = match this.open() {
                Ok(dir) => dir,
                Err(e) => return Ok(Err(e)),
            };
            let results: Vec<Result<()>> =
                items.iter().map(|(key, body)| this.write_one(&dir, key, body, may_publish.as_ref())).collect();
            if let Err(e) = this.sync_dir(&dir) {
                return Ok(Err(e));
            }
            Ok(Ok(results))
        })
        .await;
        match outcome {
            Ok(Ok(results)) => results,
            Ok(Err(e)) | Err(e) => {
                let message = e.to_string();
                let permanent = e.is_permanent();
                (0..n)
                    .map(|_| {
                        Err(if permanent {
                            StorageError::Precondition(message.clone())
                        } else {
                            StorageError::Generic { target: "LocalFileSystem".into(), source: message.clone().into() }
                        })
                    })
                    .collect()
            }
        }
    }

    /// Deletes temporary files a crash may have left; returns how many.
    async fn remove_stale_temp_files(&self) -> Result<usize> {
        let this = self.clone();
        blocking(move || {
            let dir = this.open()?;
            let mut removed = 0;
            for entry in dir.entries().map_err(|e| io_error(&this, "listing the directory", e))? {
                let Ok(entry) = entry else { continue };
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
                    continue;
                }
                let age =
                    entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.into_std().elapsed().ok());
                if age.is_some_and(|age| age >= TEMP_MIN_AGE) && dir.remove_file(&name).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}

/// What became of a document written to an unnamed file.
enum Unnamed {
    /// Linked under its key.
    Linked,
    /// The key exists: the file, to rename over it.
    Exists(std::fs::File),
    /// Not published (the writer's lease ended).
    HeldBack,
}

/// Gives an unnamed (`O_TMPFILE`) file the name `name` in `dir`, through its
/// `/proc/self/fd` link (which needs no privilege, unlike `AT_EMPTY_PATH`).
fn link_unnamed(file: &std::fs::File, dir: &Dir, name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), dir, name, rustix::fs::AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

/// Errors that mean "this file system or system cannot do O_TMPFILE linking".
fn is_unsupported(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    matches!(
        errno,
        Some(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT | Errno::XDEV | Errno::PERM | Errno::NOSYS)
    )
}

/// Runs `f` on a blocking thread: a background one when called from a full sync's
/// bulk work, tokio's otherwise ([`crate::background`]).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    crate::background::join(crate::background::spawn_blocking(f))
        .await
        .unwrap_or_else(|e| Err(StorageError::Generic { target: "LocalFileSystem".into(), source: e.into() }))
}

#[async_trait::async_trait]
impl StorageTarget for LocalFileSystem {
    async fn validate(&self) -> Result<()> {
        let this = self.clone();
        blocking(move || {
            let dir = this.open()?;
            // Prove we can create and rename files here.
            let probe = this.temp_name("probe");
            dir.write(&probe, b"").map_err(|e| io_error(&this, "checking that the directory is writable", e))?;
            let _ = dir.remove_file(&probe);
            Ok(())
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || {
            let dir = this.open()?;
            this.write_one(&dir, &key, &body, None)?;
            this.sync_dir(&dir)
        })
        .await
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        self.write_batch(items, None).await
    }

    /// Asks before each file, so a worker paused mid-batch writes nothing more once
    /// it wakes without its lease.
    async fn put_many_guarded(&self, items: Vec<(String, Bytes)>, may_publish: MayPublish) -> Vec<Result<()>> {
        self.write_batch(items, Some(may_publish)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if !is_safe_key(key) {
            return Err(StorageError::PermissionDenied(format!("invalid key {key:?}")));
        }
        let (this, key) = (self.clone(), key.to_owned());
        blocking(move || {
            let dir = this.open()?;
            match dir.remove_file(&key) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(&this, &format!("deleting {key}"), e)),
            }
        })
        .await
    }

    async fn remove_temporary_files(&self) -> Result<usize> {
        self.remove_stale_temp_files().await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        self.sizes(vec![key.to_owned()]).await.pop().unwrap_or(Ok(None))
    }

    async fn sizes(&self, keys: Vec<String>) -> Vec<Result<Option<u64>>> {
        let this = self.clone();
        let n = keys.len();
        let outcome = blocking(move || {
            let dir = this.open()?;
            Ok(keys
                .iter()
                .map(|key| {
                    if !is_safe_key(key) {
                        return Err(StorageError::PermissionDenied(format!("invalid key {key:?}")));
                    }
                    match dir.symlink_metadata(key) {
                        Ok(m) if m.is_file() => Ok(Some(m.len())),
                        Ok(_) => Ok(None),
                        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(io_error(&this, &format!("checking {key}"), e)),
                    }
                })
                .collect::<Vec<_>>())
        })
        .await;
        match outcome {
            Ok(sizes) => sizes,
            Err(e) => {
                let message = e.to_string();
                (0..n).map(|_| Err(StorageError::Precondition(message.clone()))).collect()
            }
        }
    }

    async fn change_token(&self) -> Result<Option<String>> {
        use std::os::unix::fs::MetadataExt;
        let this = self.clone();
        blocking(move || {
            let path = this.inner.root.join(&this.inner.relative);
            let m = std::fs::metadata(&path).map_err(|e| io_error(&this, "reading the storage directory", e))?;
            Ok(Some(format!("{}:{}:{}.{}", m.dev(), m.ino(), m.mtime(), m.mtime_nsec())))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(fsync: bool) -> (tempfile::TempDir, LocalFileSystem, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        let dir = root_path.join("out");
        std::fs::create_dir(&dir).unwrap();
        let target = LocalFileSystem::new(&root_path, &dir, fsync).unwrap();
        (root, target, dir)
    }

    #[tokio::test]
    async fn local_files_pass_the_conformance_suite() {
        for fsync in [false, true] {
            let (_root, target, dir) = setup(fsync);
            let read = move |key: &str| std::fs::read(dir.join(key)).ok();
            super::super::conformance::run_all(&target, Some(&read)).await;
        }
    }

    #[tokio::test]
    async fn the_change_token_moves_when_someone_else_changes_the_directory() {
        let (_root, target, dir) = setup(false);
        target.put("1", Bytes::from("x")).await.unwrap();
        let token = target.change_token().await.unwrap();
        assert!(token.is_some());
        assert_eq!(target.change_token().await.unwrap(), token, "stable while nothing changes");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_file(dir.join("1")).unwrap();
        assert_ne!(target.change_token().await.unwrap(), token);
    }

    #[tokio::test]
    async fn a_symlink_to_a_directory_inside_the_root_is_written_through() {
        let (_root, _target, dir) = setup(false);
        let root = dir.parent().unwrap().to_path_buf();
        std::os::unix::fs::symlink(&dir, root.join("alias")).unwrap();
        let target = LocalFileSystem::new(&root, &root.join("alias"), false).unwrap();
        target.put("5", Bytes::from("via alias")).await.unwrap();
        assert_eq!(std::fs::read(dir.join("5")).unwrap(), b"via alias");
    }

    #[tokio::test]
    async fn new_files_are_linked_from_unnamed_temporary_files_and_replacements_renamed() {
        let (_root, target, dir) = setup(false);
        target.put("1", Bytes::from("first")).await.unwrap();
        assert!(target.inner.tmpfile.load(Ordering::Relaxed), "O_TMPFILE works on the test file system");
        target.put("1", Bytes::from("second, longer")).await.unwrap();
        assert_eq!(std::fs::read(dir.join("1")).unwrap(), b"second, longer");
        let mode = std::fs::metadata(dir.join("1")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o600, 0o600, "owner can read and write");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary names left");
    }

    #[tokio::test]
    async fn a_guarded_batch_stops_publishing_as_soon_as_the_guard_says_no() {
        for tmpfile in [true, false] {
            // Arrange: "1" exists; the guard allows two documents, then refuses.
            let (_root, target, dir) = setup(false);
            target.inner.tmpfile.store(tmpfile, Ordering::Relaxed);
            target.put("1", Bytes::from("old")).await.unwrap();
            let asked = Arc::new(AtomicU64::new(0));
            let counter = asked.clone();
            let guard: MayPublish = Arc::new(move || counter.fetch_add(1, Ordering::SeqCst) < 2);
            let items = ["2", "1", "3", "4"].map(|k| (k.to_owned(), Bytes::from(format!("new {k}")))).to_vec();

            // Act
            let results = target.put_many_guarded(items, guard).await;

            // Assert: the first two published, the rest held back, no temporary files left.
            let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
            assert_eq!(ok, [true, true, false, false], "tmpfile={tmpfile}");
            assert_eq!(std::fs::read(dir.join("1")).unwrap(), b"new 1");
            assert!(!dir.join("3").exists() && !dir.join("4").exists());
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no temporary names left");
        }
    }

    #[tokio::test]
    async fn no_temporary_files_remain_after_writes() {
        let (_root, target, dir) = setup(false);
        target.put_many((0..20).map(|i| (i.to_string(), Bytes::from("x"))).collect()).await;
        let names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names.len(), 20);
        assert!(names.iter().all(|n| !n.starts_with(TEMP_PREFIX)));
    }

    #[tokio::test]
    async fn a_directory_swapped_for_an_escaping_symlink_is_not_followed() {
        let (root, target, dir) = setup(false);
        let outside = tempfile::tempdir().unwrap();
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(outside.path(), &dir).unwrap();
        assert!(target.put("1", Bytes::from("x")).await.is_err());
        assert!(target.validate().await.is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing written outside the root");
        drop(root);
    }

    #[tokio::test]
    async fn stale_temporary_files_are_removed() {
        let (_root, target, dir) = setup(false);
        let stale = dir.join(format!("{TEMP_PREFIX}7.1.1"));
        std::fs::write(&stale, "partial").unwrap();
        std::fs::write(dir.join(format!("{TEMP_PREFIX}8.1.1")), "in flight").unwrap();
        std::fs::write(dir.join("7"), "kept").unwrap();
        let old = std::time::SystemTime::now() - TEMP_MIN_AGE - std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        assert_eq!(target.remove_temporary_files().await.unwrap(), 1, "only the old one goes");
        assert!(dir.join("7").exists());
        assert!(dir.join(format!("{TEMP_PREFIX}8.1.1")).exists(), "a fresh one may be another writer's");
    }

    #[test]
    fn a_path_outside_the_root_or_the_root_itself_is_refused() {
        assert!(LocalFileSystem::new("/data", Path::new("/tmp/x"), false).is_err());
        assert!(LocalFileSystem::new("/data", Path::new("/data"), false).is_err());
        assert!(LocalFileSystem::new("/data", Path::new("/data/x"), false).is_ok());
    }
}
