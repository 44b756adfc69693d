//! A quick reader for the common JSON message, in front of serde_json.
//!
//! It reads what producers write nearly always: ASCII or UTF-8 strings
//! without escapes, numbers of at most 19 digits before any fraction or
//! exponent, and objects and arrays nested at most `MAX_DEPTH` deep. For such
//! a message it gives exactly what `decode::object` gives with serde_json;
//! for anything else (an escape, a long number, an error of any kind) it gives
//! up, and serde_json reads the message from the start and decides. So it
//! never accepts a message serde_json would refuse, and it is never the one
//! that refuses.
//!
//! Numbers: a fraction or an exponent makes a float, read by Rust's `f64`
//! parser (correctly rounded, as serde_json's `float_roundtrip` and Python's
//! `float` are); an integer is an unsigned one unless negative, and `-0` is
//! the float -0.0, as serde_json has it.

use std::borrow::Cow;

use crate::decode::Field;

/// Deeper nesting is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 64;
/// Longer numbers are left to serde_json.
const MAX_NUMBER_BYTES: usize = 64;

/// What a byte is inside a string: short strings are read a byte at a time,
/// one table look-up each.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const NON_ASCII: u8 = 2;
/// A backslash or a control character: the quick reader gives up.
const GIVE_UP: u8 = 3;
static STRING_BYTE: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte {
            0x00..=0x1f | 0x5c => GIVE_UP,
            0x22 => QUOTE,
            0x80..=0xff => NON_ASCII,
            _ => PLAIN,
        };
        byte += 1;
    }
    table
};

