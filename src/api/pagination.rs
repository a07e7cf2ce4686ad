//! Django REST framework page-number pagination (`page`, `page_size`).

use super::error::{ApiError, ApiResult};
use super::extract::Query;
use axum::http::{header, HeaderMap, StatusCode, Uri};

/// A requested page.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    /// 1-based page number.
    pub number: i64,
    /// Items per page.
    pub size: i64,
}

impl Page {
    /// Reads `page` and `page_size`; a bad `page` is 404 `Invalid page.`, a bad
    /// `page_size` falls back to the default, a large one is capped.
    pub fn from_query(query: &Query, default_size: i64, max_size: i64) -> ApiResult<Page> {
        let number = match query.get("page").map(str::trim) {
            None | Some("") => 1,
            Some("last") => i64::MAX,
            // i64::MAX stands for `last` above, so it is not a page number of its own.
            Some(v) => v.parse::<i64>().ok().filter(|n| (1..i64::MAX).contains(n)).ok_or_else(invalid_page)?,
        };
        let size = query
            .get("page_size")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|n| *n >= 1)
            .map_or(default_size, |n| n.min(max_size));
        Ok(Page { number, size })
    }

    /// Resolves `last` and checks the page exists for `count` items (page 1 always does).
    pub fn check(mut self, count: i64) -> ApiResult<Page> {
        let pages = ((count + self.size - 1) / self.size).max(1);
        if self.number == i64::MAX {
            self.number = pages;
        }
        if self.number > pages {
            return Err(invalid_page());
        }
        Ok(self)
    }

    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        (self.number - 1).saturating_mul(self.size)
    }

    /// The offset before [`check`](Self::check), unless the page is `last`, whose place
    /// depends on the count.
    pub fn known_offset(&self) -> Option<i64> {
        (self.number != i64::MAX).then(|| self.offset())
    }
}

fn invalid_page() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Invalid page.")
}

/// The absolute URL of the same request with `page` replaced (`None` removes it).
pub fn page_url(headers: &HeaderMap, uri: &Uri, page: Option<i64>) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let scheme = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).unwrap_or("http");
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(page) = page {
        pairs.push(("page".into(), page.to_string()));
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let sep = if query.is_empty() { "" } else { "?" };
    format!("{scheme}://{host}{}{sep}{query}", uri.path())
}
