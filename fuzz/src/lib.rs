//! What the fuzz targets share: a heap meter, and the independent readings the targets
//! compare the exporter's parsers with (a strict JSON reader, exact decimal amounts, the
//! exposition's label syntax, the RFC grammars of the headers).
//!
//! None of it calls the exporter's own parsing code: where a target asserts that a parser
//! agrees with one of these, a bug in either shows.

pub mod alloc;
pub mod amount;
pub mod headers;
pub mod json;

/// Reads back one label value of an exposition line, `name="..."` as the text format and
/// OpenMetrics write it: `\\`, `\"` and `\n` are the only escapes, and a raw newline or `"`
/// cannot be inside. Returns the value and the rest after the closing quote.
pub fn read_label_value(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &rest[i + 1..])),
            '\n' => return None,
            '\\' => match chars.next()?.1 {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}
