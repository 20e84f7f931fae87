//! Parsing the documents JSONL into a compressed sparse-row matrix of term ids and weights.

use crate::attributes::Attributes;
use crate::build::Progress;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use tandem_data::jsonl::{parse_line, SparseRecord};

/// How tokens of the documents map to vocabulary ids.
pub enum Vocabulary {
    /// Terms are numbered in order of first appearance in the documents.
    FromDocuments,
    /// A fixed vocabulary (id = position); tokens are terms of it, or, with `token_ids`, decimal
    /// ids into it.
    Fixed {
        /// The terms, id = position.
        terms: Vec<String>,
        /// Term → id.
        ids: HashMap<String, u32>,
        /// Tokens are decimal ids rather than terms.
        token_ids: bool,
    },
}

impl Vocabulary {
    /// Reads a vocabulary file: one term per line, id = line number − 1.
    pub fn from_file(path: &Path, token_ids: bool) -> Result<Vocabulary> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut terms = Vec::new();
        let mut ids = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let term = line.strip_suffix('\r').unwrap_or(line);
            let location = || format!("{}:{}", path.display(), i + 1);
            if term.is_empty() {
                return Err(Error::bad_input(location(), "empty term"));
            }
            if let Some(first) = ids.insert(term.to_string(), i as u32) {
                return Err(Error::bad_input(
                    location(),
                    format!("term {term:?} already on line {}", first + 1),
                ));
            }
            terms.push(term.to_string());
        }
        Ok(Vocabulary::Fixed {
            terms,
            ids,
            token_ids,
        })
    }
}

/// Documents as a sparse matrix: document `d`'s terms are `terms[offsets[d]..offsets[d + 1]]`.
pub struct ParsedDocs {
    /// External ids, in file order.
    pub ids: Vec<String>,
    /// Row offsets (`ids.len() + 1`).
    pub offsets: Vec<u64>,
    /// Term ids.
    pub terms: Vec<u32>,
    /// Weights, parallel to `terms`.
    pub weights: Vec<f32>,
    /// The vocabulary, id = position.
    pub vocab: Vec<String>,
    /// The documents' attributes, indexed.
    pub attributes: Attributes,
}

impl ParsedDocs {
    /// Documents `range` on their own (ids renumbered from 0, attributes remapped), with the
    /// whole vocabulary: what one segment of a segmented build holds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> ParsedDocs {
        let (from, to) = (
            self.offsets[range.start] as usize,
            self.offsets[range.end] as usize,
        );
        let renumber: Vec<u32> = (0..self.ids.len())
            .map(|d| {
                if range.contains(&d) {
                    (d - range.start) as u32
                } else {
                    u32::MAX
                }
            })
            .collect();
        ParsedDocs {
            ids: self.ids[range.clone()].to_vec(),
            offsets: self.offsets[range.start..=range.end]
                .iter()
                .map(|&o| o - from as u64)
                .collect(),
            terms: self.terms[from..to].to_vec(),
            weights: self.weights[from..to].to_vec(),
            vocab: self.vocab.clone(),
            attributes: self.attributes.remap(&renumber, range.len() as u32),
        }
    }
}

/// A parsed line with its token ids (empty when the vocabulary comes from the documents).
type ResolvedRecord = (SparseRecord, Vec<u32>);

/// Lines parsed in parallel per batch; batches are consumed in file order so the first error
/// reported is the first in the file.
const BATCH_LINES: usize = 16_384;

