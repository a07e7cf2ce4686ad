//! Label Studio's rules for a local-files storage `path` (contract §3.12), with the
//! containment check done on the canonical path as well as lexically.

use crate::config::LocalFilesSettings;
use std::path::{Component, Path, PathBuf};

/// Normalises like Label Studio: trim, `\` → `/`, collapse `//` and `.`, resolve `..`
/// textually, drop the trailing slash. `None` stays `None`.
pub fn normalize(raw: Option<&str>) -> Option<String> {
    let raw = raw?.trim();
    if raw.is_empty() {
        return Some(String::new());
    }
    let slashed = raw.replace('\\', "/");
    let absolute = slashed.starts_with('/');
    let double = slashed.starts_with("//") && !slashed.starts_with("///");
    let mut parts: Vec<&str> = Vec::new();
    for part in slashed.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Some(match (absolute, double) {
        (true, true) => format!("//{joined}"),
        (true, false) => format!("/{joined}"),
        (false, _) if joined.is_empty() => ".".into(),
        (false, _) => joined,
    })
}

const SERVING_DISABLED: &str = "Serving local files from the host filesystem can be a security risk, so LOCAL_FILES_SERVING_ENABLED is disabled by default. To enable Local Files storage, set the LOCAL_FILES_SERVING_ENABLED environment variable to \"true\" and restart Label Studio. See https://labelstud.io/guide/storage.html#Local-storage for details.\n\n Community tip: create a \"mydata\" or \"label-studio-data\" directory next to the Label Studio command to auto-enable LOCAL_FILES_DOCUMENT_ROOT when the environment variables are unset.";

/// The configured root, normalised the same way as storage paths.
pub fn document_root(settings: &LocalFilesSettings) -> String {
    normalize(Some(&settings.document_root)).unwrap_or_else(|| "/".into())
}

/// Whether `ancestor` is a proper ancestor of `path`, comparing whole components.
fn is_proper_ancestor(ancestor: &Path, path: &Path) -> bool {
    path != ancestor && path.starts_with(ancestor)
}

/// Runs Label Studio's checks and returns the first failure, with Label Studio's
/// messages; then ours: the canonical (symlink-resolved) path must also lie strictly
/// inside the canonical root and be a directory. `path` must be normalised already.
///
/// Unlike Label Studio (contract §3.12), the enabled flag and the lexical containment
/// are checked before existence, so that the answers tell nothing about host paths
/// outside the root, or about any path while local files are disabled (issue #12).
pub fn check(path: Option<&str>, settings: &LocalFilesSettings) -> Result<PathBuf, String> {
    let root = document_root(settings);
    let p = match path {
        Some(p) if !p.trim().is_empty() => p,
        _ => return Err("Path must be set for Local Files storage".into()),
    };
    if !settings.serving_enabled {
        return Err(SERVING_DISABLED.into());
    }
    let example = format!("{}/dataset1", root.trim_end_matches('/'));
    if p == root {
        return Err(format!(
            "Absolute local path \"{p}\" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. Please add a subdirectory. For example: \"{example}\"."
        ));
    }
    let outside = || {
        format!(
            "Absolute local path \"{p}\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{example}\"."
        )
    };
    if !p.starts_with('/') || !is_proper_ancestor(Path::new(&root), Path::new(p)) {
        return Err(outside());
    }
    if p.contains('\0') || p.len() > 4096 || !Path::new(p).exists() {
        return Err(format!("Absolute local path \"{p}\" does not exist"));
    }
    // Beyond Label Studio: follow symlinks and check again.
    let (Ok(real_root), Ok(real_path)) = (Path::new(&root).canonicalize(), Path::new(p).canonicalize()) else {
        return Err(format!("Absolute local path \"{p}\" does not exist"));
    };
    if !is_proper_ancestor(&real_root, &real_path) {
        return Err(outside());
    }
    if !real_path.is_dir() {
        return Err(format!("Absolute local path \"{p}\" is not a directory"));
    }
    if real_path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(outside());
    }
    Ok(PathBuf::from(p))
}

/// The forms of a storage path compared for overlap: as written (normalised) and, if
/// it resolves, with every symlink followed.
fn forms(path: &str) -> Vec<PathBuf> {
    let written = PathBuf::from(path);
    match written.canonicalize() {
        Ok(real) if real != written => vec![written, real],
        _ => vec![written],
    }
}

