//! Local-files directories are confined per organization (issue #12): a directory
//! used by a local-files storage of one organization, or any parent or child of it,
//! cannot be used by a storage of another organization.
//!
//! The check runs inside the transaction that stores the path. SQLite serialises
//! writers (`BEGIN IMMEDIATE`); on PostgreSQL the writer first takes a
//! transaction-scoped advisory lock, so two organizations claiming overlapping
//! directories at once cannot both see "free" and both commit.

use super::{Backend, Db, DbError, DbResult, WriteTx};
use sqlx::{Any, Executor};

/// Advisory lock key that serialises local-path claims on PostgreSQL.
const LOCAL_PATH_LOCK: i64 = 0x006c_706c_6f63_616c; // "lplocal"

/// A local-files path an organization wants to store.
#[derive(Clone, Copy)]
pub struct PathClaim<'a> {
    /// The organization that claims it.
    pub organization_id: i64,
    /// The normalised path.
    pub path: &'a str,
    /// Whether two paths share a directory (the file-system comparison lives with
    /// the storage code: [`crate::storage::local_path::overlap`]).
    pub overlaps: fn(&str, &str) -> bool,
}

/// Local-files paths of the storages of every organization but `organization_id`.
async fn foreign_paths<'e>(executor: impl Executor<'e, Database = Any>, organization_id: i64) -> DbResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT s.path FROM export_storages s JOIN projects p ON p.id = s.project_id \
         WHERE s.type = 'localfiles' AND s.path IS NOT NULL AND p.organization_id <> $1",
    )
    .bind(organization_id)
    .fetch_all(executor)
    .await?)
}

fn overlaps_any(claim: &PathClaim<'_>, paths: &[String]) -> bool {
    paths.iter().any(|other| (claim.overlaps)(claim.path, other))
}

impl Db {
    /// Whether the claimed path overlaps a storage path of another organization.
    pub async fn local_path_taken(&self, claim: &PathClaim<'_>) -> DbResult<bool> {
        Ok(overlaps_any(claim, &foreign_paths(&self.pool, claim.organization_id).await?))
    }

    /// Inside a write transaction: [`DbError::Conflict`] if the claimed path overlaps
    /// a storage path of another organization.
    pub(super) async fn claim_local_path(&self, tx: &mut WriteTx, claim: &PathClaim<'_>) -> DbResult<()> {
        if self.backend == Backend::Postgres {
            // Held until commit or rollback.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCAL_PATH_LOCK).execute(&mut **tx).await?;
        }
        if overlaps_any(claim, &foreign_paths(&mut **tx, claim.organization_id).await?) {
            return Err(DbError::Conflict);
        }
        Ok(())
    }
}
