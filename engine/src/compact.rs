//! Compaction: a new index directory without the deleted documents.
//!
//! The surviving documents keep their order and external ids and are renumbered densely; every
//! file is rewritten from the source's files (posting lists filtered, token vectors copied in
//! their stored codec byte for byte, the approximate first stage rebuilt with the source's
//! parameters, attributes remapped) through a staging directory committed like a build. The
//! new index has no tombstones. Deletes that reach the source while it is compacted would be
//! lost, so the commit is refused when the source's tombstones changed meanwhile.

use crate::approx::build::{build as build_approx, SparseMatrices};
use crate::approx::ApproxBuildParams;
use crate::build::{put, write_approx, write_strings, write_token_strings, Progress};
use crate::doc_tokens::TokenStrings;
use crate::error::{Error, Result};
use crate::format::array::{ArrayFile, Element};
use crate::format::files;
use crate::format::manifest::{ApproxManifest, Manifest};
use crate::format::staging::StagingDir;
use crate::index::{Index, Verify};
use crate::tokens::Codec;
use crate::{attributes, tombstones::Tombstones};
use half::f16;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What a compaction did.
#[derive(Debug, Clone)]
pub struct CompactSummary {
    /// The new index directory.
    pub dir: PathBuf,
    /// Documents kept.
    pub kept: u64,
    /// Deleted documents dropped.
    pub dropped: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

fn open<T: Element>(dir: &Path, name: &str) -> Result<ArrayFile<T>> {
    ArrayFile::open(&dir.join(name), name)
}

/// Copies, for each kept document, its range `[offsets[d]·unit, offsets[d+1]·unit)` of `values`.
fn gather<T: Element>(values: &[T], offsets: &[u64], kept: &[u32], unit: usize) -> Vec<T> {
    let mut out = Vec::new();
    for &d in kept {
        let range = offsets[d as usize] as usize * unit..offsets[d as usize + 1] as usize * unit;
        out.extend_from_slice(&values[range]);
    }
    out
}

/// Offsets of the kept documents' ranges, renumbered from 0.
fn regather_offsets(offsets: &[u64], kept: &[u32]) -> Vec<u64> {
    let mut out = Vec::with_capacity(kept.len() + 1);
    out.push(0);
    for &d in kept {
        let len = offsets[d as usize + 1] - offsets[d as usize];
        out.push(out[out.len() - 1] + len);
    }
    out
}

/// Writes the index at `src` without its deleted documents to `out` (which may be `src`
/// itself: the compacted index then replaces it; otherwise an existing `out` is replaced only
/// with `overwrite`).
pub fn compact(
    src: &Path,
    out: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<CompactSummary> {
    let started = Instant::now();
    let index = Index::open_with(src, Verify::Full)?;
    let deleted = index.tombstones().current();
    let doc_count = index.doc_count();
    let kept: Vec<u32> = (0..doc_count as u32)
        .filter(|d| !deleted.contains(*d))
        .collect();
    if kept.is_empty() {
        return Err(Error::bad_input(
            src.display().to_string(),
            "every document is deleted; an index needs at least one",
        ));
    }
    let mut renumber = vec![u32::MAX; doc_count];
    for (new, &old) in kept.iter().enumerate() {
        renumber[old as usize] = new as u32;
    }
    let in_place = out == src || std::fs::canonicalize(out).ok() == std::fs::canonicalize(src).ok();
    let mut staging = StagingDir::create(out, overwrite || in_place)?;
    progress.start("compact", 4);

    let vocab: Vec<String> = (0..index.vocab_size() as u32)
        .map(|t| index.term(t).unwrap_or_default().to_string())
        .collect();
    write_strings(
        &mut staging,
        &vocab,
        "vocab",
        files::VOCAB_OFFSETS,
        files::VOCAB_BYTES,
    )?;
    let ids: Vec<String> = kept
        .iter()
        .map(|&d| index.external_id(d).unwrap_or_default().to_string())
        .collect();
    write_strings(
        &mut staging,
        &ids,
        "ids",
        files::IDS_OFFSETS,
        files::IDS_BYTES,
    )?;
    if let Some(attrs) = index.attributes() {
        let remapped = attrs.remap(&renumber, kept.len() as u32);
        if !remapped.is_empty() {
            put(&mut staging, attributes::FILE, &remapped.encode())?;
        }
    }
    progress.advance(1);

    // Posting lists without the deleted documents, renumbered (still ascending).
    let mut post_offsets = vec![0u64; index.vocab_size() + 1];
    let mut post_docs = Vec::new();
    let mut post_weights = Vec::new();
    for term in 0..index.vocab_size() {
        let (docs, weights) = index.postings().postings(term as u32);
        for (&d, &w) in docs.iter().zip(weights) {
            let new = renumber[d as usize];
            if new != u32::MAX {
                post_docs.push(new);
                post_weights.push(w);
            }
        }
        post_offsets[term + 1] = post_docs.len() as u64;
    }
    put(&mut staging, files::POSTINGS_OFFSETS, &post_offsets)?;
    put(&mut staging, files::POSTINGS_DOCS, &post_docs)?;
    put(&mut staging, files::POSTINGS_WEIGHTS, &post_weights)?;
    progress.advance(1);

    let manifest = index.manifest();
    let approx = match &manifest.approx {
        Some(settings) => {
            // Document rows (term ids ascending) from the filtered posting lists.
            let mut doc_offsets = vec![0u64; kept.len() + 1];
            for &d in &post_docs {
                doc_offsets[d as usize + 1] += 1;
            }
            for d in 0..kept.len() {
                doc_offsets[d + 1] += doc_offsets[d];
            }
            let mut cursor: Vec<u64> = doc_offsets[..kept.len()].to_vec();
            let mut doc_terms = vec![0u32; post_docs.len()];
            let mut doc_weights = vec![0f32; post_docs.len()];
            for term in 0..index.vocab_size() {
                let range = post_offsets[term] as usize..post_offsets[term + 1] as usize;
                for (&d, &w) in post_docs[range.clone()].iter().zip(&post_weights[range]) {
                    let slot = &mut cursor[d as usize];
                    doc_terms[*slot as usize] = term as u32;
                    doc_weights[*slot as usize] = w;
                    *slot += 1;
                }
            }
            let matrices = SparseMatrices {
                doc_offsets: &doc_offsets,
                doc_terms: &doc_terms,
                doc_weights: &doc_weights,
                post_offsets: &post_offsets,
                post_docs: &post_docs,
                post_weights: &post_weights,
            };
            let arrays = build_approx(&matrices, index.vocab_size(), &settings.build)?;
            write_approx(&mut staging, &arrays)?;
            Some(ApproxManifest {
                build: ApproxBuildParams {
                    tiers: true,
                    ..settings.build
                },
                pruned_postings: arrays.impact_docs.len() as u64,
                ..settings.clone()
            })
        }
        None => None,
    };
    progress.advance(1);

    let token_offsets = open::<u64>(src, files::TOKENS_OFFSETS)?;
    let padded = open::<u64>(src, files::TOKENS_PADDED)?;
    let (token_offsets, padded) = (token_offsets.as_slice(), padded.as_slice());
    let new_offsets = regather_offsets(token_offsets, &kept);
    let token_count = new_offsets.last().copied().unwrap_or(0);
    put(&mut staging, files::TOKENS_OFFSETS, &new_offsets)?;
    put(
        &mut staging,
        files::TOKENS_PADDED,
        &regather_offsets(padded, &kept),
    )?;
    if let Some(strings) = index.doc_token_strings() {
        let input = TokenStrings {
            strings: strings.strings().map(str::to_string).collect(),
            ids: gather(strings.ids(), token_offsets, &kept, 1),
        };
        write_token_strings(&mut staging, &input)?;
    }
    let dim = index.dim();
    let codec = Codec::from_name(&manifest.vector_codec).ok_or_else(|| {
        Error::corrupt(
            src,
            format!("vector codec `{}` is not supported", manifest.vector_codec),
        )
    })?;
    match codec {
        Codec::F16 => {
            let packed = open::<f16>(src, files::TOKENS_PACKED)?;
            put(
                &mut staging,
                files::TOKENS_PACKED,
                &gather(packed.as_slice(), padded, &kept, dim),
            )?;
        }
        Codec::Int8 => {
            let values = open::<i8>(src, files::TOKENS_INT8)?;
            let scales = open::<f32>(src, files::TOKENS_SCALES)?;
            put(
                &mut staging,
                files::TOKENS_INT8,
                &gather(values.as_slice(), padded, &kept, dim),
            )?;
            put(
                &mut staging,
                files::TOKENS_SCALES,
                &gather(scales.as_slice(), padded, &kept, 1),
            )?;
        }
        Codec::Pq => {
            let subspaces = open::<u32>(src, files::PQ_SUBSPACES)?;
            let codebook = open::<f32>(src, files::PQ_CODEBOOK)?;
            let codes = open::<u8>(src, files::PQ_CODES)?;
            let scales = open::<f16>(src, files::PQ_SCALES)?;
            let m = subspaces.len().saturating_sub(1);
            put(&mut staging, files::PQ_SUBSPACES, subspaces.as_slice())?;
            put(&mut staging, files::PQ_CODEBOOK, codebook.as_slice())?;
            put(
                &mut staging,
                files::PQ_CODES,
                &gather(codes.as_slice(), token_offsets, &kept, m),
            )?;
            put(
                &mut staging,
                files::PQ_SCALES,
                &gather(scales.as_slice(), token_offsets, &kept, 1),
            )?;
        }
    }
    progress.advance(1);
    progress.finish();

    let mut build_parameters = manifest.build_parameters.clone();
    build_parameters.insert(
        "compacted_from".to_string(),
        format!(
            "{} ({} documents, {} deleted dropped)",
            src.display(),
            doc_count,
            deleted.len()
        ),
    );
    let new_manifest = Manifest {
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        doc_count: kept.len() as u64,
        token_count,
        posting_count: post_docs.len() as u64,
        build_parameters,
        approx,
        files: Default::default(),
        ..manifest.clone()
    };
    // Refuse to drop deletes that arrived while compacting.
    let now = Tombstones::open(src, doc_count as u32)?.current();
    if now != deleted {
        return Err(Error::bad_input(
            src.display().to_string(),
            "documents were deleted while compacting; run compact again",
        ));
    }
    drop(index);
    let dir = staging.commit(new_manifest)?;
    Ok(CompactSummary {
        dir,
        kept: kept.len() as u64,
        dropped: deleted.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
