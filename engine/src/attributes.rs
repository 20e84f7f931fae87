//! Document attributes (`"attrs": {"lang": "en", "year": 2020, "tags": ["a", "b"]}` in the
//! documents JSONL), indexed for filters: a bitmap of documents per string value, and per integer
//! attribute its (value, document) pairs sorted by value, so equality, membership and ranges are
//! a lookup or two binary searches.
//!
//! An attribute holds strings (a string or a list of strings per document: *keyword*) or
//! integers (`i64`), the same kind in every document that has it. A document may lack any
//! attribute.
//!
//! On disk the attributes are one array file of bytes, `attrs.bin` (so the manifest carries its
//! size and checksum; indexes without attributes have no such file), little-endian:
//! `u32` attribute count, then per attribute in name order: `u32` name length, the name, `u8`
//! kind (1 keyword, 2 integer), and for a keyword `u32` value count then per value in order
//! `u32` length, the value, `u64` bitmap length, the bitmap (portable Roaring serialization);
//! for an integer `u64` pair count `n`, `n` × `i64` values ascending, `n` × `u32` documents.

use crate::error::{Error, Result};
use crate::expr::{CmpOp, Expr, Value};
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::path::Path;
pub use tandem_data::jsonl::AttrValue;

/// The attribute file's name in an index directory.
pub const FILE: &str = "attrs.bin";

const KIND_KEYWORD: u8 = 1;
const KIND_INTEGER: u8 = 2;

/// Checks an attribute name: filter expressions must be able to spell it.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let keyword = ["and", "or", "not", "in"].contains(&name.to_ascii_lowercase().as_str());
    if !first_ok || !rest_ok || keyword {
        return Err(format!(
            "attribute name {name:?} must be a letter or `_` followed by letters, digits, `_`, \
             `.` or `-`, and not AND, OR, NOT or IN"
        ));
    }
    Ok(())
}

/// The kind of an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Strings (one or a list per document).
    Keyword,
    /// Integers.
    Integer,
}

impl Kind {
    /// `"string"` or `"integer"`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Keyword => "string",
            Kind::Integer => "integer",
        }
    }

    /// The kind of a value.
    pub fn of(value: &AttrValue) -> Kind {
        match value {
            AttrValue::Int(_) => Kind::Integer,
            AttrValue::Str(_) | AttrValue::List(_) => Kind::Keyword,
        }
    }
}

/// One indexed attribute.
#[derive(Debug, Clone, PartialEq, Default)]
struct Column {
    keywords: BTreeMap<String, RoaringBitmap>,
    /// Integer (value, document) pairs; sorted by value, then document, once built.
    integers: Vec<(i64, u32)>,
}

/// Attributes of all documents, indexed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes {
    columns: BTreeMap<String, (Kind, Column)>,
    doc_count: u32,
}

impl Attributes {
    /// No attributes, for an index of `doc_count` documents.
    pub fn new(doc_count: u32) -> Attributes {
        Attributes {
            columns: BTreeMap::new(),
            doc_count,
        }
    }

