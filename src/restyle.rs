//! JSON written straight into a byte buffer: export documents in Label Studio's two
//! styles, and the API's hottest responses in serde_json's compact form.
//!
//! A document is a fixed frame of keys (written by [`Writer`]) around the JSON the
//! database holds as text: the task's `data` and `meta`, the annotation's `result`.
//! Parsing that text and serialising it again (`serde_transcode` through serde_json's
//! formatter) cost about a third of a full sync's CPU. [`Writer::json_text`] copies it
//! token by token instead, adding the style's separators and indentation and, in
//! Label Studio's styles, escaping every non-ASCII character as Python's
//! `ensure_ascii` does. It validates as it goes and brings numbers and escapes to the
//! form serde_json gives them, so the bytes are exactly what serialising the parsed
//! value gives (the tests compare the two on many inputs), whatever wrote the text.

use crate::storage::spec::DocumentStyle;
use crate::time::{iso_stamp, Micros};

/// How the JSON is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `json.dumps(doc, indent=2)`: local files' documents.
    Indented,
    /// `json.dumps(doc)` (`", "` and `": "`): cloud objects' documents.
    Compact,
    /// serde_json's compact form (no spaces, non-ASCII as it is), as the API answers.
    Api,
}

impl From<DocumentStyle> for Style {
    fn from(style: DocumentStyle) -> Style {
        match style {
            DocumentStyle::Indented => Style::Indented,
            DocumentStyle::Compact => Style::Compact,
        }
    }
}

impl Style {
    /// Between a key and its value (each arm a constant: copied inline, not by `memcpy`).
    fn colon(self, out: &mut Vec<u8>) {
        match self {
            Style::Api => out.push(b':'),
            Style::Indented | Style::Compact => out.extend_from_slice(b": "),
        }
    }

    /// Whether non-ASCII characters (and DEL) are escaped as `\uXXXX`.
    fn ascii_only(self) -> bool {
        self != Style::Api
    }
}

/// serde_json refuses documents nested deeper than this (its recursion limit).
const MAX_NESTING: usize = 127;

