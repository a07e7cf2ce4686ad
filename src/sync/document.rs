//! The JSON documents export storages write (contract §5.3–5.5, §6.3): Label Studio's
//! key order, every non-ASCII character escaped as `\uXXXX`, no final newline; local
//! files indented by 2 spaces (`json.dumps(doc, indent=2)`), cloud objects compact
//! with Python's separators (`json.dumps(doc)`: `", "` and `": "`).

use crate::db::{Annotation, JsonColumn, Task, User};
use crate::restyle::Writer;
pub use crate::storage::spec::DocumentStyle;
use crate::time::{iso, iso_opt, now_micros, timesince};
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;

/// Users by id, for `completed_by` and `created_username`.
pub type Users = HashMap<i64, User>;

/// The annotation-mode document (contract §5.3), written straight from the rows to
/// bytes ([`crate::restyle::Writer`]): no `Value` tree and no serde round trip of the stored
/// JSON. A JSON column whose text is not JSON is written as `null`, as the API reads it.
pub fn annotation_document_bytes<J: JsonColumn>(
    a: &Annotation<J>,
    t: &Task<J>,
    users: &Users,
    style: DocumentStyle,
) -> Vec<u8> {
    let author = a.completed_by.and_then(|id| users.get(&id));
    let mut out = Vec::with_capacity(2048);
    let mut w = Writer::new(&mut out, style.into());
    w.open();
    w.key("id");
    w.int(a.id);
    w.key("result");
    w.json_text(&a.result.json_text());
    w.key("created_username");
    w.str(&crate::api::users::created_username(author));
    w.key("created_ago");
    w.str(&timesince(a.created_at, now_micros()));
    w.key("completed_by");
    match author {
        Some(u) => {
            w.open();
            w.key("id");
            w.int(u.id);
            w.key("first_name");
            w.str(&u.first_name);
            w.key("last_name");
            w.str(&u.last_name);
            w.key("email");
            w.str(&u.email);
            w.close();
        }
        None => w.null(),
    }
    w.key("task");
    nested_task(&mut w, t);
    w.key("was_cancelled");
    w.bool(a.was_cancelled);
    w.key("ground_truth");
    w.bool(a.ground_truth);
    w.key("created_at");
    w.stamp(Some(a.created_at));
    w.key("updated_at");
    w.stamp(Some(a.updated_at));
    w.key("draft_created_at");
    w.stamp(a.draft_created_at);
    w.key("lead_time");
    w.opt_float(a.lead_time);
    w.key("import_id");
    w.opt_int(a.import_id);
    w.key("last_action");
    w.opt_str(a.last_action.as_deref());
    w.key("bulk_created");
    w.bool(a.bulk_created);
    w.key("project");
    w.int(a.project_id);
    w.key("updated_by");
    w.opt_int(a.updated_by);
    w.key("parent_prediction");
    w.opt_int(a.parent_prediction);
    w.key("parent_annotation");
    w.opt_int(a.parent_annotation);
    w.key("last_created_by");
    w.opt_int(a.last_created_by);
    w.close();
    out
}

/// The task as nested in an annotation document.
fn nested_task<J: JsonColumn>(w: &mut Writer<'_>, t: &Task<J>) {
    w.open();
    w.key("id");
    w.int(t.id);
    w.key("data");
    w.json_text(&t.data.json_text());
    w.key("meta");
    w.json_text(&t.meta.json_text());
    w.key("created_at");
    w.stamp(Some(t.created_at));
    w.key("updated_at");
    w.stamp(Some(t.updated_at));
    w.key("is_labeled");
    w.bool(t.is_labeled);
    w.key("allow_skip");
    w.bool(true);
    w.key("overlap");
    w.int(t.overlap);
    w.key("inner_id");
    w.int(t.inner_id);
    w.key("total_annotations");
    w.int(t.total_annotations);
    w.key("cancelled_annotations");
    w.int(t.cancelled_annotations);
    w.key("total_predictions");
    w.int(t.total_predictions);
    w.key("precomputed_agreement");
    w.null();
    w.key("comment_count");
    w.int(0);
    w.key("unresolved_comment_count");
    w.int(0);
    w.key("last_comment_updated_at");
    w.null();
    w.key("project");
    w.int(t.project_id);
    w.key("updated_by");
    w.opt_int(t.updated_by);
    w.key("file_upload");
    w.null();
    w.key("comment_authors");
    w.raw("[]");
    w.close();
}

