//! Python's `json.loads` error messages, for Label Studio's verbatim
//! `Google Application Credentials must be valid JSON string. <message>` (contract §6.4).
//!
//! A small scanner that follows CPython's `json.decoder` / `json.scanner` and
//! reports the first error the way Python does: `Expecting value: line 1 column 1
//! (char 0)`. Positions count characters (code points), as Python's do. Like
//! Python, it accepts `NaN`, `Infinity` and `-Infinity`.

/// Python's error message for `text`, or `None` if `json.loads(text)` succeeds.
pub fn loads_error(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser { s: &chars };
    let result = p.skip_ws(0).and_then(|start| p.value(start)).and_then(|end| {
        let end = p.skip_ws(end)?;
        if end == chars.len() {
            Ok(end)
        } else {
            Err(("Extra data", end))
        }
    });
    result.err().map(|(msg, pos)| format_error(&chars, msg, pos))
}

/// `msg: line L column C (char P)` as Python's `JSONDecodeError.__str__` gives it.
fn format_error(chars: &[char], msg: &str, pos: usize) -> String {
    let before = &chars[..pos.min(chars.len())];
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let column = match before.iter().rposition(|&c| c == '\n') {
        Some(nl) => pos - nl,
        None => pos + 1,
    };
    format!("{msg}: line {line} column {column} (char {pos})")
}

type Step = Result<usize, (&'static str, usize)>;

struct Parser<'a> {
    s: &'a [char],
}

