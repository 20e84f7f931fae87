//! Building the approximate first stage from the documents and their inverted lists.
//!
//! Per term (in parallel): keep the `n_postings` heaviest postings; pick
//! `max(1, round(centroid_fraction × kept))` centroid documents evenly spaced in weight order (so
//! the heaviest document is always one); assign every kept document to the centroid it is most
//! similar to, where similarity is the dot product of the two documents' *signatures* (their
//! [`SIGNATURE_TERMS`] heaviest components), computed through a small inverted index over the
//! centroids' signatures; each non-empty cluster becomes a block (documents ascending). A block's
//! summary is the coordinate-wise maximum over its documents' full vectors, cut to the heaviest
//! components that hold `summary_energy` of its L1 mass (at most `max_summary_terms` of them),
//! quantized to `u8` rounding up; its *floor* is the largest dropped component (quantized the same
//! way), so `Σ kept q·v + (Σ other query weights) · floor` still bounds every document.
//! Everything is deterministic.

use super::ApproxBuildParams;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// Components of a document used to compare it with centroids while clustering.
pub const SIGNATURE_TERMS: usize = 16;

/// The sparse document matrix (rows = documents) and its inverse (rows = terms).
pub struct SparseMatrices<'a> {
    /// Document `d`'s entries are `doc_terms/doc_weights[doc_offsets[d]..doc_offsets[d + 1]]`.
    pub doc_offsets: &'a [u64],
    /// Term ids of the document rows.
    pub doc_terms: &'a [u32],
    /// Weights of the document rows.
    pub doc_weights: &'a [f32],
    /// Term `t`'s postings are `post_docs/post_weights[post_offsets[t]..post_offsets[t + 1]]`.
    pub post_offsets: &'a [u64],
    /// Document ids of the postings, ascending per term.
    pub post_docs: &'a [u32],
    /// Weights of the postings.
    pub post_weights: &'a [f32],
}

/// The arrays of the approximate first stage, ready to be written.
#[derive(Debug, Default)]
pub struct ApproxArrays {
    /// See [`super::files`] for each array.
    pub forward_offsets: Vec<u64>,
    /// Forward term ids, ascending per document.
    pub forward_terms: Vec<u16>,
    /// Forward weights.
    pub forward_weights: Vec<f32>,
    /// First block of each term.
    pub term_blocks: Vec<u64>,
    /// First document of each block.
    pub block_doc_offsets: Vec<u64>,
    /// Documents of all blocks.
    pub block_docs: Vec<u32>,
    /// First summary key of each term (`vocab_size + 1`).
    pub summary_term_offsets: Vec<u64>,
    /// Summary keys: the component terms of a term's summaries, ascending per term.
    pub summary_keys: Vec<u16>,
    /// First entry of each key (`keys + 1`).
    pub summary_key_offsets: Vec<u64>,
    /// Entries: the block (index within its term) whose summary has the key's component.
    pub summary_blocks: Vec<u16>,
    /// Entries: the quantized component value.
    pub summary_values: Vec<u8>,
    /// Per-block scales.
    pub summary_scales: Vec<f32>,
    /// Per-block bound on every component the summary dropped (quantized like the values).
    pub summary_floors: Vec<u8>,
}

/// One term's blocks, built independently of the others. Summary entries are
/// `(component term, block index within the term, quantized value)`.
#[derive(Default)]
struct TermBlocks {
    block_sizes: Vec<u32>,
    docs: Vec<u32>,
    summary_entries: Vec<(u16, u16, u8)>,
    summary_scales: Vec<f32>,
    summary_floors: Vec<u8>,
}

