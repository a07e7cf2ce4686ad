//! Object keys, as Label Studio names exported documents (contract §5.1, §5.2).

/// Annotation mode: the decimal annotation id, no extension (`11005`).
pub fn annotation_key(annotation_id: i64) -> String {
    annotation_id.to_string()
}

/// Task mode: the task id, with `.json` unless disabled (`42.json`).
pub fn task_key(task_id: i64, json_extension: bool) -> String {
    if json_extension {
        format!("{task_id}.json")
    } else {
        task_id.to_string()
    }
}

/// The task of a task-mode key (the inverse of [`task_key`]).
pub fn task_of_key(key: &str) -> Option<i64> {
    key.strip_suffix(".json").unwrap_or(key).parse().ok()
}

/// The object name of a document under a cloud prefix, as Label Studio forms it
/// (contract §6.3): `<prefix>/<key>` with the prefix verbatim (`a/` gives `a//11005`),
/// or the bare key without a prefix.
pub fn prefixed(prefix: Option<&str>, key: &str) -> String {
    match prefix {
        Some(p) => format!("{p}/{key}"),
        None => key.to_owned(),
    }
}

/// What a listing of the documents under `prefix` asks for: `<prefix>/`, or everything.
pub fn list_prefix(prefix: Option<&str>) -> Option<String> {
    prefix.map(|p| format!("{p}/"))
}

/// The key of a listed object name, if it is one of our documents under `prefix`
/// (the inverse of [`prefixed`]).
pub fn listed_key<'a>(prefix: Option<&str>, name: &'a str) -> Option<&'a str> {
    let key = match prefix {
        Some(p) => name.strip_prefix(p)?.strip_prefix('/')?,
        None => name,
    };
    is_safe_key(key).then_some(key)
}

/// Refuses a key that could leave the target's location (see [`is_safe_key`]).
pub fn check_key(key: &str) -> super::Result<()> {
    if is_safe_key(key) {
        Ok(())
    } else {
        Err(super::StorageError::PermissionDenied(format!("invalid key {key:?}")))
    }
}

/// Whether `key` is a plain file name: not empty, no separators, not `.`/`..`, no NUL.
pub fn is_safe_key(key: &str) -> bool {
    !key.is_empty() && key != "." && key != ".." && !key.contains(['/', '\\', '\0']) && key.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_key_gives_its_task_back() {
        assert_eq!(task_of_key(&task_key(42, true)), Some(42));
        assert_eq!(task_of_key(&task_key(42, false)), Some(42));
        assert_eq!(task_of_key("notes.txt"), None);
    }

    #[test]
    fn keys_are_bare_ids_or_task_json_names() {
        assert_eq!(annotation_key(11005), "11005");
        assert_eq!(task_key(42, true), "42.json");
        assert_eq!(task_key(42, false), "42");
    }

    #[test]
    fn prefixed_names_and_listed_keys_are_inverse() {
        assert_eq!(prefixed(None, "11005"), "11005");
        assert_eq!(prefixed(Some("a/"), "11005"), "a//11005");
        assert_eq!(list_prefix(Some("a/")).as_deref(), Some("a//"));
        for prefix in [None, Some("exports"), Some("a/"), Some("x/y")] {
            assert_eq!(listed_key(prefix, &prefixed(prefix, "42.json")), Some("42.json"), "{prefix:?}");
        }
        assert_eq!(listed_key(Some("exports"), "exports/sub/1"), None, "not one of ours");
        assert_eq!(listed_key(Some("exports"), "other/1"), None);
        assert_eq!(listed_key(Some("exp"), "exports/1"), None);
    }

    #[test]
    fn generated_keys_are_always_safe_and_traversal_is_not() {
        for id in [1, 42, i64::MAX] {
            assert!(is_safe_key(&annotation_key(id)));
            assert!(is_safe_key(&task_key(id, true)));
        }
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "a\0b"] {
            assert!(!is_safe_key(bad), "{bad:?}");
        }
    }
}
