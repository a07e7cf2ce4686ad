//! Import bodies parsed task by task (issue #12 item 1).
//!
//! A JSON tree of a whole import body takes up to ~70× the body's size. Instead the
//! body's list is walked with serde_json's streaming deserializer: each task is first
//! a borrowed span of the body ([`RawValue`], no copy, no tree), then turned into its
//! stored form right away: `data`, `meta` and every `result` as compact JSON text
//! (transcoded from the span, never a [`Value`] tree), and the few scalar fields of
//! annotations and predictions as values. Tasks are counted as they come; past the
//! cap (`LABELPORT_MAX_IMPORT_TASKS`) or after the first bad task, the rest of the
//! list is only checked for syntax and counted, so the answer is the one Label Studio
//! gives for the whole list.

use super::error::ApiError;
use super::fields::{python_type_name, Form};
use crate::db::{ImportedAnnotation, ImportedPrediction, NewTask};
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::fmt;

/// The tasks of an import, collected one by one; its errors are kept to be answered
/// after the project is checked, in Label Studio's order.
pub struct TaskCollector {
    max: usize,
    count: usize,
    /// Annotations and predictions the import may still hold.
    items: ItemBudget,
    tasks: Vec<NewTask>,
    /// The body is not a list of tasks.
    not_a_list: Option<ApiError>,
    /// The first bad task.
    bad_task: Option<ApiError>,
}

impl TaskCollector {
    /// A collector that keeps at most `max` tasks.
    pub fn new(max: usize) -> TaskCollector {
        let items = ItemBudget { left: max.saturating_mul(ITEMS_PER_TASK), limit: max.saturating_mul(ITEMS_PER_TASK) };
        TaskCollector { max, count: 0, items, tasks: Vec::new(), not_a_list: None, bad_task: None }
    }

    /// Adds one input item (`{"data": …}` or a flat data object).
    pub fn push_raw(&mut self, item: &RawValue) {
        self.count += 1;
        if self.count > self.max {
            // Over the cap: the import fails, so the tasks read so far can go.
            self.tasks = Vec::new();
            return;
        }
        if self.bad_task.is_some() {
            return;
        }
        match parse_task(item, &mut self.items) {
            Ok(task) => self.tasks.push(task),
            Err(e) => {
                // The import fails: what was read so far can go.
                self.tasks = Vec::new();
                self.bad_task = Some(task_error(self.count - 1, e));
            }
        }
    }

    /// Adds a task made of a data object only (a CSV, TSV or TXT row).
    pub fn push_data(&mut self, data: Map<String, Value>) {
        match serde_json::value::to_raw_value(&json!({ "data": data })) {
            Ok(item) => self.push_raw(&item),
            Err(e) => self.bad_task = self.bad_task.take().or(Some(task_error(self.count, e))),
        }
    }

    /// Adds the items of a JSON body: a list of tasks or one task. A syntax error is
    /// returned at once (Label Studio's `JSON parse error` 400, before the project is
    /// looked up); any other value than a list or an object is kept for [`Self::finish`].
    pub fn push_json(&mut self, body: &[u8]) -> Result<(), serde_json::Error> {
        match for_each_task(body, |item| self.push_raw(item))? {
            Ok(()) => {}
            Err(type_name) => {
                self.not_a_list =
                    Some(ApiError::non_field(format!("load_tasks: expected a list of tasks, got {type_name}")))
            }
        }
        Ok(())
    }

    /// The tasks, or the error Label Studio answers for the import.
    pub fn finish(self) -> Result<Vec<NewTask>, ApiError> {
        if let Some(e) = self.not_a_list {
            return Err(e);
        }
        if self.count == 0 {
            return Err(ApiError::non_field("load_tasks: No tasks added"));
        }
        // Label Studio's TASKS_MAX_NUMBER check, with its wording.
        if self.count > self.max {
            return Err(ApiError::non_field(format!(
                "Maximum task number is {}, current task number is {}",
                self.max, self.count
            )));
        }
        match self.bad_task {
            Some(e) => Err(e),
            None => Ok(self.tasks),
        }
    }
}

/// Annotations and predictions an import may hold, per task of its cap. Each costs
/// ~100 bytes however small its text (`{}`), so without a bound a body of millions
/// of empty annotations would take ~30x its size (issue #12 item 1).
pub const ITEMS_PER_TASK: usize = 10;

