//! Redis (`redis`, contract §6.6). Not implemented yet: the type lists, validates
//! its fields and answers 501 on create.

use super::spec::{no_check, DocumentStyle, FieldKind, FieldSpec, TypeSpec};

/// The `redis` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "redis",
    title: "Redis",
    model: "RedisExportStorage",
    form: r#"[{"columnCount":2,"fields":[{"type":"text","name":"db","label":"Database Number (db)","placeholder":1},{"type":"text","name":"path","label":"Path"},{"type":"password","name":"password","label":"Password","autoComplete":"new-password"},{"type":"text","name":"host","label":"Host","placeholder":"localhost"},{"type":"text","name":"port","label":"Port"}]}]"#,
    fields: &[
        FieldSpec::text("path"),
        FieldSpec::text("host"),
        FieldSpec::text("port"),
        FieldSpec::secret("password"),
        FieldSpec { name: "db", secret: false, kind: FieldKind::SmallInt { default: 2 } },
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "path",
        "host",
        "port",
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
        "db",
        "project",
    ],
    check: no_check,
    build: None,
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};