/// Writes one document: keys, scalars and stored JSON text, each placed by the style.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    style: Style,
    /// Containers open around the next value.
    depth: usize,
    /// No member written yet in the innermost open container.
    first: bool,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>, style: Style) -> Self {
        Writer { out, style, depth: 0, first: true }
    }

    /// Opens an object (as the document, or as the value of the last [`key`](Self::key)
    /// or [`item`](Self::item)).
    pub fn open(&mut self) {
        self.open_with(b'{');
    }

    /// Closes the innermost object.
    pub fn close(&mut self) {
        self.close_with(b'}');
    }

    /// Opens a list, whose elements each follow an [`item`](Self::item).
    pub fn open_list(&mut self) {
        self.open_with(b'[');
    }

    /// Closes the innermost list.
    pub fn close_list(&mut self) {
        self.close_with(b']');
    }

    /// Starts an element of the innermost list; its value comes next.
    pub fn item(&mut self) {
        member(self.out, self.style, self.depth, self.first);
        self.first = false;
    }

    fn open_with(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.depth += 1;
        self.first = true;
    }

    fn close_with(&mut self, bracket: u8) {
        self.depth -= 1;
        close(self.out, self.style, self.depth, self.first);
        self.out.push(bracket);
        self.first = false;
    }

    /// Starts the member `key` (plain ASCII, nothing to escape); its value comes next.
    pub fn key(&mut self, key: &str) {
        member(self.out, self.style, self.depth, self.first);
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'"');
        self.style.colon(self.out);
    }

    /// A value as serde_json writes it: only in the API's style, which is serde_json's.
    pub fn value<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        assert_eq!(self.style, Style::Api, "serde_json writes only the API's style");
        serde_json::to_writer(&mut *self.out, value).expect("a value serialises to memory");
    }

    /// A timestamp as the API writes it (`2026-11-28T18:58:17.423841Z`), or `null`.
    pub fn stamp(&mut self, us: Option<Micros>) {
        match us {
            Some(us) => self.plain_str(iso_stamp(us).as_bytes()),
            None => self.null(),
        }
    }

    /// A string known to need no escaping (plain ASCII: a timestamp, a number's text).
    pub fn plain_str(&mut self, s: &[u8]) {
        debug_assert!(plain_run(s, true) == s.len(), "{s:?} needs escaping");
        self.out.push(b'"');
        self.out.extend_from_slice(s);
        self.out.push(b'"');
    }

    /// A literal JSON value: `null`, `true`, `[]`, `{}`, a stamp's quoted text…
    pub fn raw(&mut self, json: &str) {
        self.out.extend_from_slice(json.as_bytes());
    }

    pub fn null(&mut self) {
        self.raw("null");
    }

    pub fn bool(&mut self, v: bool) {
        self.raw(if v { "true" } else { "false" });
    }

    pub fn int(&mut self, v: i64) {
        self.raw(itoa::Buffer::new().format(v));
    }

    pub fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    /// A float as serde_json writes one (shortest round trip; `null` if not finite).
    pub fn opt_float(&mut self, v: Option<f64>) {
        match v {
            Some(v) => serde_json::to_writer(&mut *self.out, &v).expect("writing to memory cannot fail"),
            None => self.null(),
        }
    }

    /// A string, escaped as serde_json (and, in Label Studio's styles, `ensure_ascii`) do.
    pub fn str(&mut self, s: &str) {
        self.out.push(b'"');
        escape_str(self.out, s, self.style);
        self.out.push(b'"');
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.str(v),
            None => self.null(),
        }
    }

    /// Stored JSON text, re-written in the document's style; `null` (as the API reads
    /// it) if it is not JSON.
    pub fn json_text(&mut self, text: &str) {
        let start = self.out.len();
        let mut p = Restyler { text, s: text.as_bytes(), i: 0, out: self.out, style: self.style };
        if p.document(self.depth).is_err() {
            self.out.truncate(start);
            self.null();
        }
    }
}

/// A comma, a line break and the indentation of up to 31 levels: what goes before a
/// member, or before a closing bracket on its own line, is a slice of it.
const COMMA_LINE: &[u8; 64] = b",\n                                                              ";

/// Before a member or element: its separator and, indented, its line, copied in one
/// piece where it is shallow enough (documents rarely nest deeper).
fn member(out: &mut Vec<u8>, style: Style, depth: usize, first: bool) {
    match style {
        Style::Indented => match COMMA_LINE.get(usize::from(first)..2 + 2 * depth) {
            Some(glue) => out.extend_from_slice(glue),
            None => {
                if !first {
                    out.push(b',');
                }
                new_line(out, depth);
            }
        },
        Style::Compact if !first => out.extend_from_slice(b", "),
        Style::Api if !first => out.push(b','),
        Style::Compact | Style::Api => {}
    }
}

/// Before a closing bracket at `depth`: its own line, unless the container is empty.
fn close(out: &mut Vec<u8>, style: Style, depth: usize, empty: bool) {
    if style == Style::Indented && !empty {
        new_line(out, depth);
    }
}

/// A line break and the indentation of `depth`, copied in one piece where it is
/// shallow enough (documents rarely nest deeper).
fn new_line(out: &mut Vec<u8>, depth: usize) {
    match COMMA_LINE.get(1..2 + 2 * depth) {
        Some(line) => out.extend_from_slice(line),
        None => {
            out.push(b'\n');
            out.resize(out.len() + 2 * depth, b' ');
        }
    }
}