/// What is left of an import's allowance of annotations and predictions.
struct ItemBudget {
    left: usize,
    limit: usize,
}

fn task_error(index: usize, message: impl fmt::Display) -> ApiError {
    ApiError::non_field(format!("Task #{}: {message}", index + 1))
}

/// Calls `f` with each task of `body` (a list of tasks, or one task object), as spans
/// of the body. `Ok(Err(type))` when the body is another JSON value.
pub fn for_each_task<'a>(
    body: &'a [u8],
    mut f: impl FnMut(&'a RawValue),
) -> Result<Result<(), &'static str>, serde_json::Error> {
    let starts_with = |b: u8| body.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b);
    if starts_with(b'[') {
        let mut de = serde_json::Deserializer::from_slice(body);
        de.deserialize_seq(EachElement(&mut f))?;
        de.end()?;
        return Ok(Ok(()));
    }
    let item: &RawValue = serde_json::from_slice(body)?;
    if starts_with(b'{') {
        f(item);
        Ok(Ok(()))
    } else {
        Ok(Err(type_name(item)))
    }
}

/// Calls `f` with each element of the JSON list `list`.
fn for_each_element<'a>(list: &'a RawValue, mut f: impl FnMut(&'a RawValue)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(list.get());
    de.deserialize_seq(EachElement(&mut f))
}

struct EachElement<'f, F>(&'f mut F);

impl<'de, F: FnMut(&'de RawValue)> Visitor<'de> for EachElement<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            (self.0)(item);
        }
        Ok(())
    }
}

/// The values of the keys `names` in the JSON object `object` (the last one of a
/// repeated key, as a JSON tree would keep), other keys skipped.
fn fields<'a, const N: usize>(object: &'a RawValue, names: [&str; N]) -> [Option<&'a RawValue>; N] {
    let mut de = serde_json::Deserializer::from_str(object.get());
    // `object` is a syntax-checked object: this cannot fail.
    de.deserialize_map(Fields { names, found: [None; N] }).unwrap_or([None; N])
}

struct Fields<'a, 'n, const N: usize> {
    names: [&'n str; N],
    found: [Option<&'a RawValue>; N],
}

impl<'de, const N: usize> Visitor<'de> for Fields<'de, '_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => self.found[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(self.found)
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().bytes().next().unwrap_or(b' ')
}

fn is_object(raw: &RawValue) -> bool {
    first_byte(raw) == b'{'
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| first_byte(r) == b'n')
}

/// A small stand-in for a value whose type is all that matters: scalars as they are,
/// lists and objects empty (so that a huge one costs nothing).
fn shallow(raw: &RawValue) -> Value {
    match first_byte(raw) {
        b'[' => json!([]),
        b'{' => json!({}),
        _ => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
    }
}

/// Python's name of the type of a JSON value, as Label Studio's messages give it.
fn type_name(raw: &RawValue) -> &'static str {
    python_type_name(&shallow(raw))
}

/// The compact JSON text of `raw`, as `Value::to_string` would write it, without a tree.
fn compact(raw: &RawValue) -> Result<String, String> {
    let mut text = Vec::with_capacity(raw.get().len());
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut text))
        .map_err(|e| format!("invalid JSON - {e}"))?;
    String::from_utf8(text).map_err(|e| e.to_string())
}

/// A `result`: a list, `null` (an empty list) or a string holding a list.
fn result_text(raw: Option<&RawValue>, message: &str) -> Result<String, String> {
    let Some(raw) = raw else { return Ok("[]".into()) };
    let inner: String;
    let raw = if first_byte(raw) == b'"' {
        inner = serde_json::from_str(raw.get()).map_err(|_| message.to_owned())?;
        serde_json::from_str::<&RawValue>(&inner).map_err(|_| message.to_owned())?
    } else {
        raw
    };
    match first_byte(raw) {
        b'[' => compact(raw),
        b'n' => Ok("[]".into()),
        _ => Err(message.to_owned()),
    }
}

