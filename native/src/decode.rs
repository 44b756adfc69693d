//! The common shape of a prediction or outcome message, decoded without
//! Python objects: the same result as `streamer/records.py`, or nothing.
//!
//! Every function here returns `None` for anything it is not sure to decode
//! exactly as `records.py` does: invalid messages (whose reason the Python
//! decoder gives), floats where a string is made of a number (Python's float
//! repr), ISO timestamps in forms other than `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`,
//! probability sums too close to the tolerance to decide without `math.fsum`.
//! The caller then hands the message to the Python decoder. So this module
//! can only be faster, never different.

use compact_str::{CompactString, ToCompactString};
use std::borrow::Cow;
use std::fmt;

use serde::de::value::SeqAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Number;

/// Longest model name, version or segment value, in code points.
const MAX_NAME_CHARS: usize = 128;
/// 9999-12-31T23:59:59.999Z.
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;
const OTHER_SEGMENT: &str = "other";

pub struct Fields {
    pub event_id: String,
    pub model: String,
    pub model_version: String,
    pub timestamp: String,
    pub probability: String,
    pub probabilities: String,
    pub label: String,
    pub segment: String,
}

pub struct DecodedPrediction {
    pub id: CompactString,
    pub model: CompactString,
    pub version: CompactString,
    pub timestamp_ms: i64,
    pub probability: Option<f64>,
    pub classes: Option<Vec<CompactString>>,
    pub probabilities: Option<Vec<f64>>,
    pub segment: Vec<CompactString>,
}

pub enum Label {
    Bool(bool),
    Int(i128),
    Str(CompactString),
}

pub struct DecodedOutcome {
    pub id: CompactString,
    pub label: Label,
    pub timestamp_ms: i64,
}

/// One top-level value the decoder reads. Strings without escapes borrow
/// the message's bytes; objects (class probabilities, segments) are kept
/// as their members in message order, since the decoder looks into them.
#[derive(Clone)]
pub(crate) enum Field<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An object's members in message order; nested objects are read the
    /// same way, arrays only checked.
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
    Array,
}

/// The last member named `name`, as the object built in full would hold it.
fn member<'m, 'a>(members: &'m [(Cow<'a, str>, Field<'a>)], name: &str) -> Option<&'m Field<'a>> {
    members
        .iter()
        .rev()
        .find(|(key, _)| key.as_ref() == name)
        .map(|(_, value)| value)
}

impl Field<'_> {
    fn number(&self) -> Option<Number> {
        match self {
            Field::Int(value) => Some(Number::from(*value)),
            Field::UInt(value) => Some(Number::from(*value)),
            Field::Float(value) => Number::from_f64(*value),
            _ => None,
        }
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, value: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(value))
    }
    fn visit_u64<E>(self, value: u64) -> Result<Field<'de>, E> {
        Ok(Field::UInt(value))
    }
    fn visit_f64<E>(self, value: f64) -> Result<Field<'de>, E> {
        Ok(Field::Float(value))
    }
    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(value)))
    }
    fn visit_str<E>(self, value: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E>(self, value: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(value)))
    }
    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(Text(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Field::Object(members))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        Skipped::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(Field::Array)
    }
}

/// A string that borrows the message's bytes when it has no escapes
/// (serde's own `Cow<str>` always copies).
struct Text<'a>(Cow<'a, str>);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(value)))
    }
    fn visit_str<E>(self, value: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value.to_owned())))
    }
    fn visit_string<E>(self, value: String) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(value)))
    }
}

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

/// A value the decoder does not read, checked as strictly as one it does:
/// `IgnoredAny` alone would let invalid UTF-8 through in strings.
struct Skipped;

impl<'de> Visitor<'de> for Skipped {
    type Value = Skipped;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_unit<E>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skipped, A::Error> {
        while map.next_key::<Skipped>()?.is_some() {
            map.next_value::<Skipped>()?;
        }
        Ok(Skipped)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skipped, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }
}

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Skipped)
    }
}

/// Which of `names` `key` is, as a bit set (names may repeat).
pub(crate) fn wanted_bits(names: &[&str], key: &str) -> u32 {
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| **name == key)
        .fold(0, |found, (at, _)| found | 1 << at)
}

/// Put `value` in the slots of the wanted names `which` (a bit set, not 0).
pub(crate) fn keep<'a, const N: usize>(
    found: &mut [Option<Field<'a>>; N],
    which: u32,
    value: Field<'a>,
) {
    // A name wanted twice (two fields configured alike) is rare: only then
    // is the value copied.
    let last = 31 - which.leading_zeros() as usize;
    for (at, slot) in found.iter_mut().enumerate().take(last) {
        if which & (1 << at) != 0 {
            *slot = Some(value.clone());
        }
    }
    found[last] = Some(value);
}