/// Builds the approximate first stage; fails when the vocabulary does not fit 16-bit term ids.
pub fn build(
    m: &SparseMatrices,
    vocab_size: usize,
    params: &ApproxBuildParams,
) -> Result<ApproxArrays> {
    if vocab_size > usize::from(u16::MAX) + 1 {
        return Err(Error::bad_input(
            "--first-stage approx",
            format!("the approximate first stage needs a vocabulary of at most 65,536 terms, this one has {vocab_size} (use --first-stage exact)"),
        ));
    }
    if params.n_postings == 0
        || params.max_summary_terms == 0
        || !(params.centroid_fraction > 0.0 && params.centroid_fraction <= 1.0)
        || !(params.summary_energy > 0.0 && params.summary_energy <= 1.0)
    {
        return Err(Error::bad_input(
            "--first-stage approx",
            "n_postings and max_summary_terms must be >= 1, centroid_fraction and summary_energy in (0, 1]",
        ));
    }
    let doc_count = m.doc_offsets.len() - 1;
    // Forward index: each document's terms ascending.
    let rows: Vec<(Vec<u16>, Vec<f32>)> = (0..doc_count)
        .into_par_iter()
        .map(|d| {
            let range = m.doc_offsets[d] as usize..m.doc_offsets[d + 1] as usize;
            let mut row: Vec<(u16, f32)> = m.doc_terms[range.clone()]
                .iter()
                .zip(&m.doc_weights[range])
                .map(|(&t, &w)| (t as u16, w))
                .collect();
            row.sort_unstable_by_key(|e| e.0);
            row.into_iter().unzip()
        })
        .collect();
    let mut out = ApproxArrays {
        forward_offsets: Vec::with_capacity(doc_count + 1),
        ..ApproxArrays::default()
    };
    out.forward_offsets.push(0);
    for (terms, weights) in &rows {
        out.forward_terms.extend_from_slice(terms);
        out.forward_weights.extend_from_slice(weights);
        out.forward_offsets.push(out.forward_terms.len() as u64);
    }
    drop(rows);
    let signatures = signatures(
        &out.forward_offsets,
        &out.forward_terms,
        &out.forward_weights,
    );

    out.term_blocks.push(0);
    out.block_doc_offsets.push(0);
    out.summary_term_offsets.push(0);
    out.summary_key_offsets.push(0);
    // Terms in chunks: built in parallel, appended in order, so only one chunk's blocks are held
    // besides the output.
    const TERMS_PER_CHUNK: usize = 1024;
    for chunk_start in (0..vocab_size).step_by(TERMS_PER_CHUNK) {
        let chunk_end = (chunk_start + TERMS_PER_CHUNK).min(vocab_size);
        let per_term: Vec<TermBlocks> = (chunk_start..chunk_end)
            .into_par_iter()
            .map_init(
                || vec![0f32; vocab_size],
                |dense, t| {
                    let range = m.post_offsets[t] as usize..m.post_offsets[t + 1] as usize;
                    let (docs, weights) = (&m.post_docs[range.clone()], &m.post_weights[range]);
                    term_blocks(docs, weights, &out, &signatures, params, dense)
                },
            )
            .collect();
        for term in per_term {
            append_term(&mut out, term);
        }
    }
    Ok(out)
}

/// Appends one term's blocks and transposed summaries to the output arrays.
fn append_term(out: &mut ApproxArrays, mut term: TermBlocks) {
    for &size in &term.block_sizes {
        let last = *out.block_doc_offsets.last().unwrap_or(&0);
        out.block_doc_offsets.push(last + u64::from(size));
    }
    out.block_docs.extend_from_slice(&term.docs);
    out.summary_scales.extend_from_slice(&term.summary_scales);
    out.summary_floors.extend_from_slice(&term.summary_floors);
    out.term_blocks.push(out.summary_scales.len() as u64);
    // Transpose the term's summaries: component term → (block, value), blocks ascending.
    term.summary_entries.sort_unstable();
    for (i, &(key, block, value)) in term.summary_entries.iter().enumerate() {
        if i == 0 || term.summary_entries[i - 1].0 != key {
            if i > 0 {
                out.summary_key_offsets
                    .push(out.summary_blocks.len() as u64);
            }
            out.summary_keys.push(key);
        }
        out.summary_blocks.push(block);
        out.summary_values.push(value);
    }
    if !term.summary_entries.is_empty() {
        out.summary_key_offsets
            .push(out.summary_blocks.len() as u64);
    }
    out.summary_term_offsets.push(out.summary_keys.len() as u64);
}

/// Each document's heaviest components (term, weight), at most [`SIGNATURE_TERMS`].
fn signatures(offsets: &[u64], terms: &[u16], weights: &[f32]) -> Vec<Vec<(u16, f32)>> {
    (0..offsets.len() - 1)
        .into_par_iter()
        .map(|d| {
            let range = offsets[d] as usize..offsets[d + 1] as usize;
            let mut row: Vec<(u16, f32)> = terms[range.clone()]
                .iter()
                .copied()
                .zip(weights[range].iter().copied())
                .collect();
            row.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            row.truncate(SIGNATURE_TERMS);
            row
        })
        .collect()
}