/// A [`Form`] of the named scalar fields of `object`, each [`shallow`].
fn scalar_form<const N: usize>(object: &RawValue, names: [&str; N]) -> Form {
    let body: Map<String, Value> = names
        .into_iter()
        .zip(fields(object, names))
        .filter_map(|(name, raw)| Some((name.to_owned(), shallow(raw?))))
        .collect();
    Form::new(Value::Object(body)).expect("an object")
}

fn parse_annotation(raw: &RawValue) -> Result<ImportedAnnotation, String> {
    if !is_object(raw) {
        return Err(format!("an annotation must be an object, got {}", type_name(raw)));
    }
    let mut form = scalar_form(raw, ["was_cancelled", "ground_truth", "lead_time", "completed_by"]);
    let [result, completed_by] = fields(raw, ["result", "completed_by"]);
    let was_cancelled = form.boolean("was_cancelled", false).flatten().unwrap_or(false);
    let ground_truth = form.boolean("ground_truth", false).flatten().unwrap_or(false);
    let lead_time = form.number("lead_time", true).flatten();
    // `completed_by` may be an id or an expanded user object.
    let completed_by = match completed_by {
        Some(user) if is_object(user) => {
            let [id] = fields(user, ["id"]);
            id.and_then(|id| shallow(id).as_i64())
        }
        Some(_) => form.pk("completed_by", true).flatten(),
        None => None,
    };
    if form.has_errors() {
        return Err(
            "an annotation has a field of the wrong type (was_cancelled, ground_truth, lead_time or completed_by)"
                .into(),
        );
    }
    let result = result_text(result, "annotation \"result\" field in annotation must be list")?;
    Ok(ImportedAnnotation { result, was_cancelled, ground_truth, lead_time, completed_by })
}

fn parse_prediction(raw: &RawValue) -> Result<ImportedPrediction, String> {
    if !is_object(raw) {
        return Err(format!("a prediction must be an object, got {}", type_name(raw)));
    }
    let mut form = scalar_form(raw, ["score", "model_version"]);
    let score = form.number("score", true).flatten();
    let model_version = form.string("model_version", None, true).flatten().unwrap_or_default();
    if form.has_errors() {
        return Err("a prediction has a field of the wrong type (score or model_version)".into());
    }
    let [result] = fields(raw, ["result"]);
    let result = result_text(result, "prediction \"result\" must be a list")?;
    Ok(ImportedPrediction { result, score, model_version })
}

/// Parses each element of the list `key` (absent or `null`: none).
fn list_of<T>(
    key: &str,
    raw: Option<&RawValue>,
    parse: fn(&RawValue) -> Result<T, String>,
    budget: &mut ItemBudget,
) -> Result<Vec<T>, String> {
    let Some(raw) = raw.filter(|r| !is_null(Some(r))) else { return Ok(vec![]) };
    if first_byte(raw) != b'[' {
        return Err(format!("\"{key}\" must be a list, got {}", type_name(raw)));
    }
    let mut items = Vec::new();
    let mut error = None;
    for_each_element(raw, |item| {
        if error.is_none() && budget.left == 0 {
            error = Some(format!(
                "an import holds at most {} annotations and predictions in all ({ITEMS_PER_TASK} per task of \
                 LABELPORT_MAX_IMPORT_TASKS)",
                budget.limit
            ));
        }
        if error.is_none() {
            budget.left -= 1;
            match parse(item) {
                Ok(item) => items.push(item),
                Err(e) => error = Some(e),
            }
        }
    })
    .map_err(|e| e.to_string())?;
    error.map_or(Ok(items), Err)
}

/// Turns one input item into a task: `{"data": {...}, "annotations": [...], ...}`,
/// or a flat object that becomes `data` as a whole.
fn parse_task(item: &RawValue, budget: &mut ItemBudget) -> Result<NewTask, String> {
    if !is_object(item) {
        return Err(format!("a task must be a JSON object, got {}", type_name(item)));
    }
    let [data, meta, annotations, predictions] = fields(item, ["data", "meta", "annotations", "predictions"]);
    let Some(data) = data else {
        return Ok(NewTask { data: compact(item)?, meta: "{}".into(), annotations: vec![], predictions: vec![] });
    };
    if !is_object(data) {
        return Err(format!("\"data\" must be a JSON object, got {}", type_name(data)));
    }
    let meta = match meta {
        m if is_null(m) => "{}".into(),
        Some(m) if is_object(m) => compact(m)?,
        Some(other) => return Err(format!("\"meta\" must be a JSON object, got {}", type_name(other))),
        None => unreachable!("absent is null"),
    };
    let annotations = list_of("annotations", annotations, parse_annotation, budget)?;
    let predictions = list_of("predictions", predictions, parse_prediction, budget)?;
    Ok(NewTask { data: compact(data)?, meta, annotations, predictions })
}

