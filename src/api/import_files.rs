//! File uploads to `POST /api/projects/{id}/import` (contract §7.2): a
//! `multipart/form-data` body with one or more files, each read by its extension:
//! `.json` (a list of tasks or one task), `.jsonl` (one task per line), `.csv` and
//! `.tsv` (a header row of data keys, then one task per row, values as strings) and
//! `.txt` (one task `{"text": line}` per non-empty line). Every file is parsed before
//! anything is stored, so a malformed file imports nothing.

use super::error::{ApiError, ApiResult};
use super::extract::{read_limited, ImportBody};
use super::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};

/// The body of an import: JSON (or a form), or uploaded files.
pub enum ImportInput {
    /// A JSON body: a list of tasks or one task.
    Json(Value),
    /// Uploaded files, already turned into task items.
    Files(Uploaded),
}

/// The tasks of the uploaded files, with what Label Studio reports about them.
#[derive(Default)]
pub struct Uploaded {
    /// One item per task, in file order; CSV, TSV and TXT rows are `{"data": row}`.
    pub items: Vec<Value>,
    /// Number of files per extension (`{".csv": 1}`).
    pub found_formats: Map<String, Value>,
    /// Whether a table (CSV or TSV) was among the files.
    pub could_be_tasks_list: bool,
}

impl FromRequest<AppState> for ImportInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let is_multipart =
            content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("multipart/form-data");
        if !is_multipart {
            return ImportBody::from_request(req, state).await.map(|ImportBody(v)| ImportInput::Json(v));
        }
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|_| ApiError::bad_request("Multipart form parse error - Invalid boundary in multipart: None"))?;
        let limit = state.settings.http.max_import_bytes;
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(0);
        // Read within the import limit (413 past it), then split into parts.
        let bytes = read_limited(req.into_body(), limit, declared).await?;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        read_files(multer::Multipart::new(stream, boundary)).await.map(ImportInput::Files)
    }
}

fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::bad_request(format!("Multipart form parse error - {e}"))
}

async fn read_files(mut multipart: multer::Multipart<'_>) -> ApiResult<Uploaded> {
    let mut uploaded = Uploaded::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            if field.name() == Some("url") {
                return Err(ApiError::non_field("Importing tasks from a URL is not supported; upload the file."));
            }
            // Other plain form fields carry nothing for an import.
            continue;
        };
        let bytes = field.bytes().await.map_err(multipart_error)?;
        let extension = extension_of(&file_name)
            .ok_or_else(|| file_error(&file_name, "unsupported file format; use .json, .jsonl, .csv, .tsv or .txt"))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| file_error(&file_name, "the file is not UTF-8 text"))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let items = match extension.as_str() {
            ".json" => parse_json(text).map_err(|e| file_error(&file_name, e))?,
            ".jsonl" => parse_jsonl(text).map_err(|e| file_error(&file_name, e))?,
            ".csv" => parse_table(text, b',').map_err(|e| file_error(&file_name, e))?,
            ".tsv" => parse_table(text, b'\t').map_err(|e| file_error(&file_name, e))?,
            _ => parse_txt(text),
        };
        if matches!(extension.as_str(), ".csv" | ".tsv") {
            uploaded.could_be_tasks_list = true;
        }
        let count = uploaded.found_formats.get(&extension).and_then(Value::as_u64).unwrap_or(0);
        uploaded.found_formats.insert(extension, Value::from(count + 1));
        uploaded.items.extend(items);
    }
    if uploaded.found_formats.is_empty() {
        return Err(ApiError::non_field(
            "No files were uploaded: send each file as a multipart part with a file name.",
        ));
    }
    Ok(uploaded)
}

fn file_error(file_name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::non_field(format!("Can't import file \"{file_name}\": {message}"))
}

/// The lower-cased, supported extension of a file name (`.json`, …).
fn extension_of(file_name: &str) -> Option<String> {
    let (_, ext) = file_name.rsplit_once('.')?;
    let ext = format!(".{}", ext.to_ascii_lowercase());
    [".json", ".jsonl", ".csv", ".tsv", ".txt"].contains(&ext.as_str()).then_some(ext)
}

/// A JSON file: a list of tasks, or one task.
fn parse_json(text: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON - {e}"))? {
        Value::Array(items) => Ok(items),
        task @ Value::Object(_) => Ok(vec![task]),
        _ => Err("a JSON file must hold a list of tasks or one task".into()),
    }
}

/// A JSON Lines file: one task per non-blank line.
fn parse_jsonl(text: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).map_err(|e| format!("line {}: invalid JSON - {e}", i + 1)))
        .collect()
}

/// A CSV or TSV file: the header row names the data keys; each row is one task whose
/// values are strings.
fn parse_table(text: &str, delimiter: u8) -> Result<Vec<Value>, String> {
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    if header.iter().all(String::is_empty) {
        return Err("the first row must name the columns".into());
    }
    let mut items = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        let data: Map<String, Value> =
            header.iter().zip(row.iter()).map(|(k, v)| (k.clone(), Value::String(v.to_owned()))).collect();
        items.push(serde_json::json!({ "data": data }));
    }
    Ok(items)
}

/// A text file: one task `{"text": line}` per non-blank line.
fn parse_txt(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::json!({ "data": { "text": line } }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_csv_row_becomes_one_task_of_strings_keyed_by_the_header() {
        let items = parse_table("text,score\nx,1\n\"a, b\",2\n", b',').unwrap();
        assert_eq!(
            items,
            [json!({"data": {"text": "x", "score": "1"}}), json!({"data": {"text": "a, b", "score": "2"}})]
        );
    }

    #[test]
    fn a_csv_row_with_a_missing_field_is_an_error() {
        assert!(parse_table("text,score\nx\n", b',').is_err());
    }

    #[test]
    fn a_text_file_gives_one_task_per_non_blank_line() {
        assert_eq!(parse_txt("a\r\n\nb\n"), [json!({"data": {"text": "a"}}), json!({"data": {"text": "b"}})]);
    }

    #[test]
    fn a_json_lines_file_reports_the_bad_line() {
        assert_eq!(parse_jsonl("{\"a\": 1}\n\n{oops\n").unwrap_err().split(':').next(), Some("line 3"));
    }

    #[test]
    fn only_known_extensions_are_accepted() {
        assert_eq!(extension_of("Tasks.JSONL").as_deref(), Some(".jsonl"));
        assert_eq!(extension_of("image.png"), None);
        assert_eq!(extension_of("noext"), None);
    }
}
