//! Seismic-style JSONL records: `{"id": ..., "vector": {"token": weight, ...}}`, one per line.
//!
//! Used for documents (index builds) and queries (clients, benchmarks). Documents may carry
//! `"attrs": {"name": value}` (a string, an integer or a list of strings each). Other fields of a
//! line are ignored.

use crate::error::{Error, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// One document's value of one attribute, as given in the documents JSONL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A list of strings (the document matches each).
    List(Vec<String>),
}

impl AttrValue {
    /// Converts a JSON value; the message says what is wrong otherwise.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<AttrValue, String> {
        use serde_json::Value as J;
        match value {
            J::String(s) => Ok(AttrValue::Str(s.clone())),
            J::Number(n) => n
                .as_i64()
                .map(AttrValue::Int)
                .ok_or_else(|| format!("{n} is not an integer within the 64-bit range")),
            J::Array(items) => items
                .iter()
                .map(|item| match item {
                    J::String(s) => Ok(s.clone()),
                    other => Err(format!("a list may hold only strings, found {other}")),
                })
                .collect::<std::result::Result<_, _>>()
                .map(AttrValue::List),
            other => Err(format!(
                "must be a string, an integer or a list of strings, found {other}"
            )),
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRecord {
    /// The record's id: a JSON string, or an integer rendered in decimal.
    pub id: String,
    /// `(token, weight)` pairs in the order of the line, zero weights dropped; every weight is
    /// finite and > 0, and every token appears once.
    pub terms: Vec<(String, f32)>,
    /// The optional `text` field (queries carry it).
    pub text: Option<String>,
    /// The optional `attrs` object (documents' attributes), in the order of the line.
    pub attrs: Vec<(String, AttrValue)>,
}

#[derive(Deserialize)]
struct RawRecord {
    id: Option<serde_json::Value>,
    vector: Option<TermList>,
    text: Option<String>,
    attrs: Option<serde_json::Value>,
}

/// The `vector` object with its keys kept in order and duplicates kept (to be reported).
struct TermList(Vec<(String, f64)>);

impl<'de> Deserialize<'de> for TermList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TermListVisitor;
        impl<'de> Visitor<'de> for TermListVisitor {
            type Value = TermList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping tokens to numeric weights")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TermList, A::Error> {
                let mut terms = Vec::with_capacity(map.size_hint().unwrap_or(64));
                while let Some((token, weight)) = map.next_entry::<String, f64>()? {
                    terms.push((token, weight));
                }
                Ok(TermList(terms))
            }
        }
        deserializer.deserialize_map(TermListVisitor)
    }
}

/// Parses one line; `location` (`file:line`) prefixes every error.
pub fn parse_line(line: &str, location: &dyn Fn() -> String) -> Result<SparseRecord> {
    let raw: RawRecord = serde_json::from_str(line)
        .map_err(|e| Error::bad_input(location(), format!("invalid record: {e}")))?;
    let id = match raw.id {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => {
            return Err(Error::bad_input(
                location(),
                format!("field `id` must be a non-empty string or an integer, got {other}"),
            ))
        }
        None => return Err(Error::bad_input(location(), "field `id` is missing")),
    };
    let Some(TermList(raw_terms)) = raw.vector else {
        return Err(Error::bad_input(location(), "field `vector` is missing"));
    };
    let mut terms = Vec::with_capacity(raw_terms.len());
    for (token, weight) in raw_terms {
        let w = weight as f32;
        if !w.is_finite() || w < 0.0 {
            return Err(Error::bad_input(
                location(),
                format!(
                    "field `vector`, token {token:?}: weight {weight} must be finite, >= 0 and within the float32 range"
                ),
            ));
        }
        if w > 0.0 {
            terms.push((token, w));
        }
    }
    let mut seen: Vec<&str> = terms.iter().map(|(t, _)| t.as_str()).collect();
    seen.sort_unstable();
    if let Some(dup) = seen.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::bad_input(
            location(),
            format!("field `vector`: token {:?} appears twice", dup[0]),
        ));
    }
    let attrs = match raw.attrs {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(name, value)| {
                AttrValue::from_json(value)
                    .map(|v| (name.clone(), v))
                    .map_err(|m| Error::bad_input(location(), format!("field `attrs.{name}`: {m}")))
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::bad_input(
                location(),
                format!("field `attrs` must be an object, got {other}"),
            ))
        }
    };
    Ok(SparseRecord {
        id,
        terms,
        text: raw.text,
        attrs,
    })
}

/// Parses a whole JSONL text (empty lines skipped); errors name `origin` and the 1-based line.
pub fn parse_all(text: &str, origin: &str) -> Result<Vec<SparseRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_line(line, &|| format!("{origin}:{}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<SparseRecord> {
        parse_line(line, &|| "f.jsonl:3".to_string())
    }

    #[test]
    fn parses_string_and_integer_ids_in_order() {
        let r =
            parse(r#"{"id": 42, "text": "t", "vector": {"b": 1.5, "a": 0.25, "z": 0}}"#).unwrap();
        assert_eq!(r.id, "42");
        assert_eq!(r.terms, vec![("b".into(), 1.5), ("a".into(), 0.25)]);
        assert_eq!(r.text.as_deref(), Some("t"));
        assert_eq!(parse(r#"{"id": "x", "vector": {}}"#).unwrap().id, "x");
        let r = parse(
            r#"{"id": 1, "vector": {}, "attrs": {"lang": "en", "year": 2020, "tags": ["a"]}}"#,
        )
        .unwrap();
        assert_eq!(
            r.attrs,
            vec![
                ("lang".into(), AttrValue::Str("en".into())),
                ("tags".into(), AttrValue::List(vec!["a".into()])),
                ("year".into(), AttrValue::Int(2020)),
            ]
        );
    }

    #[test]
    fn reports_location_and_field() {
        let cases = [
            (r#"{"vector": {}}"#, "`id` is missing"),
            (r#"{"id": 1.5, "vector": {}}"#, "`id` must be"),
            (r#"{"id": "a"}"#, "`vector` is missing"),
            (
                r#"{"id": "a", "vector": {"t": -1}}"#,
                "must be finite, >= 0",
            ),
            (r#"{"id": "a", "vector": {"t": 1e300}}"#, "must be finite"),
            (
                r#"{"id": "a", "vector": {"t": 1, "t": 2}}"#,
                "appears twice",
            ),
            (r#"{"id": "a", "vector": {"t": "x"}}"#, "invalid record"),
            (
                r#"{"id": "a", "vector": {}, "attrs": 3}"#,
                "`attrs` must be an object",
            ),
            (
                r#"{"id": "a", "vector": {}, "attrs": {"y": 1.5}}"#,
                "`attrs.y`: 1.5 is not an integer",
            ),
            (
                r#"{"id": "a", "vector": {}, "attrs": {"t": ["a", 1]}}"#,
                "`attrs.t`: a list may hold only strings",
            ),
            (
                r#"{"id": "a", "vector": {}, "attrs": {"t": true}}"#,
                "`attrs.t`: must be a string",
            ),
            ("not json", "invalid record"),
        ];
        for (line, expected) in cases {
            let err = parse(line).err().unwrap().to_string();
            assert!(err.starts_with("f.jsonl:3: "), "{err}");
            assert!(err.contains(expected), "{line}: {err}");
        }
    }
}
