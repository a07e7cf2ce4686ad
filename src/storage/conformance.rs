//! The behaviour every storage target must show. Each function tests one thing and
//! starts by removing its own fixtures; [`run_all`] calls them in order. A target's
//! tests call `run_all` with a way to read a stored document back, if it has one.

use super::StorageTarget;
use bytes::Bytes;

/// Reads the raw stored bytes of a key, bypassing the target (e.g. from disk).
pub type Reader<'a> = &'a (dyn Fn(&str) -> Option<Vec<u8>> + Sync);

/// Runs every conformance check.
pub async fn run_all(target: &dyn StorageTarget, read: Option<Reader<'_>>) {
    validate_succeeds(target).await;
    put_exists_delete(target, read).await;
    put_replaces_the_whole_document(target, read).await;
    deleting_a_missing_key_succeeds(target).await;
    unsafe_keys_are_refused(target).await;
    put_many_reports_each_item(target, read).await;
    concurrent_puts_leave_one_complete_document(target, read).await;
}

/// A freshly configured target validates.
pub async fn validate_succeeds(target: &dyn StorageTarget) {
    target.validate().await.unwrap_or_else(|e| panic!("{target}: validate failed: {e}"));
}

/// A put document exists (with the same bytes) until it is deleted.
pub async fn put_exists_delete(target: &dyn StorageTarget, read: Option<Reader<'_>>) {
    target.delete("101").await.unwrap();
    assert!(!target.exists("101").await.unwrap(), "{target}: fixture not removed");
    target.put("101", Bytes::from_static(b"{\n  \"id\": 101\n}")).await.unwrap();
    assert!(target.exists("101").await.unwrap(), "{target}: put document missing");
    assert_eq!(target.size("101").await.unwrap(), Some(15), "{target}: size of the stored document");
    if let Some(read) = read {
        assert_eq!(read("101").as_deref(), Some(&b"{\n  \"id\": 101\n}"[..]), "{target}: bytes differ");
    }
    target.delete("101").await.unwrap();
    assert!(!target.exists("101").await.unwrap(), "{target}: deleted document still exists");
    assert_eq!(target.size("101").await.unwrap(), None);
}

/// A second put replaces the first one entirely (shorter content leaves no tail).
pub async fn put_replaces_the_whole_document(target: &dyn StorageTarget, read: Option<Reader<'_>>) {
    target.delete("102.json").await.unwrap();
    target.put("102.json", Bytes::from(vec![b'x'; 10_000])).await.unwrap();
    target.put("102.json", Bytes::from_static(b"short")).await.unwrap();
    if let Some(read) = read {
        assert_eq!(read("102.json").as_deref(), Some(&b"short"[..]), "{target}: old content survived");
    }
    target.delete("102.json").await.unwrap();
}

/// Deleting what is not there is fine (annotations may be deleted twice).
pub async fn deleting_a_missing_key_succeeds(target: &dyn StorageTarget) {
    target.delete("does-not-exist-103").await.unwrap_or_else(|e| panic!("{target}: {e}"));
}

/// Keys that could leave the target's location are refused, not written.
pub async fn unsafe_keys_are_refused(target: &dyn StorageTarget) {
    for key in ["../escape", "a/b", "..", "", "nul\0byte"] {
        assert!(target.put(key, Bytes::from_static(b"x")).await.is_err(), "{target}: accepted key {key:?}");
    }
}

/// `put_many` answers once per item, in order, and writes the good ones.
pub async fn put_many_reports_each_item(target: &dyn StorageTarget, read: Option<Reader<'_>>) {
    let items = vec![
        ("104".to_owned(), Bytes::from_static(b"a")),
        ("../bad".to_owned(), Bytes::from_static(b"b")),
        ("105".to_owned(), Bytes::from_static(b"c")),
    ];
    let results = target.put_many(items).await;
    assert_eq!(results.len(), 3, "{target}");
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok(), "{target}: {results:?}");
    if let Some(read) = read {
        assert_eq!(read("105").as_deref(), Some(&b"c"[..]));
    }
    target.delete("104").await.unwrap();
    target.delete("105").await.unwrap();
}

/// Racing writers of one key leave exactly one of their documents, whole.
pub async fn concurrent_puts_leave_one_complete_document(target: &dyn StorageTarget, read: Option<Reader<'_>>) {
    let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 50_000 + i as usize]).collect();
    let puts = bodies.iter().map(|b| target.put("106", Bytes::from(b.clone())));
    for result in futures::future::join_all(puts).await {
        result.unwrap();
    }
    if let Some(read) = read {
        let stored = read("106").expect("document exists");
        assert!(bodies.contains(&stored), "{target}: stored document is a mix of writers");
    }
    target.delete("106").await.unwrap();
}
