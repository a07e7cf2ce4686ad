//! The SQLite database files are readable by their owner only (issue #12): they hold
//! every project's data and the hashes of every token.
//!
//! The database file is created with mode 0600 before SQLite opens it, whatever the
//! umask; SQLite gives its `-wal`, `-shm` and `-journal` files the database file's
//! mode. Files left by older versions with wider modes are tightened at start.

use std::io;
use std::path::PathBuf;

/// Files SQLite keeps beside the database.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The file of a `sqlite://path?options` URL; `None` for in-memory databases.
pub(super) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:") && !url.contains("mode=memory")).then(|| PathBuf::from(path))
}

/// Creates the database file of `url` with mode 0600 if missing and sets 0600 on it
/// and on its side files if they exist.
pub(super) fn restrict_sqlite_files(url: &str) -> io::Result<()> {
    let Some(path) = sqlite_path(url) else { return Ok(()) };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                return Ok(()); // SQLite reports the missing directory itself.
            }
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let mut files = vec![path.clone()];
        files.extend(SIDE_FILES.iter().map(|suffix| PathBuf::from(format!("{}{suffix}", path.display()))));
        for file in files.iter().filter(|f| f.exists()) {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_a_sqlite_url_is_found_and_memory_databases_have_none() {
        assert_eq!(sqlite_path("sqlite:///data/db.sqlite?mode=rwc"), Some(PathBuf::from("/data/db.sqlite")));
        assert_eq!(sqlite_path("sqlite://rel/labelport.db"), Some(PathBuf::from("rel/labelport.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://file?mode=memory"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}