    /// Whether no attribute is indexed.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The attributes and their kinds, by name.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, Kind)> {
        self.columns
            .iter()
            .map(|(name, (kind, _))| (name.as_str(), *kind))
    }

    /// Adds document `doc`'s attributes (documents are added in order; `doc_count` grows).
    /// Errors (an attribute of another kind than in earlier documents, a bad name) are messages
    /// for the caller to locate.
    pub fn add(
        &mut self,
        doc: u32,
        attrs: &[(String, AttrValue)],
    ) -> std::result::Result<(), String> {
        self.doc_count = self.doc_count.max(doc + 1);
        for (name, value) in attrs {
            check_name(name)?;
            let kind = Kind::of(value);
            let (existing, column) = self
                .columns
                .entry(name.clone())
                .or_insert_with(|| (kind, Column::default()));
            if *existing != kind {
                return Err(format!(
                    "attribute `{name}` is {} here but {} in earlier documents",
                    kind.name(),
                    existing.name()
                ));
            }
            match value {
                AttrValue::Int(v) => column.integers.push((*v, doc)),
                AttrValue::Str(s) => {
                    column.keywords.entry(s.clone()).or_default().insert(doc);
                }
                AttrValue::List(items) => {
                    for s in items {
                        column.keywords.entry(s.clone()).or_default().insert(doc);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sorts what [`Attributes::add`] collected; call it after the last document, before
    /// [`Attributes::eval`].
    pub fn finish(&mut self) {
        for (_, column) in self.columns.values_mut() {
            column.integers.sort_unstable();
        }
    }

    /// The attributes of the documents `renumber` keeps (`renumber[old]` is the new id, or
    /// `u32::MAX` for a dropped document), for an index of `doc_count` documents.
    pub fn remap(&self, renumber: &[u32], doc_count: u32) -> Attributes {
        let new_id = |d: u32| renumber.get(d as usize).copied().filter(|&n| n != u32::MAX);
        let columns = self
            .columns
            .iter()
            .map(|(name, (kind, column))| {
                let keywords = column
                    .keywords
                    .iter()
                    .map(|(value, docs)| (value.clone(), docs.iter().filter_map(new_id).collect()))
                    .filter(|(_, docs): &(String, RoaringBitmap)| !docs.is_empty())
                    .collect();
                let integers = column
                    .integers
                    .iter()
                    .filter_map(|&(v, d)| new_id(d).map(|n| (v, n)))
                    .collect();
                (name.clone(), (*kind, Column { keywords, integers }))
            })
            .filter(|(_, (_, c))| !(c.keywords.is_empty() && c.integers.is_empty()))
            .collect();
        Attributes { columns, doc_count }
    }

    /// Adds `other`'s attributes (documents already numbered in this set's id space, as
    /// [`Attributes::remap`] makes them), for merging segments; an attribute of another kind
    /// here than there is an error naming it.
    pub fn absorb(&mut self, other: Attributes) -> std::result::Result<(), String> {
        self.doc_count = self.doc_count.max(other.doc_count);
        for (name, (kind, column)) in other.columns {
            let (existing, into) = self
                .columns
                .entry(name.clone())
                .or_insert_with(|| (kind, Column::default()));
            if *existing != kind {
                return Err(format!(
                    "attribute `{name}` holds {}s in one segment and {}s in another",
                    kind.name(),
                    existing.name()
                ));
            }
            for (value, docs) in column.keywords {
                *into.keywords.entry(value).or_default() |= docs;
            }
            into.integers.extend(column.integers);
            into.integers.sort_unstable();
        }
        Ok(())
    }

    /// The on-disk bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.columns.len() as u32).to_le_bytes());
        for (name, (kind, column)) in &self.columns {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            match kind {
                Kind::Keyword => {
                    out.push(KIND_KEYWORD);
                    out.extend_from_slice(&(column.keywords.len() as u32).to_le_bytes());
                    for (value, bitmap) in &column.keywords {
                        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(&(bitmap.serialized_size() as u64).to_le_bytes());
                        // Writing into a Vec cannot fail.
                        let _ = bitmap.serialize_into(&mut out);
                    }
                }
                Kind::Integer => {
                    out.push(KIND_INTEGER);
                    let mut pairs = column.integers.clone();
                    pairs.sort_unstable();
                    out.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
                    for (value, _) in &pairs {
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                    for (_, doc) in &pairs {
                        out.extend_from_slice(&doc.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// Reads attributes encoded by [`Attributes::encode`] (`path` for errors), checking every
    /// length, kind, order and document id.
    pub fn decode(path: &Path, bytes: &[u8], doc_count: u32) -> Result<Attributes> {
        let mut reader = Reader { bytes, at: 0, path };
        let mut attributes = Attributes::new(doc_count);
        let count = reader.u32()?;
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let name = reader.string()?;
            if previous.as_ref().is_some_and(|p| *p >= name) || check_name(&name).is_err() {
                return Err(
                    reader.corrupt(format!("attribute {name:?} is out of order or invalid"))
                );
            }
            let mut column = Column::default();
            let kind = match reader.take(1)?[0] {
                KIND_KEYWORD => {
                    let values = reader.u32()?;
                    let mut last: Option<String> = None;
                    for _ in 0..values {
                        let value = reader.string()?;
                        if last.as_ref().is_some_and(|l| *l >= value) {
                            return Err(reader.corrupt(format!("values of `{name}` out of order")));
                        }
                        let declared = reader.u64()?;
                        let len = reader.len(declared)?;
                        let bitmap = RoaringBitmap::deserialize_from(reader.take(len)?)
                            .map_err(|e| reader.corrupt(format!("bitmap of `{name}`: {e}")))?;
                        if bitmap.max().is_some_and(|d| d >= doc_count) {
                            return Err(
                                reader.corrupt(format!("`{name}` names a document past the end"))
                            );
                        }
                        column.keywords.insert(value.clone(), bitmap);
                        last = Some(value);
                    }
                    Kind::Keyword
                }
                KIND_INTEGER => {
                    let declared = reader.u64()?;
                    let n = reader.len(declared)?;
                    let values = reader.take(
                        n.checked_mul(8)
                            .ok_or_else(|| reader.corrupt("too long".into()))?,
                    )?;
                    let docs = reader.take(
                        n.checked_mul(4)
                            .ok_or_else(|| reader.corrupt("too long".into()))?,
                    )?;
                    column.integers = values
                        .chunks_exact(8)
                        .zip(docs.chunks_exact(4))
                        .map(|(v, d)| {
                            let mut vb = [0u8; 8];
                            vb.copy_from_slice(v);
                            (
                                i64::from_le_bytes(vb),
                                u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
                            )
                        })
                        .collect();
                    if column.integers.windows(2).any(|w| w[0] > w[1])
                        || column.integers.iter().any(|&(_, d)| d >= doc_count)
                    {
                        return Err(reader.corrupt(format!(
                            "values of `{name}` are not sorted or name a document past the end"
                        )));
                    }
                    Kind::Integer
                }
                other => return Err(reader.corrupt(format!("unknown attribute kind {other}"))),
            };
            attributes.columns.insert(name.clone(), (kind, column));
            previous = Some(name);
        }
        if reader.at != bytes.len() {
            return Err(reader.corrupt("trailing bytes".into()));
        }
        Ok(attributes)
    }

    /// The documents `expr` matches.
    pub fn eval(&self, expr: &Expr) -> Result<RoaringBitmap> {
        self.eval_among(expr, &BTreeMap::new())
    }

    /// [`Attributes::eval`] for one segment among several: an attribute this segment does not
    /// have but `elsewhere` lists (with its kind: the attributes of the other segments) is one
    /// none of its documents holds, as a document without the attribute in a single segment.
    pub fn eval_among(
        &self,
        expr: &Expr,
        elsewhere: &BTreeMap<String, Kind>,
    ) -> Result<RoaringBitmap> {
        Ok(match expr {
            Expr::Compare { name, op, value } => {
                let (kind, column) = self.column(name, elsewhere)?;
                match (kind, op) {
                    (_, CmpOp::Ne) => {
                        let equal = self.eval_among(
                            &Expr::Compare {
                                name: name.clone(),
                                op: CmpOp::Eq,
                                value: value.clone(),
                            },
                            elsewhere,
                        )?;
                        self.all() - equal
                    }
                    (Kind::Keyword, CmpOp::Eq) => match value {
                        Value::Str(s) => column.keywords.get(s).cloned().unwrap_or_default(),
                        Value::Int(i) => return Err(mismatch(name, kind, &Value::Int(*i))),
                    },
                    (Kind::Keyword, _) => {
                        return Err(Error::invalid(
                            "filter",
                            format!(
                                "`{op}` compares integers, but attribute `{name}` holds strings"
                            ),
                        ))
                    }
                    (Kind::Integer, op) => {
                        let Value::Int(v) = value else {
                            return Err(mismatch(name, kind, value));
                        };
                        let below = column.integers.partition_point(|&(x, _)| x < *v);
                        let upto = column.integers.partition_point(|&(x, _)| x <= *v);
                        let n = column.integers.len();
                        let range = match op {
                            CmpOp::Eq => below..upto,
                            CmpOp::Lt => 0..below,
                            CmpOp::Le => 0..upto,
                            CmpOp::Gt => upto..n,
                            _ => below..n,
                        };
                        let mut docs: Vec<u32> =
                            column.integers[range].iter().map(|p| p.1).collect();
                        docs.sort_unstable();
                        docs.dedup();
                        RoaringBitmap::from_sorted_iter(docs).unwrap_or_default()
                    }
                }
            }
            Expr::In { name, values } => {
                let mut union = RoaringBitmap::new();
                for value in values {
                    union |= self.eval_among(
                        &Expr::Compare {
                            name: name.clone(),
                            op: CmpOp::Eq,
                            value: value.clone(),
                        },
                        elsewhere,
                    )?;
                }
                union
            }
            Expr::Not(inner) => self.all() - self.eval_among(inner, elsewhere)?,
            Expr::And(parts) => {
                let mut result = self.all();
                for part in parts {
                    result &= self.eval_among(part, elsewhere)?;
                }
                result
            }
            Expr::Or(parts) => {
                let mut result = RoaringBitmap::new();
                for part in parts {
                    result |= self.eval_among(part, elsewhere)?;
                }
                result
            }
        })
    }

    fn all(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.doc_count);
        all
    }

    fn column(&self, name: &str, elsewhere: &BTreeMap<String, Kind>) -> Result<(Kind, &Column)> {
        /// The column of an attribute no document of a segment holds.
        static ABSENT: Column = Column {
            keywords: BTreeMap::new(),
            integers: Vec::new(),
        };
        self.columns
            .get(name)
            .map(|(kind, column)| (*kind, column))
            .or_else(|| elsewhere.get(name).map(|&kind| (kind, &ABSENT)))
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .kinds()
                    .map(|(n, k)| format!("{n} ({})", k.name()))
                    .collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                Error::invalid(
                    "filter",
                    format!("unknown attribute `{name}`; this index has: {known}"),
                )
            })
    }
}

fn mismatch(name: &str, kind: Kind, value: &Value) -> Error {
    let hint = match kind {
        Kind::Keyword => "compare it with a quoted string",
        Kind::Integer => "compare it with an integer",
    };
    Error::invalid(
        "filter",
        format!(
            "attribute `{name}` holds {}s and {value} is not one: {hint}",
            kind.name()
        ),
    )
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, message: String) -> Error {
        Error::corrupt(self.path, format!("at byte {}: {message}", self.at))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.corrupt(format!("{len} bytes needed, the file ends before")))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn len(&self, value: u64) -> Result<usize> {
        usize::try_from(value)
            .ok()
            .filter(|&v| v <= self.bytes.len())
            .ok_or_else(|| self.corrupt(format!("length {value} is past the end")))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a string is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::parse;

    fn sample() -> Attributes {
        let mut a = Attributes::new(0);
        let s = |x: &str| AttrValue::Str(x.into());
        let docs: Vec<Vec<(String, AttrValue)>> = vec![
            vec![
                ("lang".into(), s("en")),
                ("year".into(), AttrValue::Int(2020)),
            ],
            vec![
                ("lang".into(), s("fr")),
                ("year".into(), AttrValue::Int(2018)),
                ("tags".into(), AttrValue::List(vec!["a".into(), "b".into()])),
            ],
            vec![("tags".into(), AttrValue::List(vec!["b".into()]))],
            vec![
                ("lang".into(), s("en")),
                ("year".into(), AttrValue::Int(-5)),
            ],
        ];
        for (doc, attrs) in docs.iter().enumerate() {
            a.add(doc as u32, attrs).unwrap();
        }
        a.finish();
        a
    }

    fn matches(a: &Attributes, text: &str) -> Vec<u32> {
        a.eval(&parse(text).unwrap()).unwrap().iter().collect()
    }

    #[test]
    fn evaluates_equality_membership_ranges_and_logic() {
        let a = sample();
        assert_eq!(matches(&a, "lang = 'en'"), vec![0, 3]);
        assert_eq!(matches(&a, "lang != 'en'"), vec![1, 2]);
        assert_eq!(matches(&a, "tags = 'b'"), vec![1, 2]);
        assert_eq!(matches(&a, "tags in ('a', 'zz')"), vec![1]);
        assert_eq!(matches(&a, "year >= 2018"), vec![0, 1]);
        assert_eq!(matches(&a, "year < 2018"), vec![3]);
        assert_eq!(matches(&a, "year <= 2018 and lang = 'fr'"), vec![1]);
        assert_eq!(matches(&a, "year = 2020 or tags = 'b'"), vec![0, 1, 2]);
        assert_eq!(matches(&a, "not year > -100"), vec![2]);
        assert_eq!(matches(&a, "year not in (2020, -5)"), vec![1, 2]);
    }

    #[test]
    fn refuses_unknown_attributes_and_kind_mismatches() {
        let a = sample();
        for (text, expected) in [
            ("color = 'red'", "unknown attribute `color`; this index has: lang (string), tags (string), year (integer)"),
            ("lang = 3", "holds strings and 3 is not one"),
            ("year = '2020'", "holds integers"),
            ("lang < 'x'", "`<` compares integers"),
        ] {
            let e = a.eval(&parse(text).unwrap()).unwrap_err().to_string();
            assert!(e.starts_with("filter: ") && e.contains(expected), "{text}: {e}");
        }
        let mut b = Attributes::new(0);
        let e = b
            .add(0, &[("x".into(), AttrValue::Int(1))])
            .and_then(|_| b.add(1, &[("x".into(), AttrValue::Str("s".into()))]))
            .unwrap_err();
        assert!(e.contains("string here but integer"), "{e}");
        assert!(b.add(2, &[("and".into(), AttrValue::Int(1))]).is_err());
        assert!(b.add(2, &[("9x".into(), AttrValue::Int(1))]).is_err());
    }

    #[test]
    fn round_trips_and_refuses_truncation() {
        let a = sample();
        let bytes = a.encode();
        let back = Attributes::decode(Path::new("attrs.bin"), &bytes, 4).unwrap();
        assert_eq!(matches(&back, "tags = 'a' or year < 0"), vec![1, 3]);
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            assert!(Attributes::decode(Path::new("attrs.bin"), &bytes[..cut], 4).is_err());
        }
        assert!(Attributes::decode(Path::new("attrs.bin"), &bytes, 2).is_err());
    }
}
