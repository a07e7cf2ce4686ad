//! Field-by-field validation of JSON bodies with Django REST framework's messages,
//! collecting every field error before answering (contract §2.1).

use super::error::{ApiError, ApiResult};
use serde_json::{json, Map, Value};

/// A body being validated. Each reader returns `None` when the field is absent or
/// invalid; invalid fields are remembered and reported together by [`Form::finish`].
pub struct Form {
    body: Map<String, Value>,
    errors: Map<String, Value>,
}

/// A present field's value: `Null` or a value.
pub type Nullable<T> = Option<T>;

impl Form {
    /// Starts validating `body`, which must be a JSON object.
    pub fn new(body: Value) -> ApiResult<Form> {
        match body {
            Value::Object(body) => Ok(Form { body, errors: Map::new() }),
            other => Err(ApiError::non_field(format!(
                "Invalid data. Expected a dictionary, but got {}.",
                json_type_name(&other)
            ))),
        }
    }

    /// Whether the body has the key.
    pub fn has(&self, name: &str) -> bool {
        self.body.contains_key(name)
    }

    /// The raw value of a key.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.body.get(name)
    }

    /// Records an error for a field.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        let entry = self.errors.entry(name.to_owned()).or_insert_with(|| json!([]));
        if let Value::Array(list) = entry {
            list.push(Value::String(message.into()));
        }
    }

    /// Records "This field is required." when the key is missing.
    pub fn require(&mut self, name: &str) {
        if !self.has(name) {
            self.error(name, "This field is required.");
        }
    }

    fn present(&mut self, name: &str, nullable: bool) -> Option<Option<Value>> {
        match self.body.get(name) {
            None => None,
            Some(Value::Null) if nullable => Some(None),
            Some(Value::Null) => {
                self.error(name, "This field may not be null.");
                None
            }
            Some(v) => Some(Some(v.clone())),
        }
    }

    /// A string field (numbers and booleans are accepted and stringified, as DRF does).
    pub fn string(&mut self, name: &str, max_len: Option<usize>, nullable: bool) -> Option<Nullable<String>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        let s = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if b { "True" } else { "False" }.to_owned(),
            _ => {
                self.error(name, "Not a valid string.");
                return None;
            }
        };
        // PostgreSQL cannot store NUL in text; DRF refuses it for every CharField.
        if s.contains('\0') {
            self.error(name, "Null characters are not allowed.");
            return None;
        }
        if let Some(max) = max_len {
            if s.chars().count() > max {
                self.error(name, format!("Ensure this field has no more than {max} characters."));
                return None;
            }
        }
        Some(Some(s))
    }

    /// A boolean field (`true`, `"true"`, `1`, `"1"`, …).
    pub fn boolean(&mut self, name: &str, nullable: bool) -> Option<Nullable<bool>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        let parsed = match &value {
            Value::Bool(b) => Some(*b),
            Value::Number(n) if n.as_i64() == Some(1) => Some(true),
            Value::Number(n) if n.as_i64() == Some(0) => Some(false),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
                "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        match parsed {
            Some(b) => Some(Some(b)),
            None => {
                self.error(name, "Must be a valid boolean.");
                None
            }
        }
    }

    /// An integer field (numbers or numeric strings).
    pub fn integer(&mut self, name: &str, nullable: bool) -> Option<Nullable<i64>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        match as_integer(&value) {
            Some(n) => Some(Some(n)),
            None => {
                self.error(name, "A valid integer is required.");
                None
            }
        }
    }

    /// A number field.
    pub fn number(&mut self, name: &str, nullable: bool) -> Option<Nullable<f64>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        let parsed = match &value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        match parsed {
            Some(n) => Some(Some(n)),
            None => {
                self.error(name, "A valid number is required.");
                None
            }
        }
    }

    /// A primary-key field: an integer or a numeric string.
    pub fn pk(&mut self, name: &str, nullable: bool) -> Option<Nullable<i64>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        match as_integer(&value) {
            Some(n) => Some(Some(n)),
            None => {
                self.error(name, format!("Incorrect type. Expected pk value, received {}.", python_type_name(&value)));
                None
            }
        }
    }

    /// A JSON object field.
    pub fn object(&mut self, name: &str, nullable: bool) -> Option<Nullable<Value>> {
        let value = self.present(name, nullable)?;
        let Some(value) = value else {
            return Some(None);
        };
        if value.is_object() {
            Some(Some(value))
        } else {
            self.error(name, format!("Expected a dictionary of items but got type \"{}\".", python_type_name(&value)));
            None
        }
    }

    /// Fails with every recorded field error, if any.
    pub fn finish(&mut self) -> ApiResult<()> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(std::mem::take(&mut self.errors)))
        }
    }

    /// Whether any error was recorded so far.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Python's type name of a JSON value, as DRF puts it in messages.
pub fn python_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn json_type_name(v: &Value) -> &'static str {
    python_type_name(v)
}