/// Which of the wanted names a key is, as a bit set (names may repeat).
struct Key<'n> {
    names: &'n [&'n str],
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = u32;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }
    fn visit_str<E>(self, key: &str) -> Result<u32, E> {
        Ok(wanted_bits(self.names, key))
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u32, D::Error> {
        deserializer.deserialize_str(self)
    }
}

/// The top-level object's values under `names`, the last of a repeated key
/// (as a JSON object built in full keeps it); every other value is parsed
/// and dropped.
struct Wanted<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for Wanted<'_, N> {
    type Value = [Option<Field<'de>>; N];

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<Field<'de>>; N] = std::array::from_fn(|_| None);
        while let Some(which) = map.next_key_seed(Key { names: self.names })? {
            if which == 0 {
                map.next_value::<Skipped>()?;
                continue;
            }
            keep(&mut found, which, map.next_value()?);
        }
        Ok(found)
    }
}

/// The values under `names` of the JSON object `value`; `None` unless it is
/// one. The quick reader (`scan.rs`) reads the common message; serde_json
/// reads the rest, and every message the quick one gives up on.
fn object<'a, const N: usize>(
    value: &'a [u8],
    names: &[&str; N],
) -> Option<[Option<Field<'a>>; N]> {
    crate::scan::object(value, names).or_else(|| serde_object(value, names))
}

/// `object` by serde_json alone.
pub(crate) fn serde_object<'a, const N: usize>(
    value: &'a [u8],
    names: &[&str; N],
) -> Option<[Option<Field<'a>>; N]> {
    let mut deserializer = serde_json::Deserializer::from_slice(value);
    let found = deserializer.deserialize_map(Wanted { names }).ok()?;
    deserializer.end().ok()?;
    Some(found)
}

/// The text of an integer, as Python's `str` of it; `None` for a float.
fn integer_text(number: &Number) -> Option<CompactString> {
    (number.is_i64() || number.is_u64()).then(|| number.to_compact_string())
}

fn integer_field_text(value: &Field<'_>) -> Option<CompactString> {
    integer_text(&value.number()?)
}

fn event_id(raw: Option<&Field<'_>>, key: Option<&[u8]>) -> Option<CompactString> {
    match raw {
        Some(Field::Str(text)) if !text.is_empty() => Some(text.as_ref().into()),
        Some(Field::Null) | None => {
            let key = key.filter(|key| !key.is_empty())?;
            Some(std::str::from_utf8(key).ok()?.into())
        }
        Some(other) => integer_field_text(other),
    }
}

fn short(text: &str) -> bool {
    text.len() <= MAX_NAME_CHARS || text.chars().count() <= MAX_NAME_CHARS
}

fn timestamp(raw: Option<&Field<'_>>, kafka_timestamp_ms: Option<i64>) -> Option<i64> {
    let timestamp_ms = match raw {
        None | Some(Field::Null) => kafka_timestamp_ms.filter(|&ms| ms >= 0)?,
        Some(Field::Str(text)) => iso_timestamp_ms(text)?,
        Some(other) => other.number()?.as_i64().filter(|&ms| ms >= 0)?,
    };
    (0..=MAX_TIMESTAMP_MS)
        .contains(&timestamp_ms)
        .then_some(timestamp_ms)
}