/// A number as read: what serde_json's visitor would have been given.
enum Read {
    UInt(u64),
    Int(i64),
    Float(f64),
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The next non-whitespace byte, consumed.
    fn next_token(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// A string's text, the opening quote already consumed; `None` for an
    /// escape, a control character, invalid UTF-8 or no closing quote.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        let mut ascii = true;
        loop {
            match STRING_BYTE[usize::from(*self.bytes.get(self.at)?)] {
                PLAIN => {}
                QUOTE => break,
                NON_ASCII => ascii = false,
                _ => return None,
            }
            self.at += 1;
        }
        let text = &self.bytes[start..self.at];
        self.at += 1;
        if ascii {
            // SAFETY: ASCII bytes are UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(text) })
        } else {
            std::str::from_utf8(text).ok()
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// A number whose first byte (`-` or a digit) is at `self.at`.
    fn number(&mut self) -> Option<Read> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let integer_start = self.at;
        let integer_digits = self.digits();
        if integer_digits == 0 || integer_digits > 19 {
            return None;
        }
        if integer_digits > 1 && self.bytes[integer_start] == b'0' {
            return None;
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            let exponent_digits = self.digits();
            if exponent_digits == 0 || exponent_digits > 4 {
                return None;
            }
            float = true;
        }
        if self.at - start > MAX_NUMBER_BYTES {
            return None;
        }
        // SAFETY: only ASCII digits, signs, '.', 'e' and 'E' were consumed.
        let text = unsafe { std::str::from_utf8_unchecked(&self.bytes[start..self.at]) };
        if float {
            let value: f64 = text.parse().ok()?;
            // serde_json refuses a number out of f64's range.
            return value.is_finite().then_some(Read::Float(value));
        }
        let magnitude: u64 = text[usize::from(negative)..].parse().ok()?;
        if !negative {
            return Some(Read::UInt(magnitude));
        }
        if magnitude == 0 {
            return Some(Read::Float(-0.0));
        }
        // 19 digits may not fit an i64 when negated: those go to serde_json.
        let magnitude = i64::try_from(magnitude).ok()?;
        Some(Read::Int(-magnitude))
    }

    fn literal(&mut self, rest: &[u8]) -> Option<()> {
        let end = self.at.checked_add(rest.len())?;
        (self.bytes.get(self.at..end)? == rest).then(|| self.at = end)
    }

    /// Any value, checked and dropped; `first` is its first byte, consumed.
    fn skip(&mut self, first: u8, depth: usize) -> Option<()> {
        match first {
            b'"' => self.string().map(drop),
            b'{' => self.members(depth + 1, |scanner, _, first, depth| {
                scanner.skip(first, depth)
            }),
            b'[' => self.elements(depth + 1),
            b't' => self.literal(b"rue"),
            b'f' => self.literal(b"alse"),
            b'n' => self.literal(b"ull"),
            b'-' | b'0'..=b'9' => {
                self.at -= 1;
                self.number().map(drop)
            }
            _ => None,
        }
    }

    /// An array's elements, its `[` consumed: each checked and dropped.
    fn elements(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut first = self.next_token()?;
        if first == b']' {
            return Some(());
        }
        loop {
            self.skip(first, depth)?;
            match self.next_token()? {
                b',' => first = self.next_token()?,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    /// An object's members, its `{` consumed: `member` reads each value,
    /// given the key, the value's first byte (consumed) and the depth.
    fn members(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str, u8, usize) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.next_token()? {
            b'}' => return Some(()),
            b'"' => {}
            _ => return None,
        }
        loop {
            let key = self.string()?;
            if self.next_token()? != b':' {
                return None;
            }
            let first = self.next_token()?;
            member(self, key, first, depth)?;
            match self.next_token()? {
                b',' => {
                    if self.next_token()? != b'"' {
                        return None;
                    }
                }
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// A value the decoder reads: a top-level one, or a member of one.
    fn field(&mut self, first: u8, depth: usize) -> Option<Field<'a>> {
        Some(match first {
            b'"' => Field::Str(Cow::Borrowed(self.string()?)),
            b't' => self.literal(b"rue").map(|()| Field::Bool(true))?,
            b'f' => self.literal(b"alse").map(|()| Field::Bool(false))?,
            b'n' => self.literal(b"ull").map(|()| Field::Null)?,
            b'[' => self.elements(depth + 1).map(|()| Field::Array)?,
            b'{' => {
                let mut found = Vec::new();
                self.members(depth + 1, |scanner, key, first, depth| {
                    found.push((Cow::Borrowed(key), scanner.field(first, depth)?));
                    Some(())
                })?;
                Field::Object(found)
            }
            b'-' | b'0'..=b'9' => {
                self.at -= 1;
                match self.number()? {
                    Read::UInt(value) => Field::UInt(value),
                    Read::Int(value) => Field::Int(value),
                    Read::Float(value) => Field::Float(value),
                }
            }
            _ => return None,
        })
    }
}

/// The values under `names` of the JSON object `value`, the last of a
/// repeated key, as `decode::object` reads them; `None` when this reader
/// gives up (serde_json then decides).
pub fn object<'a, const N: usize>(
    value: &'a [u8],
    names: &[&str; N],
) -> Option<[Option<Field<'a>>; N]> {
    let mut scanner = Scanner {
        bytes: value,
        at: 0,
    };
    if scanner.next_token()? != b'{' {
        return None;
    }
    let mut found: [Option<Field<'a>>; N] = std::array::from_fn(|_| None);
    scanner.members(1, |scanner, key, first, depth| {
        let which = crate::decode::wanted_bits(names, key);
        if which == 0 {
            return scanner.skip(first, depth);
        }
        let value = scanner.field(first, depth)?;
        crate::decode::keep(&mut found, which, value);
        Some(())
    })?;
    scanner.skip_whitespace();
    (scanner.at == value.len()).then_some(found)
}

fn same_field(a: &Field<'_>, b: &Field<'_>) -> bool {
    match (a, b) {
        (Field::Null, Field::Null) | (Field::Array, Field::Array) => true,
        (Field::Bool(x), Field::Bool(y)) => x == y,
        (Field::Int(x), Field::Int(y)) => x == y,
        (Field::UInt(x), Field::UInt(y)) => x == y,
        (Field::Float(x), Field::Float(y)) => x.to_bits() == y.to_bits(),
        (Field::Str(x), Field::Str(y)) => x == y,
        (Field::Object(x), Field::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((xk, xv), (yk, yv))| xk == yk && same_field(xv, yv))
        }
        _ => false,
    }
}

/// For tests: whether the quick reader read `value` as serde_json does,
/// under up to eight wanted `names`; `None` when it gave up.
#[pyo3::pyfunction]
pub fn quick_read_agrees(value: &[u8], names: Vec<String>) -> pyo3::PyResult<Option<bool>> {
    let Some(last) = names.last() else {
        return Err(pyo3::exceptions::PyValueError::new_err("no names"));
    };
    if names.len() > 8 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "at most eight names",
        ));
    }
    // Padded with the last name: a name wanted twice gets the value twice.
    let padded: [&str; 8] = std::array::from_fn(|at| names.get(at).unwrap_or(last).as_str());
    let Some(quick) = object(value, &padded) else {
        return Ok(None);
    };
    let Some(serde) = crate::decode::serde_object(value, &padded) else {
        return Ok(Some(false));
    };
    Ok(Some(quick.iter().zip(&serde).all(|pair| match pair {
        (Some(a), Some(b)) => same_field(a, b),
        (None, None) => true,
        _ => false,
    })))
}