/// A stable UUID for an annotation (Label Studio's `unique_id`).
fn unique_id(annotation_id: i64) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("labelport/annotation/{annotation_id}").as_bytes())
        .to_string()
}

/// The task-mode document: the task with all its annotations (contract §5.4).
pub fn task_document(t: &Task, annotations: &[Annotation], users: &Users) -> Value {
    let annotations: Vec<Value> = annotations
        .iter()
        .map(|a| {
            let completed = a.completed_by.and_then(|id| users.get(&id)).map_or(
                Value::Null,
                |u| json!({ "id": u.id, "email": u.email, "first_name": u.first_name, "last_name": u.last_name }),
            );
            json!({
                "id": a.id,
                "completed_by": completed,
                "result": a.result,
                "was_cancelled": a.was_cancelled,
                "ground_truth": a.ground_truth,
                "created_at": iso(a.created_at),
                "updated_at": iso(a.updated_at),
                "draft_created_at": iso_opt(a.draft_created_at),
                "lead_time": a.lead_time,
                "prediction": {},
                "result_count": a.result.as_array().map_or(0, Vec::len),
                "unique_id": unique_id(a.id),
                "import_id": a.import_id,
                "last_action": a.last_action,
                "bulk_created": a.bulk_created,
                "task": a.task_id,
                "project": a.project_id,
                "updated_by": a.updated_by,
                "parent_prediction": a.parent_prediction,
                "parent_annotation": a.parent_annotation,
                "last_created_by": a.last_created_by,
            })
        })
        .collect();
    json!({
        "id": t.id,
        "annotations": annotations,
        "drafts": [],
        "predictions": [],
        "data": t.data,
        "meta": t.meta,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "allow_skip": true,
        "inner_id": t.inner_id,
        "total_annotations": t.total_annotations,
        "cancelled_annotations": t.cancelled_annotations,
        "total_predictions": t.total_predictions,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": t.project_id,
        "updated_by": t.updated_by,
        "comment_authors": [],
    })
}

/// Python's `json.dumps(indent=2, ensure_ascii=True)` formatting.
struct AsciiPretty<'a>(PrettyFormatter<'a>);

impl Formatter for AsciiPretty<'_> {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        // Most text is plain ASCII: written as it is, with no copy.
        if fragment.bytes().all(|b| b < 0x7f) {
            return w.write_all(fragment.as_bytes());
        }
        // serde_json has escaped quotes, backslashes and control characters already.
        let mut escaped = Vec::with_capacity(fragment.len() + 16);
        crate::restyle::escape_str(&mut escaped, fragment, crate::restyle::Style::Compact);
        w.write_all(&escaped)
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Python's `json.dumps(ensure_ascii=True)` formatting: `", "` and `": "` separators.
struct AsciiCompact;

impl Formatter for AsciiCompact {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        AsciiPretty(PrettyFormatter::new()).write_string_fragment(w, fragment)
    }
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// Serialises a document the way Label Studio writes it to disk.
pub fn to_bytes<T: serde::Serialize + ?Sized>(doc: &T) -> Vec<u8> {
    to_bytes_styled(doc, DocumentStyle::Indented)
}

