//! File uploads to `POST /api/projects/{id}/import` (contract §7.2): a
//! `multipart/form-data` body with one or more files, each read by its extension:
//! `.json` (a list of tasks or one task), `.jsonl` (one task per line), `.csv` and
//! `.tsv` (a header row of data keys, then one task per row, values as strings) and
//! `.txt` (one task `{"text": line}` per non-empty line). Every file is parsed before
//! anything is stored, so a malformed file imports nothing.

use super::error::{ApiError, ApiResult};
use super::extract::{read_limited, ImportBody};
use super::import_parse::{for_each_task, TaskCollector};
use super::AppState;
use crate::db::NewTask;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};

/// The tasks of an import, from a JSON (or form) body or from uploaded files.
pub struct ImportInput {
    /// The tasks, or the error to answer once the project is found.
    pub tasks: Result<Vec<NewTask>, ApiError>,
    /// For files: the number of files per extension (`{".csv": 1}`), and whether a
    /// table (CSV or TSV) was among them.
    pub files: Option<(Map<String, Value>, bool)>,
}

impl FromRequest<AppState> for ImportInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let is_multipart =
            content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("multipart/form-data");
        let mut tasks = TaskCollector::new(state.settings.http.max_import_tasks);
        if !is_multipart {
            let ImportBody(body) = ImportBody::from_request(req, state).await?;
            tasks.push_json(&body).map_err(|e| ApiError::bad_request(format!("JSON parse error - {e}")))?;
            return Ok(ImportInput { tasks: tasks.finish(), files: None });
        }
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|_| ApiError::bad_request("Multipart form parse error - Invalid boundary in multipart: None"))?;
        let limit = state.settings.http.max_import_bytes;
        let declared =
            req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(0);
        // Read within the import limit (413 past it), then split into parts.
        let bytes = read_limited(req.into_body(), limit, declared).await?;
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        let (formats, tables) = read_files(multer::Multipart::new(stream, boundary), &mut tasks).await?;
        Ok(ImportInput { tasks: tasks.finish(), files: Some((formats, tables)) })
    }
}

fn multipart_error(e: multer::Error) -> ApiError {
    ApiError::bad_request(format!("Multipart form parse error - {e}"))
}

/// Reads each file's tasks into `tasks`; returns the number of files per extension
/// and whether a table was among them.
async fn read_files(
    mut multipart: multer::Multipart<'_>,
    tasks: &mut TaskCollector,
) -> ApiResult<(Map<String, Value>, bool)> {
    let mut found_formats = Map::new();
    let mut could_be_tasks_list = false;
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
        match extension.as_str() {
            ".json" => parse_json(text, tasks),
            ".jsonl" => parse_jsonl(text, tasks),
            ".csv" => parse_table(text, b',', |data| tasks.push_data(data)),
            ".tsv" => parse_table(text, b'\t', |data| tasks.push_data(data)),
            _ => {
                parse_txt(text, |data| tasks.push_data(data));
                Ok(())
            }
        }
        .map_err(|e| file_error(&file_name, e))?;
        if matches!(extension.as_str(), ".csv" | ".tsv") {
            could_be_tasks_list = true;
        }
        let count = found_formats.get(&extension).and_then(Value::as_u64).unwrap_or(0);
        found_formats.insert(extension, Value::from(count + 1));
    }
    if found_formats.is_empty() {
        return Err(ApiError::non_field(
            "No files were uploaded: send each file as a multipart part with a file name.",
        ));
    }
    Ok((found_formats, could_be_tasks_list))
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
fn parse_json(text: &str, tasks: &mut TaskCollector) -> Result<(), String> {
    match for_each_task(text.as_bytes(), |item| tasks.push_raw(item)).map_err(|e| format!("invalid JSON - {e}"))? {
        Ok(()) => Ok(()),
        Err(_) => Err("a JSON file must hold a list of tasks or one task".into()),
    }
}

/// A JSON Lines file: one task per non-blank line.
fn parse_jsonl(text: &str, tasks: &mut TaskCollector) -> Result<(), String> {
    for (i, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let item = serde_json::from_str(line).map_err(|e| format!("line {}: invalid JSON - {e}", i + 1))?;
        tasks.push_raw(item);
    }
    Ok(())
}

/// A CSV or TSV file: the header row names the data keys; each row is one task whose
/// values are strings.
fn parse_table(text: &str, delimiter: u8, mut task: impl FnMut(Map<String, Value>)) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    if header.iter().all(String::is_empty) {
        return Err("the first row must name the columns".into());
    }
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        task(header.iter().zip(row.iter()).map(|(k, v)| (k.clone(), Value::String(v.to_owned()))).collect());
    }
    Ok(())
}

/// A text file: one task `{"text": line}` per non-blank line.
fn parse_txt(text: &str, mut task: impl FnMut(Map<String, Value>)) {
    text.lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.trim().is_empty())
        .for_each(|line| task(Map::from_iter([("text".to_owned(), Value::String(line.to_owned()))])));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(parse: impl FnOnce(&mut dyn FnMut(Map<String, Value>))) -> Vec<Value> {
        let mut rows = Vec::new();
        parse(&mut |row| rows.push(Value::Object(row)));
        rows
    }

    #[test]
    fn a_csv_row_becomes_one_task_of_strings_keyed_by_the_header() {
        let items = rows(|task| parse_table("text,score\nx,1\n\"a, b\",2\n", b',', task).unwrap());
        assert_eq!(items, [json!({"text": "x", "score": "1"}), json!({"text": "a, b", "score": "2"})]);
    }

    #[test]
    fn a_csv_row_with_a_missing_field_is_an_error() {
        assert!(parse_table("text,score\nx\n", b',', |_| {}).is_err());
    }

    #[test]
    fn a_text_file_gives_one_task_per_non_blank_line() {
        assert_eq!(rows(|task| parse_txt("a\r\n\nb\n", task)), [json!({"text": "a"}), json!({"text": "b"})]);
    }

    #[test]
    fn a_json_lines_file_reports_the_bad_line() {
        let mut tasks = TaskCollector::new(10);
        assert_eq!(parse_jsonl("{\"a\": 1}\n\n{oops\n", &mut tasks).unwrap_err().split(':').next(), Some("line 3"));
    }

    #[test]
    fn only_known_extensions_are_accepted() {
        assert_eq!(extension_of("Tasks.JSONL").as_deref(), Some(".jsonl"));
        assert_eq!(extension_of("image.png"), None);
        assert_eq!(extension_of("noext"), None);
    }
}