/// How many bytes at the start of `s` are plain, looked at eight at a time (the last
/// few padded with spaces, which are plain). With `ascii_only`, DEL and every byte
/// of a non-ASCII character are not plain. Inlined: it is the inner loop of every string.
#[inline(always)]
fn plain_run(s: &[u8], ascii_only: bool) -> usize {
    let mut i = 0;
    loop {
        let word = match s.get(i..i + 8) {
            Some(word) => u64::from_le_bytes(word.try_into().expect("eight bytes")),
            None => {
                let mut padded = [b' '; 8];
                padded[..s.len() - i].copy_from_slice(&s[i..]);
                u64::from_le_bytes(padded)
            }
        };
        let stops = stops_in(word, ascii_only);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        if i + 8 >= s.len() {
            return s.len();
        }
        i += 8;
    }
}

/// The high bit of each byte of `word` (in order from its lowest byte) that is not
/// plain: a control character, `"`, `\\`, and with `ascii_only` anything from 0x7f up.
/// Each test is exact for the lowest byte it flags (its borrows and carries only ever
/// run upwards, from a byte that is flagged rightly), so the lowest flag is the first
/// byte that is not plain.
#[inline(always)]
fn stops_in(word: u64, ascii_only: bool) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let high = if ascii_only { word.wrapping_add(ONES) | word } else { 0 };
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    (control | high | quote | backslash) & HIGH
}

/// `s` inside quotes: serde_json's escapes for `"`, `\` and control characters, and in
/// Label Studio's styles `\uXXXX` (UTF-16, lower-case hex) for everything from U+007F up.
pub fn escape_str(out: &mut Vec<u8>, s: &str, style: Style) {
    let ascii_only = style.ascii_only();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = i;
        i += plain_run(&bytes[i..], ascii_only);
        out.extend_from_slice(&bytes[run..i]);
        if let Some(ch) = s[i..].chars().next() {
            escape_char(out, ch, style);
            i += ch.len_utf8();
        }
    }
}

/// One character of a string as serde_json's escaping (and, in Label Studio's
/// styles, `ensure_ascii`) write it.
fn escape_char(out: &mut Vec<u8>, ch: char, style: Style) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short: &[u8] = match ch {
        '"' => b"\\\"",
        '\\' => b"\\\\",
        '\u{8}' => b"\\b",
        '\u{c}' => b"\\f",
        '\n' => b"\\n",
        '\r' => b"\\r",
        '\t' => b"\\t",
        ' '..='\u{7e}' => {
            out.push(ch as u8);
            return;
        }
        '\u{7f}'.. if !style.ascii_only() => {
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            return;
        }
        _ => {
            let mut units = [0u16; 2];
            for &unit in ch.encode_utf16(&mut units).iter() {
                let u = unit as usize;
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    HEX[u >> 12],
                    HEX[(u >> 8) & 15],
                    HEX[(u >> 4) & 15],
                    HEX[u & 15],
                ]);
            }
            return;
        }
    };
    out.extend_from_slice(short);
}

/// The text is not one JSON value that serde_json accepts.
struct Invalid;

type Step = Result<(), Invalid>;

/// A one-pass validating copier of JSON text into a document.
struct Restyler<'t, 'o> {
    text: &'t str,
    s: &'t [u8],
    i: usize,
    out: &'o mut Vec<u8>,
    style: Style,
}

