//! The in-memory target: the reference implementation and a test double.

use super::{keys::check_key, Result, StorageTarget};
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

#[async_trait::async_trait]
impl StorageTarget for InMemory {
    async fn validate(&self) -> Result<()> {
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned(), body);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
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