impl Parser<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    /// Python's whitespace for JSON: space, tab, newline, carriage return.
    fn skip_ws(&self, mut i: usize) -> Step {
        while matches!(self.at(i), Some(' ' | '\t' | '\n' | '\r')) {
            i += 1;
        }
        Ok(i)
    }

    fn starts_with(&self, i: usize, word: &str) -> bool {
        let w: Vec<char> = word.chars().collect();
        self.s.len() >= i + w.len() && self.s[i..i + w.len()] == w[..]
    }

    /// One value starting exactly at `i` (`json.scanner.scan_once`).
    fn value(&mut self, i: usize) -> Step {
        match self.at(i) {
            Some('"') => self.string(i + 1),
            Some('{') => self.object(i + 1),
            Some('[') => self.array(i + 1),
            Some('n') if self.starts_with(i, "null") => Ok(i + 4),
            Some('t') if self.starts_with(i, "true") => Ok(i + 4),
            Some('f') if self.starts_with(i, "false") => Ok(i + 5),
            Some('N') if self.starts_with(i, "NaN") => Ok(i + 3),
            Some('I') if self.starts_with(i, "Infinity") => Ok(i + 8),
            Some('-') if self.starts_with(i, "-Infinity") => Ok(i + 9),
            _ => self.number(i).ok_or(("Expecting value", i)),
        }
    }

    /// Python's NUMBER_RE: `(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?`.
    fn number(&self, i: usize) -> Option<usize> {
        let digit = |j: usize| self.at(j).is_some_and(|c| c.is_ascii_digit());
        let mut j = i;
        if self.at(j) == Some('-') {
            j += 1;
        }
        match self.at(j) {
            Some('0') => j += 1,
            Some('1'..='9') => {
                while digit(j) {
                    j += 1;
                }
            }
            _ => return None,
        }
        if self.at(j) == Some('.') && digit(j + 1) {
            j += 1;
            while digit(j) {
                j += 1;
            }
        }
        if matches!(self.at(j), Some('e' | 'E')) {
            let mut k = j + 1;
            if matches!(self.at(k), Some('+' | '-')) {
                k += 1;
            }
            if digit(k) {
                while digit(k) {
                    k += 1;
                }
                j = k;
            }
        }
        Some(j)
    }

    /// The rest of a string whose opening quote is at `i - 1` (`py_scanstring`, strict).
    fn string(&self, i: usize) -> Step {
        let begin = i - 1;
        let mut j = i;
        loop {
            match self.at(j) {
                None => return Err(("Unterminated string starting at", begin)),
                Some('"') => return Ok(j + 1),
                Some('\\') => match self.at(j + 1) {
                    None => return Err(("Unterminated string starting at", begin)),
                    Some('u') => {
                        let hex = |k: usize| self.at(k).is_some_and(|c| c.is_ascii_hexdigit());
                        if !(j + 2..j + 6).all(hex) {
                            return Err(("Invalid \\uXXXX escape", j + 1));
                        }
                        j += 6;
                    }
                    Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => j += 2,
                    Some(_) => return Err(("Invalid \\escape", j)),
                },
                Some(c) if (c as u32) < 0x20 => return Err(("Invalid control character at", j)),
                Some(_) => j += 1,
            }
        }
    }

    /// The rest of an object whose `{` is at `i - 1` (`JSONObject`).
    fn object(&mut self, i: usize) -> Step {
        let mut j = self.skip_ws(i)?;
        match self.at(j) {
            Some('}') => return Ok(j + 1),
            Some('"') => {}
            _ => return Err(("Expecting property name enclosed in double quotes", j)),
        }
        loop {
            j = self.string(j + 1)?;
            j = self.skip_ws(j)?;
            if self.at(j) != Some(':') {
                return Err(("Expecting ':' delimiter", j));
            }
            j = self.skip_ws(j + 1)?;
            j = self.value(j)?;
            j = self.skip_ws(j)?;
            match self.at(j) {
                Some('}') => return Ok(j + 1),
                Some(',') => {}
                _ => return Err(("Expecting ',' delimiter", j)),
            }
            j = self.skip_ws(j + 1)?;
            if self.at(j) != Some('"') {
                return Err(("Expecting property name enclosed in double quotes", j));
            }
        }
    }

    /// The rest of an array whose `[` is at `i - 1` (`JSONArray`).
    fn array(&mut self, i: usize) -> Step {
        let mut j = self.skip_ws(i)?;
        if self.at(j) == Some(']') {
            return Ok(j + 1);
        }
        loop {
            j = self.value(j)?;
            j = self.skip_ws(j)?;
            match self.at(j) {
                Some(']') => return Ok(j + 1),
                Some(',') => {}
                _ => return Err(("Expecting ',' delimiter", j)),
            }
            j = self.skip_ws(j + 1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::loads_error;

    #[test]
    fn messages_match_pythons_json_module() {
        // Each expected message is what CPython's json.loads raises (3.11, checked; 3.13 words trailing commas differently).
        let cases = [
            ("", "Expecting value: line 1 column 1 (char 0)"),
            ("not json", "Expecting value: line 1 column 1 (char 0)"),
            ("   ", "Expecting value: line 1 column 4 (char 3)"),
            ("{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            ("{'a': 1}", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
            ("{\"a\" 1}", "Expecting ':' delimiter: line 1 column 6 (char 5)"),
            ("{\"a\": 1", "Expecting ',' delimiter: line 1 column 8 (char 7)"),
            ("{\"a\": 1,}", "Expecting property name enclosed in double quotes: line 1 column 9 (char 8)"),
            ("{\"a\": }", "Expecting value: line 1 column 7 (char 6)"),
            ("{} x", "Extra data: line 1 column 4 (char 3)"),
            ("{\"a", "Unterminated string starting at: line 1 column 2 (char 1)"),
            ("{\n  \"a\": tru\n}", "Expecting value: line 2 column 8 (char 9)"),
            ("[1, 2", "Expecting ',' delimiter: line 1 column 6 (char 5)"),
            ("\"a\\x\"", "Invalid \\escape: line 1 column 3 (char 2)"),
            ("\"a\tb\"", "Invalid control character at: line 1 column 3 (char 2)"),
            ("{\"é\": x}", "Expecting value: line 1 column 7 (char 6)"),
        ];
        for (text, want) in cases {
            assert_eq!(loads_error(text).as_deref(), Some(want), "{text:?}");
        }
    }

    #[test]
    fn what_python_accepts_is_accepted() {
        for ok in [
            "{}",
            " {\"type\": \"service_account\", \"n\": [1, -2.5e3, null, true, false]} ",
            "NaN",
            "-Infinity",
            "\"\\u00e9\"",
        ] {
            assert_eq!(loads_error(ok), None, "{ok:?}");
        }
    }
}