impl Restyler<'_, '_> {
    /// One value with nothing but whitespace around it, placed at `depth`.
    fn document(&mut self, depth: usize) -> Step {
        self.value(depth, 0)?;
        self.skip_ws();
        if self.i == self.s.len() {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Result<u8, Invalid> {
        self.skip_ws();
        self.s.get(self.i).copied().ok_or(Invalid)
    }

    /// `depth`: containers open around the value in the document; `nesting`: in this text.
    fn value(&mut self, depth: usize, nesting: usize) -> Step {
        match self.peek()? {
            b'{' => self.container(depth, nesting, b'}'),
            b'[' => self.container(depth, nesting, b']'),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Invalid),
        }
    }

    /// An object (`end` = `}`: string keys, `:`) or an array (`end` = `]`).
    fn container(&mut self, depth: usize, nesting: usize, end: u8) -> Step {
        if nesting == MAX_NESTING {
            return Err(Invalid);
        }
        self.out.push(self.s[self.i]);
        self.i += 1;
        let mut first = true;
        if self.peek()? != end {
            loop {
                member(self.out, self.style, depth + 1, first);
                first = false;
                if end == b'}' {
                    if self.peek()? != b'"' {
                        return Err(Invalid);
                    }
                    self.string()?;
                    if self.peek()? != b':' {
                        return Err(Invalid);
                    }
                    self.i += 1;
                    self.style.colon(self.out);
                }
                self.value(depth + 1, nesting + 1)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b if b == end => break,
                    _ => return Err(Invalid),
                }
            }
        }
        self.i += 1;
        close(self.out, self.style, depth, first);
        self.out.push(end);
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        if !self.s[self.i..].starts_with(word) {
            return Err(Invalid);
        }
        self.i += word.len();
        self.out.extend_from_slice(word);
        Ok(())
    }

