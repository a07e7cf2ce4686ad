//! Google Cloud Storage (`gcs`, contract §6.4). Not implemented yet: the type
//! lists, validates its fields and answers 501 on create.

use super::spec::{no_check, DocumentStyle, FieldSpec, TypeSpec};

/// The `gcs` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "gcs",
    title: "Google Cloud Storage",
    model: "GCSExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"bucket","label":"Bucket Name","required":true},{"type":"text","name":"prefix","label":"Bucket Prefix"}]},{"columnCount":1,"fields":[{"type":"password","name":"google_application_credentials","label":"Google Application Credentials","footer":"Paste the contents of credentials.json in this field OR leave it blank to use ADC.","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"validators":["json"]}]},{"columnCount":1,"fields":[{"type":"text","name":"google_project_id","label":"Google Project ID","footer":"Leave blank to inherit from Google Application Credentials."}]}]"#,
    fields: &[
        FieldSpec::text("bucket"),
        FieldSpec::text("prefix"),
        FieldSpec::secret("google_application_credentials"),
        FieldSpec::text("google_project_id"),
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "bucket",
        "prefix",
        "regex_filter",
        "use_blob_urls",
        "google_project_id",
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
    check: no_check,
    build: None,
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};
