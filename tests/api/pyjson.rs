//! Python's `json.dumps` as the tests' oracle for exported bytes, written apart from
//! the engine's serialiser so the two check each other.

use serde_json::Value;

/// `json.dumps(v)`: separators `", "` and `": "`, every character outside printable
/// ASCII as `\uXXXX` (lower-case hex, UTF-16 surrogate pairs above U+FFFF).
pub fn dumps(v: &Value) -> String {
    let mut out = String::new();
    compact(v, &mut out);
    out
}

fn compact(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                compact(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&ascii(&serde_json::to_string(k).unwrap()));
                out.push_str(": ");
                compact(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&ascii(&serde_json::to_string(scalar).unwrap())),
    }
}

/// `json.dumps(v, indent=2)`: serde's pretty printer has the same layout.
pub fn dumps_indented(v: &Value) -> String {
    ascii(&serde_json::to_string_pretty(v).unwrap())
}

/// Escapes everything from U+007F up as Python's `ensure_ascii` does.
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if (ch as u32) < 0x7f {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