    /// A string, its escapes brought to serde_json's form, non-ASCII escaped.
    fn string(&mut self) -> Step {
        self.i += 1;
        self.out.push(b'"');
        loop {
            let run = self.i;
            self.i += plain_run(&self.s[self.i..], self.style.ascii_only());
            self.out.extend_from_slice(&self.s[run..self.i]);
            match self.s.get(self.i) {
                None => return Err(Invalid),
                Some(b'"') => {
                    self.i += 1;
                    self.out.push(b'"');
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(&b) if b < 0x20 => return Err(Invalid),
                Some(_) => {
                    let ch = self.text[self.i..].chars().next().ok_or(Invalid)?;
                    escape_char(self.out, ch, self.style);
                    self.i += ch.len_utf8();
                }
            }
        }
    }

    /// A backslash escape, decoded and written again as serde_json would.
    fn escape(&mut self) -> Step {
        let code = *self.s.get(self.i + 1).ok_or(Invalid)?;
        self.i += 2;
        let ch = match code {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(Invalid);
                        }
                        self.i += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Invalid);
                        }
                        char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)).ok_or(Invalid)?
                    }
                    _ => char::from_u32(unit).ok_or(Invalid)?,
                }
            }
            _ => return Err(Invalid),
        };
        escape_char(self.out, ch, self.style);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Invalid> {
        let digits = self.s.get(self.i..self.i + 4).ok_or(Invalid)?;
        let mut unit = 0;
        for &d in digits {
            unit = unit * 16 + (d as char).to_digit(16).ok_or(Invalid)?;
        }
        self.i += 4;
        Ok(unit)
    }

    /// A number: short integers as they are, anything else through serde_json's own
    /// parsing and printing (`-0` is a float there, large integers too).
    fn number(&mut self) -> Step {
        let start = self.i;
        let digits = |s: &[u8], mut i: usize| {
            while s.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let int_start = self.i;
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.i = digits(self.s, self.i),
            _ => return Err(Invalid),
        }
        let int_len = self.i - int_start;
        let mut integer = true;
        if self.s.get(self.i) == Some(&b'.') {
            let end = digits(self.s, self.i + 1);
            if end == self.i + 1 {
                return Err(Invalid);
            }
            (self.i, integer) = (end, false);
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let end = digits(self.s, self.i);
            if end == self.i {
                return Err(Invalid);
            }
            (self.i, integer) = (end, false);
        }
        let token = &self.text[start..self.i];
        if integer && int_len <= 18 && token != "-0" {
            self.out.extend_from_slice(token.as_bytes());
            return Ok(());
        }
        let n: serde_json::Number = serde_json::from_str(token).map_err(|_| Invalid)?;
        serde_json::to_writer(&mut *self.out, &n).map_err(|_| Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::document::to_bytes_styled;
    use serde_json::Value;

    const STYLES: [Style; 3] = [Style::Indented, Style::Compact, Style::Api];

    /// `value` serialised in `style`: by serde_json, with Python's formatter for
    /// Label Studio's styles.
    fn serialised(value: &Value, style: Style) -> Vec<u8> {
        match style {
            Style::Indented => to_bytes_styled(value, DocumentStyle::Indented),
            Style::Compact => to_bytes_styled(value, DocumentStyle::Compact),
            Style::Api => serde_json::to_vec(value).unwrap(),
        }
    }

    /// `text` as the member `"v"` of a one-key document, at depth 1, through the writer.
    fn through_writer(text: &str, style: Style) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, style);
        w.open();
        w.key("v");
        w.json_text(text);
        w.close();
        out
    }

    /// The same document through serde_json: parse, then serialise with the formatter.
    fn through_value(text: &str, style: Style) -> Vec<u8> {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        serialised(&serde_json::json!({ "v": value }), style)
    }

    fn assert_same(text: &str) {
        for style in STYLES {
            let ours = through_writer(text, style);
            let theirs = through_value(text, style);
            assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "{text:?} in {style:?}");
        }
    }

    #[test]
    fn stored_text_is_written_as_its_parsed_value_would_be() {
        let texts = [
            r#"[{"value":{"start":0,"end":5,"text":"h\u00e9llo \ud83d\ude00","labels":["PER"]},"id":"a1","from_name":"label","to_name":"text","type":"labels"}]"#,
            r#"{"z":1,"a":[],"m":{},"f":1.5,"g":-0.0,"e":1e300,"i":-12,"u":18446744073709551615,"n":null,"t":true,"s":"\u007f\n\"q\" \/"}"#,
            "\"just a string\"",
            "[[[]],{},[{}]]",
            "12345678901234567890123",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "-9223372036854775808",
            "-9223372036854775809",
            "-0",
            "0",
            "-0.0",
            "1E5",
            "1e-7",
            "0.1",
            "100.50",
            "2.5e+3",
            "  { \"a\" : [ 1 , 2 ] , \"b\" : { } }  ",
            "{\"text\":\"raw é ü ✓ 😀 \u{7f} and \u{80}\"}",
            r#""\u0041\u00e9\u0000\u001f\u0008\u000c\u000a\u000d\u0009\u0022\u005c\u002f\u007f\uFFFF""#,
            r#""\b\f\n\r\t\"\\\/""#,
            r#"{"a":{"a":{"a":[1,[2,[3,{"b":[]}]]]}}}"#,
            "true",
            "false",
            "null",
            "[1.0, 3.0e0, 0.000001, 1e16, 1e17, 123456789.123456789]",
        ];
        for text in texts {
            assert_same(text);
        }
    }

    #[test]
    fn duplicate_keys_are_kept_as_stored() {
        // As streaming the text through serde_json did; a parsed `Value` keeps the last.
        // (What labelport stores was serialised from a `Value`: it has no duplicates.)
        for style in STYLES {
            let text = String::from_utf8(through_writer(r#"{"dup":1,"dup":2}"#, style)).unwrap();
            let text = text.replace(": ", ":");
            assert!(text.contains(r#""dup":1"#) && text.contains(r#""dup":2"#), "{text}");
        }
    }

    #[test]
    fn text_serde_json_refuses_is_written_as_null() {
        let broken = [
            "",
            " ",
            "[",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1] x",
            "tru",
            "nul",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "1e400",
            "\"unterminated",
            "\"bad \\x escape\"",
            "\"raw \u{1} control\"",
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            r#""\u12""#,
            r#""\u12g4""#,
            "NaN",
            "[1 2]",
        ];
        for text in broken {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?} should be invalid JSON");
            for style in STYLES {
                assert_eq!(through_writer(text, style), through_value("null", style), "{text:?} in {style:?}");
            }
        }
    }

    #[test]
    fn nesting_is_refused_where_serde_json_refuses_it() {
        for levels in [126, 127, 128, 200] {
            let text = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            assert_same(&text);
        }
    }

    /// Plain ASCII that goes through unchanged inside a string.
    fn is_plain(b: u8) -> bool {
        (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
    }

    /// What goes through unchanged in the API's style: also DEL and non-ASCII bytes.
    fn is_plain_utf8(b: u8) -> bool {
        b >= 0x20 && b != b'"' && b != b'\\'
    }

    #[test]
    fn the_word_scan_stops_exactly_where_the_byte_scan_does() {
        // Every byte value, at every offset of a word (also of the padded last one),
        // after plain runs of every length, alone or followed by any other byte.
        for special in 0..=255u8 {
            for second in [b'a', b'"', b'\\', 0x00, 0x1f, 0x7f, 0xff, special] {
                for len in 0..20 {
                    for tail in [&b""[..], b"t", b"tail"] {
                        let mut s = vec![b'a'; len];
                        s.push(special);
                        s.push(second);
                        s.extend_from_slice(tail);
                        let expected = s.iter().position(|&b| !is_plain(b)).unwrap_or(s.len());
                        assert_eq!(plain_run(&s, true), expected, "{special:#x} {second:#x} after {len} plain bytes");
                        let expected = s.iter().position(|&b| !is_plain_utf8(b)).unwrap_or(s.len());
                        assert_eq!(plain_run(&s, false), expected, "{special:#x} {second:#x} after {len} bytes");
                    }
                }
            }
        }
        for len in 0..20 {
            assert_eq!(plain_run(&vec![b'a'; len], true), len);
        }
    }

    /// Pseudo-random JSON values (deterministic), compared on both paths.

    #[test]
    fn generated_values_are_written_as_serde_json_writes_them() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn gen(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            let pick = next() % if depth > 3 { 6 } else { 8 };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(next().is_multiple_of(2)),
                2 => Value::from(next() as i64 >> (next() % 64)),
                3 => Value::from(f64::from_bits(next()) % 1e6),
                4 => {
                    let alphabet = ['a', ' ', '"', '\\', '/', '\n', '\u{1}', '\u{7f}', 'é', '✓', '😀', '\u{2028}'];
                    let len = next() % 12;
                    Value::String((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect())
                }
                5 => Value::from(next() % 1000),
                6 => Value::Array((0..next() % 4).map(|_| gen(next, depth + 1)).collect()),
                _ => Value::Object((0..next() % 4).map(|k| (format!("k{k}é"), gen(next, depth + 1))).collect()),
            }
        }
        for _ in 0..2000 {
            let value = gen(&mut next, 0);
            // As serde_json stores it, and as an indenting writer would have.
            assert_same(&value.to_string());
            assert_same(&serde_json::to_string_pretty(&value).unwrap());
        }
    }

    #[test]
    fn writer_frames_match_serde_jsons_layout() {
        for style in STYLES {
            let mut out = Vec::new();
            let mut w = Writer::new(&mut out, style);
            w.open();
            w.key("id");
            w.int(-7);
            w.key("name");
            w.str("a \"q\" é\n");
            w.key("nested");
            w.open();
            w.key("empty");
            w.open();
            w.close();
            w.key("f");
            w.opt_float(Some(3.0));
            w.key("nan");
            w.opt_float(Some(f64::NAN));
            w.close();
            w.key("none");
            w.opt_int(None);
            w.key("list");
            w.raw("[]");
            w.key("items");
            w.open_list();
            for v in [1, 2] {
                w.item();
                w.int(v);
            }
            w.item();
            w.open();
            w.close();
            w.item();
            w.open_list();
            w.close_list();
            w.close_list();
            w.key("ok");
            w.bool(true);
            w.close();
            let expected = serde_json::json!({
                "id": -7, "name": "a \"q\" é\n",
                "nested": {"empty": {}, "f": 3.0, "nan": null},
                "none": null, "list": [], "items": [1, 2, {}, []], "ok": true,
            });
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(serialised(&expected, style)).unwrap());
        }
    }
}
