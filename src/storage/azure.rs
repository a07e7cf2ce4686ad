//! Azure Blob Storage (`azure`, contract §6.5). Not implemented yet: the type
//! lists, validates its fields and answers 501 on create.

use super::spec::{no_check, DocumentStyle, FieldSpec, TypeSpec};

/// The `azure` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "azure",
    title: "Microsoft Azure",
    model: "AzureBlobExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"container","label":"Container Name","required":true},{"type":"text","name":"prefix","label":"Container Prefix"}]},{"columnCount":2,"fields":[{"type":"password","name":"account_name","label":"Account Name","autoComplete":"off","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"account_key","label":"Account Key","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"protectedValue":true}]}]"#,
    fields: &[
        FieldSpec::text("container"),
        FieldSpec::text("prefix"),
        FieldSpec::secret("account_name"),
        FieldSpec::secret("account_key"),
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "container",
        "prefix",
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
    check: no_check,
    build: None,
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};