/// The top-level keys of the JSON object `object`, in order.
pub fn object_keys(object: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }
    serde_json::Deserializer::from_str(object).deserialize_map(Keys).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(body: &str, max: usize) -> Result<Vec<NewTask>, ApiError> {
        let mut collector = TaskCollector::new(max);
        collector.push_json(body.as_bytes()).expect("valid JSON");
        collector.finish()
    }

    fn message(r: Result<Vec<NewTask>, ApiError>) -> String {
        format!("{:?}", r.map(|_| ()).unwrap_err())
    }

    #[test]
    fn stored_json_is_compact_as_a_json_tree_would_write_it() {
        let body = r#"[ {"data": {"b": 1.0e2, "a": "\u00e9\n", "c": [ 1 , -0 ]}, "meta": { } } ]"#;
        let t = &tasks(body, 10).unwrap()[0];
        let tree: Value = serde_json::from_str(body).unwrap();
        assert_eq!(t.data, tree[0]["data"].to_string());
        assert_eq!(t.meta, "{}");
    }

    #[test]
    fn a_flat_object_is_the_whole_data_with_its_annotations_key() {
        let t = &tasks(r#"{"text": "x", "annotations": 3}"#, 10).unwrap()[0];
        assert_eq!(t.data, r#"{"text":"x","annotations":3}"#);
        assert!(t.annotations.is_empty());
    }

    #[test]
    fn a_result_given_as_a_string_is_stored_as_its_list() {
        let body = r#"[{"data": {}, "annotations": [{"result": "[{\"a\": 1}]", "completed_by": {"id": 7}}]}]"#;
        let t = &tasks(body, 10).unwrap()[0];
        assert_eq!(t.annotations[0].result, r#"[{"a":1}]"#);
        assert_eq!(t.annotations[0].completed_by, Some(7));
    }

    #[test]
    fn the_cap_counts_every_task_and_wins_over_a_bad_task() {
        let m = message(tasks("[1, {}, {}]", 2));
        assert!(m.contains("Maximum task number is 2, current task number is 3"), "{m}");
    }

    #[test]
    fn annotations_and_predictions_are_bounded_per_import() {
        let many = format!(r#"[{{"data": {{}}, "annotations": [{}]}}]"#, vec!["{}"; 2 * ITEMS_PER_TASK + 1].join(","));
        assert!(tasks(&many, 2).is_err_and(|e| format!("{e:?}").contains("at most 20 annotations and predictions")));
        let split = r#"[{"data": {}, "annotations": [{}, {}], "predictions": [{"result": []}]}]"#;
        assert_eq!(tasks(split, 1).unwrap()[0].annotations.len(), 2);
    }

    #[test]
    fn the_first_bad_task_is_reported_by_its_number() {
        let m = message(tasks(r#"[{}, {"data": 1}, 2]"#, 10));
        assert!(m.contains("Task #2: ") && m.contains("must be a JSON object, got int"), "{m}");
    }

    #[test]
    fn a_huge_wrongly_typed_scalar_field_is_rejected_without_being_read() {
        let m = message(tasks(r#"[{"data": {}, "annotations": [{"lead_time": [0, 0, 0]}]}]"#, 10));
        assert!(m.contains("Task #1: an annotation has a field of the wrong type"), "{m}");
    }

    #[test]
    fn a_syntax_error_after_a_bad_task_is_still_a_syntax_error() {
        let mut collector = TaskCollector::new(10);
        assert!(collector.push_json(br#"[{"data": 1}, oops]"#).is_err());
    }

    #[test]
    fn a_scalar_body_is_not_a_list_of_tasks() {
        let m = message(tasks("\"x\"", 10));
        assert!(m.contains("expected a list of tasks, got str"), "{m}");
    }
}
