//! Compaction: a new one-segment index directory without the deleted documents; over an
//! index of several segments, a full merge.
//!
//! The surviving documents keep their order (segment after segment) and external ids and are
//! renumbered densely; every file is rewritten from the segments' files (posting lists
//! filtered and concatenated, token vectors copied in their stored codec byte for byte, the
//! approximate first stage rebuilt with the primary segment's parameters, attributes remapped
//! and merged, document token strings re-interned) through a staging directory committed like
//! a build. The new index has no tombstones. Deletes that reach the source while it is
//! compacted would be lost, so the commit is refused when any segment's tombstones changed
//! meanwhile. Segments stored with the PQ codec merge only when they share one codebook (as
//! the segments of one build do).

use crate::approx::build::{build as build_approx, SparseMatrices};
use crate::approx::ApproxBuildParams;
use crate::build::{put, write_approx, write_strings, write_token_strings, Progress};
use crate::doc_tokens::TokenStrings;
use crate::error::{Error, Result};
use crate::format::array::{ArrayFile, Element};
use crate::format::files;
use crate::format::manifest::{ApproxManifest, Manifest};
use crate::format::staging::StagingDir;
use crate::index::Index;
use crate::segment::{Segment, Verify};
use crate::tokens::Codec;
use crate::{attributes, tombstones::Tombstones};
use half::f16;
use std::collections::HashMap;
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

/// One segment's part of the merge: its documents kept, and their new ids.
struct Part<'a> {
    segment: &'a Segment,
    dir: PathBuf,
    deleted: std::sync::Arc<roaring::RoaringBitmap>,
    kept: Vec<u32>,
    /// New id of each of its documents (`u32::MAX`: dropped).
    renumber: Vec<u32>,
}

