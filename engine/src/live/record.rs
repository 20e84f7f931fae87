//! The writes a write-ahead log record holds, and their binary encoding.
//!
//! Layout (little-endian; strings are a `u32` byte length and UTF-8 bytes):
//! `seq u64`, `kind u8` (1 upsert, 2 delete), then for an upsert `count u32` documents, each
//! `id`, `terms u32` × (`term string`, `weight f32`), `rows u32`, `dim u32`, `rows·dim` f16
//! values, `attrs u32` × (`name`, `tag u8` (1 string, 2 integer, 3 list), the value); for a
//! delete `count u32` ids. Term strings (not ids) make a record mean the same thing whatever
//! the vocabulary was when it is replayed.

use half::f16;
use tandem_data::jsonl::AttrValue;

/// A document as a live writer takes it: validated, terms by string, vectors as f16.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDoc {
    /// The external id.
    pub id: String,
    /// `(term, weight)` pairs: distinct terms, finite weights > 0.
    pub terms: Vec<(String, f32)>,
    /// Row-major token vectors, `dim` values per row (at least one row).
    pub vectors: Vec<f16>,
    /// Its attributes.
    pub attrs: Vec<(String, AttrValue)>,
}

/// One logged write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Add these documents, replacing any with the same ids.
    Upsert(Vec<NewDoc>),
    /// Delete the documents with these ids.
    Delete(Vec<String>),
}

const UPSERT: u8 = 1;
const DELETE: u8 = 2;

/// Encodes `op` with sequence number `seq`; `dim` is the index's.
pub fn encode(seq: u64, op: &WriteOp, dim: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&seq.to_le_bytes());
    match op {
        WriteOp::Upsert(docs) => {
            out.push(UPSERT);
            put_u32(&mut out, docs.len());
            for doc in docs {
                put_str(&mut out, &doc.id);
                put_u32(&mut out, doc.terms.len());
                for (term, weight) in &doc.terms {
                    put_str(&mut out, term);
                    out.extend_from_slice(&weight.to_le_bytes());
                }
                put_u32(&mut out, doc.vectors.len() / dim.max(1));
                put_u32(&mut out, dim);
                out.extend_from_slice(bytemuck::cast_slice(&doc.vectors));
                put_u32(&mut out, doc.attrs.len());
                for (name, value) in &doc.attrs {
                    put_str(&mut out, name);
                    match value {
                        AttrValue::Str(s) => {
                            out.push(1);
                            put_str(&mut out, s);
                        }
                        AttrValue::Int(v) => {
                            out.push(2);
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                        AttrValue::List(items) => {
                            out.push(3);
                            put_u32(&mut out, items.len());
                            for item in items {
                                put_str(&mut out, item);
                            }
                        }
                    }
                }
            }
        }
        WriteOp::Delete(ids) => {
            out.push(DELETE);
            put_u32(&mut out, ids.len());
            for id in ids {
                put_str(&mut out, id);
            }
        }
    }
    out
}

/// Decodes a record's payload into its sequence number and write; the message says what is
/// malformed.
pub fn decode(bytes: &[u8]) -> Result<(u64, WriteOp), String> {
    let mut r = Reader { bytes, at: 0 };
    let seq = r.u64()?;
    let op = match r.u8()? {
        UPSERT => {
            let count = r.len()?;
            let mut docs = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let id = r.string()?;
                let n_terms = r.len()?;
                let mut terms = Vec::with_capacity(n_terms.min(1 << 16));
                for _ in 0..n_terms {
                    let term = r.string()?;
                    let weight = f32::from_le_bytes(r.array()?);
                    terms.push((term, weight));
                }
                let rows = r.len()?;
                let dim = r.len()?;
                let values = rows
                    .checked_mul(dim)
                    .ok_or_else(|| "vector shape overflows".to_string())?;
                let raw = r.take(values.checked_mul(2).ok_or("vector shape overflows")?)?;
                let vectors = raw
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let n_attrs = r.len()?;
                let mut attrs = Vec::with_capacity(n_attrs.min(1 << 10));
                for _ in 0..n_attrs {
                    let name = r.string()?;
                    let value = match r.u8()? {
                        1 => AttrValue::Str(r.string()?),
                        2 => AttrValue::Int(i64::from_le_bytes(r.array()?)),
                        3 => {
                            let n = r.len()?;
                            let mut items = Vec::with_capacity(n.min(1 << 10));
                            for _ in 0..n {
                                items.push(r.string()?);
                            }
                            AttrValue::List(items)
                        }
                        tag => return Err(format!("unknown attribute tag {tag}")),
                    };
                    attrs.push((name, value));
                }
                docs.push(NewDoc {
                    id,
                    terms,
                    vectors,
                    attrs,
                });
            }
            WriteOp::Upsert(docs)
        }
        DELETE => {
            let count = r.len()?;
            let mut ids = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                ids.push(r.string()?);
            }
            WriteOp::Delete(ids)
        }
        kind => return Err(format!("unknown write kind {kind}")),
    };
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the write", bytes.len() - r.at));
    }
    Ok((seq, op))
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    // Counts and lengths are bounded by the server's request limits, far below 2^32.
    out.extend_from_slice(&(value as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Reads a payload front to back; every read checks the bytes are there.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn len(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| format!("a string is not UTF-8: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_and_truncation_is_refused() {
        let doc = NewDoc {
            id: "d1".into(),
            terms: vec![("alpha".into(), 1.5), ("β".into(), 0.25)],
            vectors: (0..6).map(|i| f16::from_f32(i as f32 - 2.5)).collect(),
            attrs: vec![
                ("lang".into(), AttrValue::Str("en".into())),
                ("year".into(), AttrValue::Int(-2019)),
                ("tags".into(), AttrValue::List(vec!["a".into(), "b".into()])),
            ],
        };
        for op in [
            WriteOp::Upsert(vec![
                doc.clone(),
                NewDoc {
                    id: "d2".into(),
                    ..doc
                },
            ]),
            WriteOp::Delete(vec!["x".into(), String::new()]),
        ] {
            let bytes = encode(42, &op, 3);
            assert_eq!(decode(&bytes), Ok((42, op)));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }
}
