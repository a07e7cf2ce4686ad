//! The in-memory target: the reference implementation and a test double.

use super::{keys::is_safe_key, Result, StorageError, StorageTarget};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Documents kept in a map; clones share the same map.
#[derive(Clone, Default)]
pub struct InMemory {
    docs: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl InMemory {
    /// An empty store.
    pub fn new() -> InMemory {
        InMemory::default()
    }

    /// A copy of everything stored.
    pub fn snapshot(&self) -> BTreeMap<String, Bytes> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Display for InMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InMemory")
    }
}

fn check(key: &str) -> Result<()> {
    if is_safe_key(key) {
        Ok(())
    } else {
        Err(StorageError::PermissionDenied(format!("invalid key {key:?}")))
    }
}

#[async_trait::async_trait]
impl StorageTarget for InMemory {
    async fn validate(&self) -> Result<()> {
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check(key)?;
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), body);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check(key)?;
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check(key)?;
        Ok(self.docs.lock().unwrap_or_else(|e| e.into_inner()).get(key).map(|b| b.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_memory_passes_the_conformance_suite() {
        let store = super::InMemory::new();
        super::super::conformance::run_all(&store, None).await;
    }
}