/// Whether two local-files storage paths share a directory: the same one, or one a
/// parent of the other, comparing whole components (`/data/a` and `/data/ab` do not
/// overlap) of both the written and the symlink-resolved forms. Relative or empty
/// paths never overlap (they are refused by [`check`] anyway).
pub fn overlap(a: &str, b: &str) -> bool {
    if !a.starts_with('/') || !b.starts_with('/') {
        return false;
    }
    let (a, b) = (forms(a), forms(b));
    a.iter().any(|x| b.iter().any(|y| x.starts_with(y) || y.starts_with(x)))
}

/// Why a path was refused for overlapping another organization's storage.
pub fn taken_message(path: &str) -> String {
    format!(
        "Absolute local path \"{path}\" is, contains or lies inside a directory used by a storage of another \
         organization. Please choose another directory."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(root: &Path) -> LocalFilesSettings {
        LocalFilesSettings { serving_enabled: true, document_root: root.display().to_string() }
    }

    #[test]
    fn normalization_matches_label_studio() {
        let cases = [
            (" /data/labels/x/ ", "/data/labels/x"),
            ("\\data\\labels\\x\\", "/data/labels/x"),
            ("/root/a/../b/", "/root/b"),
            ("/a//b/./c", "/a/b/c"),
            ("/../../etc", "/etc"),
            ("//server/share", "//server/share"),
            ("relative/dir/", "relative/dir"),
            ("   ", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(Some(raw)).as_deref(), Some(want), "normalize({raw:?})");
        }
        assert_eq!(normalize(None), None);
    }

    #[test]
    fn checks_use_label_studios_messages_and_look_at_the_disk_last() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let r = root.display();
        std::fs::create_dir(root.join("ok")).unwrap();
        let s = settings(&root);
        assert_eq!(check(None, &s).unwrap_err(), "Path must be set for Local Files storage");
        assert_eq!(check(Some("  "), &s).unwrap_err(), "Path must be set for Local Files storage");
        let missing = format!("{r}/nope");
        assert_eq!(check(Some(&missing), &s).unwrap_err(), format!("Absolute local path \"{missing}\" does not exist"));
        assert!(check(Some(&r.to_string()), &s)
            .unwrap_err()
            .contains("cannot be the same as LOCAL_FILES_DOCUMENT_ROOT"));
        assert!(check(Some("/tmp"), &s).unwrap_err().contains("must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT"));
        assert!(check(Some("relative/x"), &s)
            .unwrap_err()
            .contains("must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT"));
        assert!(check(Some("/no/such/dir"), &s)
            .unwrap_err()
            .contains("must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT"));
        assert!(check(Some(&format!("{r}/ok")), &s).is_ok());
        let off = LocalFilesSettings { serving_enabled: false, ..s.clone() };
        for p in [format!("{r}/ok"), missing, r.to_string(), "/tmp".into(), "relative/x".into()] {
            assert!(
                check(Some(&p), &off).unwrap_err().starts_with("Serving local files from the host filesystem"),
                "{p}"
            );
        }
    }

    #[test]
    fn a_symlink_inside_the_root_that_points_outside_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
        let err = check(Some(&format!("{}/escape", root.display())), &settings(&root)).unwrap_err();
        assert!(err.contains("must be a subdirectory"), "{err}");
    }

    #[test]
    fn a_regular_file_is_not_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        let err = check(Some(&format!("{}/file", root.display())), &settings(&root)).unwrap_err();
        assert!(err.ends_with("is not a directory"), "{err}");
    }

    #[test]
    fn the_root_prefix_must_match_whole_components() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("labels")).unwrap();
        std::fs::create_dir_all(base.join("labels-evil")).unwrap();
        let s = settings(&base.join("labels"));
        let err = check(Some(&format!("{}/labels-evil", base.display())), &s).unwrap_err();
        assert!(err.contains("must be a subdirectory"), "{err}");
    }

    #[test]
    fn overlap_compares_whole_components_of_written_and_resolved_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        for dir in ["a/deep", "ab", "other"] {
            std::fs::create_dir_all(base.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink(base.join("a"), base.join("other/link")).unwrap();
        let p = |rel: &str| format!("{}/{rel}", base.display());
        let cases = [
            ("a", "a", true, "same directory"),
            ("a", "a/deep", true, "child"),
            ("a/deep", "a", true, "parent"),
            ("a", "ab", false, "sibling sharing a prefix"),
            ("other/link", "a", true, "symlink to it"),
            ("other/link/deep", "a", true, "through a symlink"),
            ("other", "a", false, "unrelated"),
            ("a/missing", "a", true, "a child that does not exist yet"),
        ];
        for (x, y, want, why) in cases {
            assert_eq!(overlap(&p(x), &p(y)), want, "{why}: {x} vs {y}");
            assert_eq!(overlap(&p(y), &p(x)), want, "{why} (swapped)");
        }
        assert!(!overlap("relative", "relative"));
    }
}