/// Writes the index at `src` (one segment or several) without its deleted documents to `out`
/// as one segment (`out` may be `src` itself: the compacted index then replaces it; otherwise
/// an existing `out` is replaced only with `overwrite`).
pub fn compact(
    src: &Path,
    out: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<CompactSummary> {
    let started = Instant::now();
    let index = Index::open_with(src, Verify::Full)?;
    let sources: Vec<Source<'_>> = index
        .segment_names()
        .iter()
        .zip(index.segments())
        .map(|(name, segment)| Source {
            segment,
            dir: src.join(name),
        })
        .collect();
    let in_place = out == src || std::fs::canonicalize(out).ok() == std::fs::canonicalize(src).ok();
    let vocab: Vec<String> = (0..index.vocab_size() as u32)
        .map(|t| index.term(t).unwrap_or_default().to_string())
        .collect();
    let primary = index.primary().manifest();
    let doc_count = index.doc_count();
    let dropped_of = |kept: u64| doc_count as u64 - kept;
    let kept: u64 = sources.iter().map(|s| s.segment.live_count()).sum();
    if kept == 0 {
        return Err(Error::bad_input(
            src.display().to_string(),
            "every document is deleted; an index needs at least one",
        ));
    }
    let mut build_parameters = primary.build_parameters.clone();
    build_parameters.remove("segment");
    build_parameters.insert(
        "compacted_from".to_string(),
        format!(
            "{} ({} documents in {} segment(s), {} deleted dropped)",
            src.display(),
            doc_count,
            sources.len(),
            dropped_of(kept)
        ),
    );
    let merged = merge(
        &sources,
        &Merging {
            vocab: &vocab,
            approx: primary.approx.as_ref(),
            template: primary,
            build_parameters,
        },
        (out, overwrite || in_place),
        progress,
    )?;
    // Refuse to drop deletes that arrived while compacting.
    for (source, seen) in sources.iter().zip(&merged.deleted) {
        let now = Tombstones::open(&source.dir, source.segment.doc_count() as u32)?.current();
        if &now != seen {
            return Err(Error::bad_input(
                src.display().to_string(),
                "documents were deleted while compacting; run compact again",
            ));
        }
    }
    let kept = merged.manifest.doc_count;
    drop(sources);
    drop(index);
    let dir = merged.staging.commit(merged.manifest)?;
    Ok(CompactSummary {
        dir,
        kept,
        dropped: dropped_of(kept),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A segment to merge, and its directory.
pub struct Source<'a> {
    /// The open segment.
    pub segment: &'a Segment,
    /// Its directory.
    pub dir: PathBuf,
}

/// What a merge writes besides the documents.
pub struct Merging<'a> {
    /// The vocabulary of the merged segment: every source's is a prefix of it.
    pub vocab: &'a [String],
    /// Rebuild the approximate first stage with these parameters and query defaults (`None`:
    /// exact only).
    pub approx: Option<&'a ApproxManifest>,
    /// The manifest the merged one copies its format, codec and dim from.
    pub template: &'a Manifest,
    /// The merged segment's build parameters.
    pub build_parameters: std::collections::BTreeMap<String, String>,
}

/// A merged segment, written into its staging directory but not committed yet.
pub struct Merged {
    /// The staging directory; [`StagingDir::commit`] with `manifest` publishes it.
    pub staging: StagingDir,
    /// Its manifest (files are recorded at commit).
    pub manifest: Manifest,
    /// Per source, the documents it kept (local ids, ascending): document `kept[i][j]` of
    /// source `i` is document `sum(kept[..i].len()) + j` of the merged segment.
    pub kept: Vec<Vec<u32>>,
    /// Per source, the tombstones the merge saw (deletes after them are not in the merge).
    pub deleted: Vec<std::sync::Arc<roaring::RoaringBitmap>>,
}

/// Merges `sources`, in order, without their deleted documents, into one segment staged at
/// `out` (replacing an existing `out` with `overwrite` once committed): posting lists filtered
/// and concatenated, token vectors copied in their stored codec byte for byte, attributes
/// remapped and merged, document token strings re-interned, the approximate first stage rebuilt
/// as `merging` says. Sources stored with the PQ codec must share one codebook.
pub fn merge(
    sources: &[Source<'_>],
    merging: &Merging<'_>,
    (out, overwrite): (&Path, bool),
    progress: &dyn Progress,
) -> Result<Merged> {
    let mut parts = Vec::new();
    let mut next = 0u32;
    for source in sources {
        let segment = source.segment;
        let deleted = segment.tombstones().current();
        let doc_count = segment.doc_count();
        let kept: Vec<u32> = (0..doc_count as u32)
            .filter(|d| !deleted.contains(*d))
            .collect();
        let mut renumber = vec![u32::MAX; doc_count];
        for &old in &kept {
            renumber[old as usize] = next;
            next += 1;
        }
        parts.push(Part {
            segment,
            dir: source.dir.clone(),
            deleted,
            kept,
            renumber,
        });
    }
    if parts.is_empty() {
        return Err(Error::invalid(
            "segments",
            "a merge needs at least one segment",
        ));
    }
    let kept_count = next as usize;
    let template = merging.template;
    let codec = Codec::from_name(&template.vector_codec).ok_or_else(|| {
        Error::corrupt(
            &parts[0].dir,
            format!("vector codec `{}` is not supported", template.vector_codec),
        )
    })?;
    if codec == Codec::Pq {
        same_codebook(&parts)?;
    }
    let mut staging = StagingDir::create(out, overwrite)?;
    progress.start("merge", 4);

    let vocab_size = merging.vocab.len();
    write_strings(
        &mut staging,
        merging.vocab,
        "vocab",
        files::VOCAB_OFFSETS,
        files::VOCAB_BYTES,
    )?;
    let ids: Vec<String> = parts
        .iter()
        .flat_map(|p| {
            p.kept
                .iter()
                .map(|&d| p.segment.external_id(d).unwrap_or_default().to_string())
        })
        .collect();
    write_strings(
        &mut staging,
        &ids,
        "ids",
        files::IDS_OFFSETS,
        files::IDS_BYTES,
    )?;
    let mut merged_attributes = attributes::Attributes::new(kept_count as u32);
    for part in &parts {
        if let Some(attrs) = part.segment.attributes() {
            merged_attributes
                .absorb(attrs.remap(&part.renumber, kept_count as u32))
                .map_err(|message| Error::corrupt(&part.dir, message))?;
        }
    }
    if !merged_attributes.is_empty() {
        put(&mut staging, attributes::FILE, &merged_attributes.encode())?;
    }
    progress.advance(1);

    // Posting lists without the deleted documents, renumbered and concatenated over the
    // segments (still ascending: new ids follow segment order).
    let mut post_offsets = vec![0u64; vocab_size + 1];
    let mut post_docs = Vec::new();
    let mut post_weights = Vec::new();
    for term in 0..vocab_size {
        for part in &parts {
            if term >= part.segment.vocab_size() {
                continue;
            }
            let (docs, weights) = part.segment.postings().postings(term as u32);
            for (&d, &w) in docs.iter().zip(weights) {
                let new = part.renumber[d as usize];
                if new != u32::MAX {
                    post_docs.push(new);
                    post_weights.push(w);
                }
            }
        }
        post_offsets[term + 1] = post_docs.len() as u64;
    }
    put(&mut staging, files::POSTINGS_OFFSETS, &post_offsets)?;
    put(&mut staging, files::POSTINGS_DOCS, &post_docs)?;
    put(&mut staging, files::POSTINGS_WEIGHTS, &post_weights)?;
    progress.advance(1);

    let approx = match merging.approx {
        Some(settings) if kept_count > 0 => {
            // Document rows (term ids ascending) from the filtered posting lists.
            let mut doc_offsets = vec![0u64; kept_count + 1];
            for &d in &post_docs {
                doc_offsets[d as usize + 1] += 1;
            }
            for d in 0..kept_count {
                doc_offsets[d + 1] += doc_offsets[d];
            }
            let mut cursor: Vec<u64> = doc_offsets[..kept_count].to_vec();
            let mut doc_terms = vec![0u32; post_docs.len()];
            let mut doc_weights = vec![0f32; post_docs.len()];
            for term in 0..vocab_size {
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
            let arrays = build_approx(&matrices, vocab_size, &settings.build)?;
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
        _ => None,
    };
    progress.advance(1);

    let mut new_offsets = vec![0u64];
    let mut new_padded = vec![0u64];
    let mut strings = parts
        .iter()
        .all(|p| p.segment.doc_token_strings().is_some())
        .then(Interner::default);
    let dim = template.dim as usize;
    let mut f16_values: Vec<f16> = Vec::new();
    let mut i8_values: Vec<i8> = Vec::new();
    let mut f32_scales: Vec<f32> = Vec::new();
    let mut pq_codes: Vec<u8> = Vec::new();
    let mut pq_scales: Vec<f16> = Vec::new();
    for part in &parts {
        let src = &part.dir;
        let token_offsets = open::<u64>(src, files::TOKENS_OFFSETS)?;
        let padded = open::<u64>(src, files::TOKENS_PADDED)?;
        let (token_offsets, padded) = (token_offsets.as_slice(), padded.as_slice());
        append_offsets(&mut new_offsets, token_offsets, &part.kept);
        append_offsets(&mut new_padded, padded, &part.kept);
        if let (Some(interner), Some(table)) = (&mut strings, part.segment.doc_token_strings()) {
            let own: Vec<u32> = table.strings().map(|s| interner.id(s)).collect();
            interner.ids.extend(
                gather(table.ids(), token_offsets, &part.kept, 1)
                    .into_iter()
                    .map(|id| own[id as usize]),
            );
        }
        match codec {
            Codec::F16 => {
                let packed = open::<f16>(src, files::TOKENS_PACKED)?;
                f16_values.extend(gather(packed.as_slice(), padded, &part.kept, dim));
            }
            Codec::Int8 => {
                let values = open::<i8>(src, files::TOKENS_INT8)?;
                let scales = open::<f32>(src, files::TOKENS_SCALES)?;
                i8_values.extend(gather(values.as_slice(), padded, &part.kept, dim));
                f32_scales.extend(gather(scales.as_slice(), padded, &part.kept, 1));
            }
            Codec::Pq => {
                let subspaces = open::<u32>(src, files::PQ_SUBSPACES)?;
                let codes = open::<u8>(src, files::PQ_CODES)?;
                let scales = open::<f16>(src, files::PQ_SCALES)?;
                let m = subspaces.len().saturating_sub(1);
                pq_codes.extend(gather(codes.as_slice(), token_offsets, &part.kept, m));
                pq_scales.extend(gather(scales.as_slice(), token_offsets, &part.kept, 1));
            }
        }
    }
    let token_count = new_offsets.last().copied().unwrap_or(0);
    put(&mut staging, files::TOKENS_OFFSETS, &new_offsets)?;
    put(&mut staging, files::TOKENS_PADDED, &new_padded)?;
    if let Some(interner) = strings {
        let input = TokenStrings {
            strings: interner.strings,
            ids: interner.ids,
        };
        write_token_strings(&mut staging, &input)?;
    }
    match codec {
        Codec::F16 => put(&mut staging, files::TOKENS_PACKED, &f16_values)?,
        Codec::Int8 => {
            put(&mut staging, files::TOKENS_INT8, &i8_values)?;
            put(&mut staging, files::TOKENS_SCALES, &f32_scales)?;
        }
        Codec::Pq => {
            let first = &parts[0].dir;
            let subspaces = open::<u32>(first, files::PQ_SUBSPACES)?;
            let codebook = open::<f32>(first, files::PQ_CODEBOOK)?;
            put(&mut staging, files::PQ_SUBSPACES, subspaces.as_slice())?;
            put(&mut staging, files::PQ_CODEBOOK, codebook.as_slice())?;
            put(&mut staging, files::PQ_CODES, &pq_codes)?;
            put(&mut staging, files::PQ_SCALES, &pq_scales)?;
        }
    }
    progress.advance(1);
    progress.finish();

    let manifest = Manifest {
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        doc_count: kept_count as u64,
        vocab_size: vocab_size as u64,
        token_count,
        posting_count: post_docs.len() as u64,
        build_parameters: merging.build_parameters.clone(),
        approx,
        files: Default::default(),
        ..template.clone()
    };
    let (kept, deleted) = parts.into_iter().map(|p| (p.kept, p.deleted)).unzip();
    Ok(Merged {
        staging,
        manifest,
        kept,
        deleted,
    })
}

/// Appends the kept documents' ranges of `offsets` to `out` (which ends at the total so far).
fn append_offsets(out: &mut Vec<u64>, offsets: &[u64], kept: &[u32]) {
    for &d in kept {
        let len = offsets[d as usize + 1] - offsets[d as usize];
        out.push(out[out.len() - 1] + len);
    }
}

/// Document token strings re-interned over the segments' string tables.
#[derive(Default)]
struct Interner {
    strings: Vec<String>,
    by_string: HashMap<String, u32>,
    /// Per token of the merged index, its string id.
    ids: Vec<u32>,
}

impl Interner {
    fn id(&mut self, string: &str) -> u32 {
        if let Some(&id) = self.by_string.get(string) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(string.to_string());
        self.by_string.insert(string.to_string(), id);
        id
    }
}

/// Refuses PQ segments whose codebooks differ (their codes would mean different vectors).
fn same_codebook(parts: &[Part<'_>]) -> Result<()> {
    let first = &parts[0].dir;
    let subspaces = open::<u32>(first, files::PQ_SUBSPACES)?;
    let codebook = open::<f32>(first, files::PQ_CODEBOOK)?;
    for part in &parts[1..] {
        let other_subspaces = open::<u32>(&part.dir, files::PQ_SUBSPACES)?;
        let other_codebook = open::<f32>(&part.dir, files::PQ_CODEBOOK)?;
        let same = other_subspaces.as_slice() == subspaces.as_slice()
            && other_codebook
                .as_slice()
                .iter()
                .zip(codebook.as_slice())
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && other_codebook.len() == codebook.len();
        if !same {
            return Err(Error::bad_input(
                part.dir.display().to_string(),
                format!(
                    "its PQ codebook differs from {}'s: segments merge only when they share one",
                    first.display()
                ),
            ));
        }
    }
    Ok(())
}
