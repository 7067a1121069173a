//! A strict RFC 8259 JSON reader, written apart from serde_json: objects keep their keys in
//! order (duplicates included) and numbers keep their text, so a target can tell what a
//! document says independently of the parser under test.

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum J {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string, unescaped.
    Str(String),
    /// An array.
    Arr(Vec<J>),
    /// An object's entries in order, duplicates kept.
    Obj(Vec<(String, J)>),
}

impl J {
    /// The last value of `key` in an object (later duplicates win, as serde_json's maps do).
    pub fn last(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// How many times `key` appears in an object.
    pub fn count(&self, key: &str) -> usize {
        match self {
            J::Obj(entries) => entries.iter().filter(|(k, _)| k == key).count(),
            _ => 0,
        }
    }
}

/// What reading a document gave.
#[derive(Debug)]
pub struct Read {
    /// The value, when the document is JSON (strings with bad UTF-8 or lone surrogates are
    /// read with replacement characters and flagged in `string_issue`).
    pub value: Option<J>,
    /// A string held invalid UTF-8 or a lone surrogate escape: serde_json refuses it where it
    /// reads the string and may skip it where it ignores the value, so such documents prove
    /// nothing either way.
    pub string_issue: bool,
    /// Deepest nesting of arrays and objects.
    pub depth: usize,
}

/// Reads a whole document (JSON whitespace around it allowed).
pub fn read(b: &[u8]) -> Read {
    let mut p = Parser {
        b,
        i: 0,
        string_issue: false,
        depth: 0,
        max_depth: 0,
    };
    let value = p.ws_value().filter(|_| {
        p.ws();
        p.i == b.len()
    });
    Read {
        value,
        string_issue: p.string_issue,
        depth: p.max_depth,
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    string_issue: bool,
    depth: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn lit(&mut self, s: &[u8], v: J) -> Option<J> {
        self.b[self.i..].starts_with(s).then(|| {
            self.i += s.len();
            v
        })
    }

    fn ws_value(&mut self) -> Option<J> {
        self.ws();
        // Deeper than any parser under test goes: give up rather than overflow the stack.
        if self.depth > 200 {
            return None;
        }
        match self.peek()? {
            b'n' => self.lit(b"null", J::Null),
            b't' => self.lit(b"true", J::Bool(true)),
            b'f' => self.lit(b"false", J::Bool(false)),
            b'"' => self.string().map(J::Str),
            b'[' => {
                self.i += 1;
                self.enter();
                let mut items = Vec::new();
                self.ws();
                if self.eat(b']').is_none() {
                    loop {
                        items.push(self.ws_value()?);
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(J::Arr(items))
            }
            b'{' => {
                self.i += 1;
                self.enter();
                let mut entries = Vec::new();
                self.ws();
                if self.eat(b'}').is_none() {
                    loop {
                        self.ws();
                        if self.peek()? != b'"' {
                            return None;
                        }
                        let k = self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        let v = self.ws_value()?;
                        entries.push((k, v));
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                self.depth -= 1;
                Some(J::Obj(entries))
            }
            b'-' | b'0'..=b'9' => self.number().map(J::Num),
            _ => None,
        }
    }

    fn enter(&mut self) {
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Option<String> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => break,
                0x00..=0x1f => return None,
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate wants a low one right after.
                                if self.b[self.i..].starts_with(b"\\u") {
                                    let save = self.i;
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if (0xDC00..0xE000).contains(&lo) {
                                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                        char::from_u32(c).unwrap_or('\u{fffd}')
                                    } else {
                                        self.i = save;
                                        self.string_issue = true;
                                        '\u{fffd}'
                                    }
                                } else {
                                    self.string_issue = true;
                                    '\u{fffd}'
                                }
                            } else {
                                char::from_u32(hi).unwrap_or_else(|| {
                                    self.string_issue = true;
                                    '\u{fffd}'
                                })
                            }
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => bytes.push(c),
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                self.string_issue = true;
                Some(String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        }
    }
}