fn term_blocks(
    docs: &[u32],
    weights: &[f32],
    forward: &ApproxArrays,
    signatures: &[Vec<(u16, f32)>],
    params: &ApproxBuildParams,
    dense: &mut [f32],
) -> TermBlocks {
    let mut blocks = TermBlocks::default();
    if docs.is_empty() {
        return blocks;
    }
    // Static pruning: the heaviest postings, ties by document id.
    let mut kept: Vec<(u32, f32)> = docs.iter().copied().zip(weights.iter().copied()).collect();
    kept.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    kept.truncate(params.n_postings);

    // Block numbers within a term are stored as u16.
    let clusters = ((kept.len() as f64 * params.centroid_fraction as f64).round() as usize)
        .clamp(1, kept.len())
        .min(usize::from(u16::MAX) + 1);
    let step = kept.len() as f64 / clusters as f64;
    let centroids: Vec<u32> = (0..clusters)
        .map(|c| kept[(c as f64 * step) as usize].0)
        .collect();
    let assignment = assign(&kept, &centroids, signatures);

    let mut members: Vec<Vec<u32>> = vec![Vec::new(); clusters];
    for (&(doc, _), &c) in kept.iter().zip(&assignment) {
        members[c].push(doc);
    }
    for mut block in members.into_iter().filter(|m| !m.is_empty()) {
        block.sort_unstable();
        let index = blocks.block_sizes.len() as u16;
        summarize(&block, index, forward, params, dense, &mut blocks);
        blocks.block_sizes.push(block.len() as u32);
        blocks.docs.extend_from_slice(&block);
    }
    blocks
}

/// The index of the most similar centroid for each kept document (ties: the lower index).
fn assign(kept: &[(u32, f32)], centroids: &[u32], signatures: &[Vec<(u16, f32)>]) -> Vec<usize> {
    if centroids.len() == 1 {
        return vec![0; kept.len()];
    }
    // A small inverted index: signature term → (centroid, weight).
    let mut by_term: std::collections::HashMap<u16, Vec<(u32, f32)>> =
        std::collections::HashMap::new();
    for (c, &doc) in centroids.iter().enumerate() {
        for &(t, w) in &signatures[doc as usize] {
            by_term.entry(t).or_default().push((c as u32, w));
        }
    }
    let mut scores = vec![0f32; centroids.len()];
    let mut touched: Vec<u32> = Vec::new();
    kept.iter()
        .map(|&(doc, _)| {
            for &(t, w) in &signatures[doc as usize] {
                if let Some(list) = by_term.get(&t) {
                    for &(c, cw) in list {
                        if scores[c as usize] == 0.0 {
                            touched.push(c);
                        }
                        scores[c as usize] += w * cw;
                    }
                }
            }
            let mut best = (0usize, f32::NEG_INFINITY);
            for &c in &touched {
                let s = scores[c as usize];
                if s > best.1 || (s == best.1 && (c as usize) < best.0) {
                    best = (c as usize, s);
                }
                scores[c as usize] = 0.0;
            }
            touched.clear();
            if best.1 == f32::NEG_INFINITY {
                0
            } else {
                best.0
            }
        })
        .collect()
}

/// Appends the summary of `block` (documents ascending; `index` within its term) to `out`.
fn summarize(
    block: &[u32],
    index: u16,
    forward: &ApproxArrays,
    params: &ApproxBuildParams,
    dense: &mut [f32],
    out: &mut TermBlocks,
) {
    let mut touched: Vec<u16> = Vec::new();
    for &doc in block {
        let range = forward.forward_offsets[doc as usize] as usize
            ..forward.forward_offsets[doc as usize + 1] as usize;
        for (&t, &w) in forward.forward_terms[range.clone()]
            .iter()
            .zip(&forward.forward_weights[range])
        {
            let slot = &mut dense[t as usize];
            if *slot == 0.0 {
                touched.push(t);
            }
            if w > *slot {
                *slot = w;
            }
        }
    }
    let mut components: Vec<(u16, f32)> = touched.iter().map(|&t| (t, dense[t as usize])).collect();
    for &t in &touched {
        dense[t as usize] = 0.0;
    }
    components.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: f32 = components.iter().map(|c| c.1).sum();
    let mut mass = 0f32;
    let mut keep = 0;
    for c in &components {
        keep += 1;
        mass += c.1;
        if mass >= params.summary_energy * total || keep == params.max_summary_terms {
            break;
        }
    }
    let keep = keep.max(1);
    let dropped_max = components.get(keep).map_or(0.0, |c| c.1);
    components.truncate(keep);
    let max = components.iter().map(|c| c.1).fold(0f32, f32::max);
    let scale = if max > 0.0 { max / 255.0 } else { 1.0 };
    out.summary_floors
        .push((dropped_max / scale).ceil().clamp(0.0, 255.0) as u8);
    for &(t, w) in &components {
        let value = (w / scale).ceil().clamp(1.0, 255.0) as u8;
        out.summary_entries.push((t, index, value));
    }
    out.summary_scales.push(scale);
}