/// Parses and validates every document of `path` (empty lines are skipped).
pub fn parse_docs(
    path: &Path,
    vocabulary: Vocabulary,
    progress: &dyn Progress,
) -> Result<ParsedDocs> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    progress.start("parse documents", bytes.len() as u64);
    let origin = path.display().to_string();
    let mut docs = ParsedDocs {
        ids: Vec::new(),
        offsets: vec![0],
        terms: Vec::new(),
        weights: Vec::new(),
        vocab: Vec::new(),
        attributes: Attributes::new(0),
    };
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut first_line_of_id: HashMap<String, usize> = HashMap::new();
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
    while lines.peek().is_some() {
        let batch: Vec<(usize, &[u8])> = lines.by_ref().take(BATCH_LINES).collect();
        let batch_bytes: u64 = batch.iter().map(|(_, l)| l.len() as u64 + 1).sum();
        let parsed: Vec<Option<Result<ResolvedRecord>>> = batch
            .par_iter()
            .map(|&(i, raw)| {
                let location = || format!("{origin}:{}", i + 1);
                let line = match std::str::from_utf8(raw) {
                    Ok(line) if line.trim().is_empty() => return None,
                    Ok(line) => line,
                    Err(e) => {
                        return Some(Err(Error::bad_input(location(), format!("not UTF-8: {e}"))))
                    }
                };
                Some(
                    parse_line(line, &location)
                        .map_err(Error::from)
                        .and_then(|record| {
                            let ids = resolve_fixed(&vocabulary, &record, &location)?;
                            Ok((record, ids))
                        }),
                )
            })
            .collect();
        for (result, &(i, _)) in parsed.into_iter().zip(&batch) {
            let Some(result) = result else { continue };
            let (record, fixed_ids) = result?;
            if let Some(first) = first_line_of_id.insert(record.id.clone(), i + 1) {
                return Err(Error::bad_input(
                    format!("{origin}:{}", i + 1),
                    format!("document id {:?} already on line {first}", record.id),
                ));
            }
            if matches!(vocabulary, Vocabulary::FromDocuments) {
                for (term, weight) in &record.terms {
                    let next = interned.len() as u32;
                    let id = *interned.entry(term.clone()).or_insert_with(|| {
                        docs.vocab.push(term.clone());
                        next
                    });
                    docs.terms.push(id);
                    docs.weights.push(*weight);
                }
            } else {
                docs.terms.extend_from_slice(&fixed_ids);
                docs.weights.extend(record.terms.iter().map(|(_, w)| *w));
            }
            docs.attributes
                .add(docs.ids.len() as u32, &record.attrs)
                .map_err(|m| {
                    Error::bad_input(format!("{origin}:{}", i + 1), format!("field `attrs`: {m}"))
                })?;
            docs.offsets.push(docs.terms.len() as u64);
            docs.ids.push(record.id);
        }
        progress.advance(batch_bytes);
    }
    progress.finish();
    docs.attributes.finish();
    if let Vocabulary::Fixed { terms, .. } = vocabulary {
        docs.vocab = terms;
    }
    if docs.ids.is_empty() {
        return Err(Error::bad_input(origin, "no documents"));
    }
    Ok(docs)
}

/// With a fixed vocabulary, the ids of a record's tokens (in parallel with the parse); with a
/// vocabulary from the documents, nothing (interning happens in file order).
fn resolve_fixed(
    vocabulary: &Vocabulary,
    record: &SparseRecord,
    location: &dyn Fn() -> String,
) -> Result<Vec<u32>> {
    let Vocabulary::Fixed {
        terms,
        ids,
        token_ids,
    } = vocabulary
    else {
        return Ok(Vec::new());
    };
    let mut resolved = Vec::with_capacity(record.terms.len());
    for (token, _) in &record.terms {
        let id = if *token_ids {
            token
                .parse::<u32>()
                .ok()
                .filter(|&id| (id as usize) < terms.len())
                .ok_or_else(|| {
                    Error::bad_input(
                        location(),
                        format!(
                            "field `vector`: token {token:?} is not a token id below the vocabulary size {}",
                            terms.len()
                        ),
                    )
                })?
        } else {
            *ids.get(token).ok_or_else(|| {
                Error::bad_input(
                    location(),
                    format!("field `vector`: token {token:?} is not in the vocabulary"),
                )
            })?
        };
        resolved.push(id);
    }
    let mut sorted = resolved.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::bad_input(
            location(),
            format!("field `vector`: token id {} appears twice", w[0]),
        ));
    }
    Ok(resolved)
}