fn digits(text: &[u8]) -> Option<i64> {
    let mut value = 0i64;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(byte - b'0');
    }
    Some(value)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,3}][Z|+HH:MM|-HH:MM]` as epoch milliseconds.
pub fn iso_timestamp_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let hour = digits(&bytes[11..13])?;
    let minute = digits(&bytes[14..16])?;
    let second = digits(&bytes[17..19])?;
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &bytes[19..];
    let mut millis = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let len = fraction
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if !(1..=3).contains(&len) {
            return None;
        }
        millis = digits(&fraction[..len])? * 10i64.pow(3 - len as u32);
        rest = &fraction[len..];
    }
    let offset_minutes = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(
        days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis
            - offset_minutes * 60_000,
    )
}

/// A probability in [0, 1].
fn probability(number: &Number) -> Option<f64> {
    // serde_json reads the integer `-0` as the float -0.0, orjson as the
    // int 0 (so 0.0): which one the text was cannot be told here.
    number
        .as_f64()
        .filter(|p| (0.0..=1.0).contains(p) && !(*p == 0.0 && p.is_sign_negative()))
}

fn distribution(raw: &Field<'_>, sum_tolerance: f64) -> Option<(Vec<CompactString>, Vec<f64>)> {
    let Field::Object(members) = raw else {
        return None;
    };
    // The classes in the order of their names' bytes: UTF-8 order is code
    // point order, which is how Python sorts them. A stable sort keeps a
    // repeated name's members in message order, and the last one counts,
    // as in a JSON object built in full.
    let mut sorted: Vec<&(Cow<'_, str>, Field<'_>)> = members.iter().collect();
    if !members.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut classes = Vec::with_capacity(sorted.len());
    let mut probabilities = Vec::with_capacity(sorted.len());
    for (at, (name, value)) in sorted.iter().enumerate() {
        if sorted.get(at + 1).is_some_and(|next| next.0 == *name) {
            continue;
        }
        classes.push(CompactString::from(name.as_ref()));
        probabilities.push(probability(&value.number()?)?);
    }
    if classes.len() < 2 {
        return None;
    }
    let sum: f64 = probabilities.iter().sum();
    // Decided here only when far enough from the tolerance that the naive
    // sum's rounding error (at most n ulps of 1) cannot flip it.
    let margin = (probabilities.len() as f64 + 1.0) * f64::EPSILON;
    if (sum - 1.0).abs() > sum_tolerance - margin {
        return None;
    }
    Some((classes, probabilities))
}

fn segment_value(raw: Option<&Field<'_>>) -> Option<CompactString> {
    Some(match raw {
        Some(Field::Bool(flag)) => CompactString::from(if *flag { "true" } else { "false" }),
        Some(Field::Str(text)) => {
            if short(text) {
                text.as_ref().into()
            } else {
                OTHER_SEGMENT.into()
            }
        }
        Some(number @ (Field::Int(_) | Field::UInt(_) | Field::Float(_))) => {
            integer_field_text(number)?
        }
        _ => CompactString::default(),
    })
}

fn segment(raw: Option<&Field<'_>>, keys: &[String]) -> Option<Vec<CompactString>> {
    let found = match raw {
        Some(Field::Object(members)) => Some(members.as_slice()),
        _ => None,
    };
    keys.iter()
        .map(|key| segment_value(found.and_then(|members| member(members, key))))
        .collect()
}

fn version(raw: Option<&Field<'_>>) -> Option<CompactString> {
    match raw {
        None | Some(Field::Null) => Some(CompactString::default()),
        Some(Field::Str(text)) => short(text).then(|| text.as_ref().into()),
        Some(other) => integer_field_text(other),
    }
}

pub fn prediction(
    fields: &Fields,
    sum_tolerance: f64,
    segment_keys: &[String],
    value: &[u8],
    key: Option<&[u8]>,
    kafka_timestamp_ms: Option<i64>,
) -> Option<DecodedPrediction> {
    let names = [
        fields.event_id.as_str(),
        fields.model.as_str(),
        fields.model_version.as_str(),
        fields.timestamp.as_str(),
        fields.segment.as_str(),
        fields.probabilities.as_str(),
        fields.probability.as_str(),
    ];
    let [id, model, version_field, timestamp_field, segment_field, probabilities, probability_field] =
        object(value, &names)?;
    let id = event_id(id.as_ref(), key)?;
    let model = match model {
        Some(Field::Str(text)) if !text.is_empty() && short(&text) => {
            CompactString::from(text.as_ref())
        }
        _ => return None,
    };
    let version = version(version_field.as_ref())?;
    let timestamp_ms = timestamp(timestamp_field.as_ref(), kafka_timestamp_ms)?;
    let segment = if segment_keys.is_empty() {
        Vec::new()
    } else {
        segment(segment_field.as_ref(), segment_keys)?
    };
    if let Some(raw) = &probabilities {
        let (classes, probabilities) = distribution(raw, sum_tolerance)?;
        return Some(DecodedPrediction {
            id,
            model,
            version,
            timestamp_ms,
            probability: None,
            classes: Some(classes),
            probabilities: Some(probabilities),
            segment,
        });
    }
    let probability = probability(&probability_field?.number()?)?;
    Some(DecodedPrediction {
        id,
        model,
        version,
        timestamp_ms,
        probability: Some(probability),
        classes: None,
        probabilities: None,
        segment,
    })
}

pub fn outcome(
    fields: &Fields,
    value: &[u8],
    key: Option<&[u8]>,
    kafka_timestamp_ms: Option<i64>,
) -> Option<DecodedOutcome> {
    let names = [
        fields.event_id.as_str(),
        fields.label.as_str(),
        fields.timestamp.as_str(),
    ];
    let [id, label, timestamp_field] = object(value, &names)?;
    let id = event_id(id.as_ref(), key)?;
    let label = match label? {
        Field::Bool(flag) => Label::Bool(flag),
        Field::Str(text) => Label::Str(text.as_ref().into()),
        Field::Int(value) => Label::Int(i128::from(value)),
        Field::UInt(value) => Label::Int(i128::from(value)),
        _ => return None,
    };
    let timestamp_ms = timestamp(timestamp_field.as_ref(), kafka_timestamp_ms)?;
    Some(DecodedOutcome {
        id,
        label,
        timestamp_ms,
    })
}
