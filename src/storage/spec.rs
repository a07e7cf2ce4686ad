//! Storage types: what each type of export storage looks like on the API (fields,
//! write-only secrets, response order, form layout, Label Studio's messages) and
//! how its target is built. Each target module defines one [`TypeSpec`]; the API
//! and the sync engine work from [`TYPES`] alone, so a new type is a new module
//! plus one line there.

use super::{Result, StorageError, StorageTarget};
use crate::config::{LocalFilesSettings, TargetSettings};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Every type, in Label Studio's order (`GET /api/storages/export/types`).
pub const TYPES: [&TypeSpec; 5] =
    [&super::s3::SPEC, &super::gcs::SPEC, &super::azure::SPEC, &super::redis::SPEC, &super::local::SPEC];

/// The spec of a type by its URL name.
pub fn type_spec(name: &str) -> Option<&'static TypeSpec> {
    TYPES.iter().copied().find(|t| t.name == name)
}

/// One storage type.
pub struct TypeSpec {
    /// URL segment and `type` value (`s3`).
    pub name: &'static str,
    /// Display title in `GET /types`.
    pub title: &'static str,
    /// Model name in `No <Model> matches the given query.`
    pub model: &'static str,
    /// UI form layout (`GET .../form`), verbatim from Label Studio.
    pub form: &'static str,
    /// The type's own request fields.
    pub fields: &'static [FieldSpec],
    /// Response keys in Label Studio's order: common keys and the type's non-secret
    /// fields (`export_mode`, ours, is appended).
    pub response: &'static [&'static str],
    /// Field checks that run on create, validate and update (bucket-name rule, SSRF
    /// of an endpoint…), before any connection.
    pub check: CheckFn,
    /// Builds the target; `None` while labelport cannot export to this type.
    pub build: Option<BuildFn>,
    /// Create and validate also check the connection (list, HEAD, PING).
    pub checks_connection: bool,
    /// On the validate endpoint, a failed connection check answers Label Studio's
    /// generic `Error validating storage connection` instead of the cause.
    pub masks_validate_errors: bool,
    /// How documents are serialised for this type.
    pub document: DocumentStyle,
}

/// How a type's documents are serialised (both keep Label Studio's key order and
/// escape non-ASCII characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentStyle {
    /// `json.dumps(doc, indent=2)`: local files.
    Indented,
    /// `json.dumps(doc)`: cloud objects (contract §6.3).
    Compact,
}

/// Field checks of a type.
pub type CheckFn = for<'a> fn(&'a TargetConfig, &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>>;
/// Target constructor of a type.
pub type BuildFn = fn(&TargetConfig, &TargetContext) -> Result<Arc<dyn StorageTarget>>;

/// A type-specific request field.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// Its key.
    pub name: &'static str,
    /// Write-only: stored sealed, never in a response, a log line or an error.
    pub secret: bool,
    /// How it is read.
    pub kind: FieldKind,
}

/// How a field's value is read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A nullable string (numbers are stringified, as Django REST framework does).
    Text,
    /// The local-files path, normalised and stored in its own column.
    LocalPath,
    /// A nullable integer in `0..=32767`, with a default on create.
    SmallInt {
        /// Value of a new storage.
        default: i64,
    },
}

impl FieldSpec {
    /// A plain text field.
    pub const fn text(name: &'static str) -> FieldSpec {
        FieldSpec { name, secret: false, kind: FieldKind::Text }
    }

    /// A write-only text field.
    pub const fn secret(name: &'static str) -> FieldSpec {
        FieldSpec { name, secret: true, kind: FieldKind::Text }
    }
}

/// A check that refuses a configuration, with where Label Studio reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// 400 with the message under the field.
    Field(&'static str, String),
    /// 400 with the message under `non_field_errors`.
    NonField(String),
    /// 403 with the message as `detail` (SSRF refusals of S3 endpoints).
    Forbidden(String),
}

/// The configuration of one storage, as a target sees it: the local path, the
/// type's plain values and its opened secrets.
#[derive(Clone, Default)]
pub struct TargetConfig {
    /// Local-files path.
    pub path: Option<String>,
    /// Plain type-specific values (`bucket`, `prefix`, …).
    pub values: Map<String, Value>,
    /// Opened write-only values (`aws_secret_access_key`, …).
    pub secrets: Map<String, Value>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig")
            .field("path", &self.path)
            .field("values", &self.values)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TargetConfig {
    /// A non-empty text value (plain or secret) by name.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).or_else(|| self.secrets.get(name)).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// An integer value by name.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.values.get(name).and_then(Value::as_i64)
    }
}

/// What targets need from the server's settings.
#[derive(Debug, Clone)]
pub struct TargetContext {
    /// Local-files rules.
    pub local_files: LocalFilesSettings,
    /// fsync local files.
    pub fsync: bool,
    /// Cloud targets: SSRF protection, concurrency, retries.
    pub targets: TargetSettings,
}

/// Builds the target of a storage type; `NotSupported` for types without one.
pub fn build(storage_type: &str, config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    let spec = type_spec(storage_type)
        .ok_or_else(|| StorageError::NotSupported(format!("unknown export storage type \"{storage_type}\"")))?;
    let build = spec.build.ok_or_else(|| {
        StorageError::NotSupported(format!("export storage type \"{storage_type}\" is not supported yet"))
    })?;
    build(config, ctx)
}

/// A check that accepts everything.
pub fn no_check<'a>(_: &'a TargetConfig, _: &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async { Ok(()) })
}