/// Serialises a document in the given style.
pub fn to_bytes_styled<T: serde::Serialize + ?Sized>(doc: &T, style: DocumentStyle) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    match style {
        DocumentStyle::Indented => serde::Serialize::serialize(
            doc,
            &mut serde_json::Serializer::with_formatter(&mut out, AsciiPretty(PrettyFormatter::with_indent(b"  "))),
        ),
        DocumentStyle::Compact => {
            serde::Serialize::serialize(doc, &mut serde_json::Serializer::with_formatter(&mut out, AsciiCompact))
        }
    }
    .expect("serialising a JSON value into memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_indented_ascii_escaped_and_have_no_final_newline() {
        let doc = json!({"a": "h\u{e9}llo w\u{f6}rld \u{2713} \u{1F600}", "b": [1, {"c": []}], "d": {}, "e": 1.5, "f": "\u{7f}\n\"q\""});
        let text = String::from_utf8(to_bytes(&doc)).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": \"h\\u00e9llo w\\u00f6rld \\u2713 \\ud83d\\ude00\",\n  \"b\": [\n    1,\n    {\n      \"c\": []\n    }\n  ],\n  \"d\": {},\n  \"e\": 1.5,\n  \"f\": \"\\u007f\\n\\\"q\\\"\"\n}"
        );
        assert!(text.is_ascii());
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn compact_documents_use_pythons_default_separators() {
        let doc = json!({"a": "h\u{e9}", "b": [1, {"c": [], "d": {}}], "e": 1.5, "f": null});
        let text = String::from_utf8(to_bytes_styled(&doc, DocumentStyle::Compact)).unwrap();
        assert_eq!(text, r#"{"a": "h\u00e9", "b": [1, {"c": [], "d": {}}], "e": 1.5, "f": null}"#);
    }

    /// An annotation and its task as the export reads them, with the given JSON columns.
    fn sample<J>(result: J, data: J, meta: J) -> (Annotation<J>, Task<J>) {
        let task = Task {
            id: 11006,
            project_id: 3,
            data,
            meta,
            inner_id: 1,
            overlap: 1,
            is_labeled: true,
            total_annotations: 1,
            cancelled_annotations: 0,
            total_predictions: 0,
            updated_by: Some(1),
            created_at: 0,
            updated_at: 0,
        };
        let a = Annotation {
            id: 11005,
            task_id: 11006,
            project_id: 3,
            result,
            was_cancelled: false,
            ground_truth: false,
            lead_time: Some(3.0),
            completed_by: Some(1),
            updated_by: Some(1),
            import_id: None,
            last_action: None,
            bulk_created: false,
            parent_prediction: None,
            parent_annotation: None,
            last_created_by: None,
            draft_created_at: None,
            created_at: 0,
            updated_at: 0,
        };
        (a, task)
    }

    fn users() -> Users {
        Users::from([(
            1,
            User {
                id: 1,
                organization_id: 1,
                email: "admin@example.com".into(),
                username: String::new(),
                first_name: String::new(),
                last_name: String::new(),
                date_joined: 0,
                last_activity: 0,
            },
        )])
    }

    #[test]
    fn documents_from_stored_json_text_equal_those_from_parsed_values() {
        use crate::db::JsonText;
        let (result, data) = (
            r#"[{"value":{"text":"h\u00e9 \ud83d\ude00","labels":["PER"]},"id":"a1"}]"#,
            r#"{"text":"x","n":[1.5,{}]}"#,
        );
        let (a, t) = sample(serde_json::from_str(result).unwrap(), serde_json::from_str(data).unwrap(), json!({}));
        let (ra, rt) = sample(JsonText(result.into()), JsonText(data.into()), JsonText("{}".into()));
        for style in [DocumentStyle::Indented, DocumentStyle::Compact] {
            let parsed = annotation_document_bytes(&a, &t, &users(), style);
            assert_eq!(annotation_document_bytes(&ra, &rt, &users(), style), parsed, "{style:?}");
        }
    }

    #[test]
    fn a_document_whose_stored_json_is_broken_is_written_with_null_there() {
        use crate::db::JsonText;
        let (a, t) = sample(
            JsonText("[{\"unterminated".into()),
            JsonText(r#"{"text":"hello one"}"#.into()),
            JsonText("{} trailing".into()),
        );
        let text = String::from_utf8(annotation_document_bytes(&a, &t, &users(), DocumentStyle::Indented)).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["result"], Value::Null);
        assert_eq!(doc["task"]["meta"], Value::Null);
        assert_eq!(doc["task"]["data"], json!({"text": "hello one"}));
    }

    #[test]
    fn annotation_documents_keep_label_studios_key_order() {
        let (a, task) = sample(json!([]), json!({"text": "hello one"}), json!({}));
        let users = users();
        let text = String::from_utf8(annotation_document_bytes(&a, &task, &users, DocumentStyle::Indented)).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "result",
                "created_username",
                "created_ago",
                "completed_by",
                "task",
                "was_cancelled",
                "ground_truth",
                "created_at",
                "updated_at",
                "draft_created_at",
                "lead_time",
                "import_id",
                "last_action",
                "bulk_created",
                "project",
                "updated_by",
                "parent_prediction",
                "parent_annotation",
                "last_created_by",
            ]
        );
        assert_eq!(doc["created_username"], " admin@example.com, 1");
        assert_eq!(
            doc["completed_by"],
            json!({"id": 1, "first_name": "", "last_name": "", "email": "admin@example.com"})
        );
        assert!(text.contains("\"lead_time\": 3.0,"), "an integral lead time is written as a float");
        let canonical = String::from_utf8(to_bytes(&doc)).unwrap();
        assert_eq!(text, canonical, "the direct serialiser formats exactly like the Value path");
        let task_keys: Vec<&str> = doc["task"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(task_keys[..6], ["id", "data", "meta", "created_at", "updated_at", "is_labeled"]);
        assert_eq!(task_keys.len(), 20);
    }
}
