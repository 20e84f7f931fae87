//! Segment builds: validate the inputs, write every file into a staging directory, commit.

pub mod calibrate;
pub mod docs;
pub mod pq;
pub mod vectors;

use crate::approx::build::{build as build_approx, SparseMatrices};
use crate::approx::{self, ApproxBuildParams, ApproxSettings};
use crate::attributes;
use crate::doc_tokens::{self, TokenStrings};
use crate::error::{Error, Result};
use crate::format::array::{write_array, Element};
use crate::format::manifest::ApproxManifest;
use crate::format::manifest::Manifest;
use crate::format::segments::{self, SegmentEntry, SegmentList};
use crate::format::staging::StagingDir;
use crate::format::strings::StringTable;
use crate::format::{files, FORMAT_VERSION};
use crate::pq::TrainParams;
use crate::sparse::InvertedIndex;
use crate::tokens::Codec;
use docs::{parse_docs, ParsedDocs, Vocabulary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tandem_data::npy::{row_offsets, NpyArray};

/// Inputs and options of a build.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Documents JSONL (`{"id": ..., "vector": {"token": weight}}`).
    pub docs: PathBuf,
    /// Token vectors `.npy`, `[total_tokens, dim]` of float32, float16 or int8.
    pub vectors: PathBuf,
    /// Tokens per document `.npy`, `[doc_count]` of an integer type, in document order.
    pub lens: PathBuf,
    /// For int8 vectors: value = q × scale.
    pub int8_scale: Option<f32>,
    /// A fixed vocabulary file (one term per line); without it terms are numbered in order of
    /// first appearance.
    pub vocab: Option<PathBuf>,
    /// Document tokens are decimal ids into `vocab` rather than terms.
    pub token_ids: bool,
    /// The index directory to create.
    pub out: PathBuf,
    /// Replace `out` if it exists.
    pub overwrite: bool,
    /// Build the approximate first stage with these settings (`None`: exact only).
    pub approx: Option<ApproxSettings>,
    /// How token vectors are stored.
    pub codec: Codec,
    /// Document token strings JSONL (one array of strings per document, as long as its token
    /// count), stored for explanations (see [`crate::doc_tokens`]).
    pub doc_tokens: Option<PathBuf>,
}

/// Receives progress of a build (a terminal progress bar, or nothing).
pub trait Progress: Sync {
    /// A stage begins, with `total` units of work.
    fn start(&self, _stage: &str, _total: u64) {}
    /// `units` more of the current stage are done.
    fn advance(&self, _units: u64) {}
    /// The current stage is done.
    fn finish(&self) {}
}

/// Progress that is not reported.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildSummary {
    /// The committed index directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Wall-clock seconds of the build.
    pub seconds: f64,
}

/// What a segmented build wrote.
#[derive(Debug, Clone)]
pub struct SegmentsSummary {
    /// The index directory.
    pub dir: PathBuf,
    /// Each segment's directory name and manifest, in order.
    pub segments: Vec<(String, Manifest)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// The validated inputs of a build: documents parsed, token rows located.
struct Inputs {
    vectors: NpyArray,
    dim: usize,
    /// Each document's first row in `vectors` (`doc_count + 1`).
    token_offsets: Vec<u64>,
    token_strings: Option<TokenStrings>,
    docs: ParsedDocs,
}

/// Builds an index from `config`'s inputs: one segment (the directory holds its manifest).
/// Every input is validated before anything is committed; the first fault is reported with its
/// file and line or row.
pub fn build_index(config: &BuildConfig, progress: &dyn Progress) -> Result<BuildSummary> {
    let started = Instant::now();
    let inputs = read_inputs(config, progress)?;
    let codebook = train_codebook(config, &inputs, progress)?;
    let whole = Part {
        docs: &inputs.docs,
        rows: &inputs.token_offsets,
        token_strings: inputs.token_strings.as_ref(),
        parameters: build_parameters(config, &inputs.vectors),
    };
    let (dir, manifest) = write_segment(
        &Storing::of(config, codebook.as_ref()),
        &inputs.rows(config),
        inputs.dim,
        whole,
        (&config.out, config.overwrite),
        progress,
    )?;
    Ok(BuildSummary {
        dir,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Builds an index of segments ([`crate::format::segments`]) of `segment_docs` documents each
/// (the last holds the rest), in input order: the same documents, ids, vocabulary (every segment
/// holds all of it) and, with the PQ codec, the same codebook (trained once over all vectors)
/// as [`build_index`], so it ranks exactly as the one-segment build; each segment's build holds
/// only its own documents' postings, first stage and vectors in memory at a time. The segments
/// are written into a staging directory that is renamed onto `config.out` once all are
/// committed and listed.
pub fn build_segments(
    config: &BuildConfig,
    segment_docs: usize,
    progress: &dyn Progress,
) -> Result<SegmentsSummary> {
    let started = Instant::now();
    if segment_docs == 0 {
        return Err(Error::bad_input("--segment-docs", "must be >= 1"));
    }
    let inputs = read_inputs(config, progress)?;
    let codebook = train_codebook(config, &inputs, progress)?;
    let staging = StagingDir::create(&config.out, config.overwrite)?;
    let doc_count = inputs.docs.ids.len();
    let mut entries = Vec::new();
    let mut manifests = Vec::new();
    let mut start = 0;
    while start < doc_count {
        let end = doc_count.min(start + segment_docs);
        let name = segments::segment_name(entries.len() as u64);
        let docs = inputs.docs.slice(start..end);
        let rows = &inputs.token_offsets[start..=end];
        let strings = inputs.token_strings.as_ref().map(|t| TokenStrings {
            strings: t.strings.clone(),
            ids: t.ids[rows[0] as usize..rows[rows.len() - 1] as usize].to_vec(),
        });
        let segment_config = BuildConfig {
            out: staging.path().join(&name),
            ..config.clone()
        };
        let mut parameters = build_parameters(config, &inputs.vectors);
        parameters.insert(
            "segment".to_string(),
            format!("documents {start}..{end} of {doc_count} (--segment-docs {segment_docs})"),
        );
        let part = Part {
            docs: &docs,
            rows,
            token_strings: strings.as_ref(),
            parameters,
        };
        let (_, manifest) = write_segment(
            &Storing::of(config, codebook.as_ref()),
            &inputs.rows(config),
            inputs.dim,
            part,
            (&segment_config.out, false),
            progress,
        )?;
        entries.push(SegmentEntry {
            name: name.clone(),
            doc_count: (end - start) as u64,
        });
        manifests.push((name, manifest));
        start = end;
    }
    let dir = staging.commit_segments(&SegmentList::new(entries))?;
    Ok(SegmentsSummary {
        dir,
        segments: manifests,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Opens and validates every input of `config` and parses the documents.
fn read_inputs(config: &BuildConfig, progress: &dyn Progress) -> Result<Inputs> {
    if config.token_ids && config.vocab.is_none() {
        return Err(Error::bad_input(
            "--token-ids",
            "numeric token ids need --vocab FILE to give them their terms",
        ));
    }
    // A missing or unreadable input is named first, in the order the command line lists them.
    let inputs = [&config.docs, &config.vectors, &config.lens];
    let optional = config.vocab.iter().chain(config.doc_tokens.as_ref());
    for path in inputs.into_iter().chain(optional) {
        std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    }
    let vectors = NpyArray::open(&config.vectors)?;
    vectors::check_dtype(&vectors, config.int8_scale)?;
    let (rows, dim) = vectors.matrix_shape()?;
    if dim == 0 {
        return Err(Error::bad_input(
            config.vectors.display().to_string(),
            "dim (the second axis) is 0",
        ));
    }
    if u32::try_from(dim).is_err() {
        return Err(Error::bad_input(
            config.vectors.display().to_string(),
            format!("dim {dim} is too large"),
        ));
    }
    let lens = NpyArray::open(&config.lens)?.to_u64_vec()?;
    if let Some(i) = lens.iter().position(|&len| len == 0) {
        return Err(Error::bad_input(
            format!("{}: row {i}", config.lens.display()),
            "document has 0 token vectors (every document needs at least one)",
        ));
    }
    let token_offsets = row_offsets(&lens, &config.lens)?;
    let total_tokens = *token_offsets.last().unwrap_or(&0);
    if total_tokens != rows as u64 {
        return Err(Error::bad_input(
            config.lens.display().to_string(),
            format!(
                "token counts sum to {total_tokens} but {} has {rows} rows",
                config.vectors.display()
            ),
        ));
    }

    let token_strings = match &config.doc_tokens {
        Some(path) => Some(TokenStrings::read_jsonl(path, &lens)?),
        None => None,
    };
    let vocabulary = match &config.vocab {
        Some(path) => Vocabulary::from_file(path, config.token_ids)?,
        None => Vocabulary::FromDocuments,
    };
    let docs = parse_docs(&config.docs, vocabulary, progress)?;
    if docs.ids.len() != lens.len() {
        return Err(Error::bad_input(
            config.lens.display().to_string(),
            format!(
                "{} token counts for {} documents in {}",
                lens.len(),
                docs.ids.len(),
                config.docs.display()
            ),
        ));
    }
    if docs.vocab.len() > u32::MAX as usize || docs.ids.len() > u32::MAX as usize {
        return Err(Error::bad_input(
            config.docs.display().to_string(),
            "more than 2^32 documents or terms",
        ));
    }

    Ok(Inputs {
        vectors,
        dim,
        token_offsets,
        token_strings,
        docs,
    })
}

/// The PQ codebook, trained once over all of the input's vectors (`None` for other codecs).
fn train_codebook(
    config: &BuildConfig,
    inputs: &Inputs,
    progress: &dyn Progress,
) -> Result<Option<crate::pq::Codebook>> {
    match config.codec {
        Codec::Pq => Ok(Some(pq::train_codebook(
            &inputs.vectors,
            config.int8_scale,
            &TrainParams::BUILD,
            progress,
        )?)),
        Codec::F16 | Codec::Int8 => Ok(None),
    }
}

impl Inputs {
    /// The input token vectors as the segment writer reads them.
    fn rows<'a>(&'a self, config: &BuildConfig) -> vectors::NpyRows<'a> {
        vectors::NpyRows {
            array: &self.vectors,
            int8_scale: config.int8_scale,
        }
    }
}

/// How a segment stores what it is given.
pub struct Storing<'a> {
    /// The token vectors' codec.
    pub codec: Codec,
    /// The PQ codebook (required with [`Codec::Pq`]).
    pub codebook: Option<&'a crate::pq::Codebook>,
    /// Build the approximate first stage with these settings (`None`: exact only).
    pub approx: Option<&'a ApproxSettings>,
}

impl<'a> Storing<'a> {
    fn of(config: &'a BuildConfig, codebook: Option<&'a crate::pq::Codebook>) -> Storing<'a> {
        Storing {
            codec: config.codec,
            codebook,
            approx: config.approx.as_ref(),
        }
    }
}

/// One segment's share of a build's inputs.
pub struct Part<'a> {
    /// Its documents, numbered from 0.
    pub docs: &'a ParsedDocs,
    /// Document `d`'s token vectors are rows `rows[d]..rows[d + 1]` of the vectors.
    pub rows: &'a [u64],
    /// Its documents' token strings, when stored.
    pub token_strings: Option<&'a TokenStrings>,
    /// The build parameters its manifest records.
    pub parameters: BTreeMap<String, String>,
}

/// Writes one segment into a staging directory and commits it onto `out` (replacing it with
/// `overwrite`); returns its directory and manifest. `vectors` holds rows of `dim` values.
pub fn write_segment(
    storing: &Storing<'_>,
    vectors: &dyn vectors::VectorRows,
    dim: usize,
    part: Part<'_>,
    (out, overwrite): (&Path, bool),
    progress: &dyn Progress,
) -> Result<(PathBuf, Manifest)> {
    let Part {
        docs,
        rows,
        token_strings,
        parameters,
    } = part;
    // This segment's token offsets, from 0.
    let token_offsets: Vec<u64> = rows.iter().map(|&r| r - rows[0]).collect();
    let total_tokens = *token_offsets.last().unwrap_or(&0);
    let mut staging = StagingDir::create(out, overwrite)?;
    write_strings(
        &mut staging,
        &docs.vocab,
        "vocab",
        files::VOCAB_OFFSETS,
        files::VOCAB_BYTES,
    )?;
    write_strings(
        &mut staging,
        &docs.ids,
        "ids",
        files::IDS_OFFSETS,
        files::IDS_BYTES,
    )?;
    if !docs.attributes.is_empty() {
        put(&mut staging, attributes::FILE, &docs.attributes.encode())?;
    }
    if let Some(token_strings) = token_strings {
        write_token_strings(&mut staging, token_strings)?;
    }
    let inverted = invert(docs, progress);
    put(&mut staging, files::POSTINGS_OFFSETS, &inverted.offsets)?;
    put(&mut staging, files::POSTINGS_DOCS, &inverted.docs)?;
    put(&mut staging, files::POSTINGS_WEIGHTS, &inverted.weights)?;
    let approx_manifest = match storing.approx {
        Some(settings) => {
            progress.start("approximate first stage", 1);
            let matrices = SparseMatrices {
                doc_offsets: &docs.offsets,
                doc_terms: &docs.terms,
                doc_weights: &docs.weights,
                post_offsets: &inverted.offsets,
                post_docs: &inverted.docs,
                post_weights: &inverted.weights,
            };
            settings.query_defaults.validate()?;
            settings.calibration.validate()?;
            let arrays = build_approx(&matrices, docs.vocab.len(), &settings.build)?;
            write_approx(&mut staging, &arrays)?;
            progress.advance(1);
            progress.finish();
            let mut manifest = ApproxManifest {
                build: ApproxBuildParams {
                    tiers: true,
                    ..settings.build
                },
                query_defaults: settings.query_defaults,
                pruned_postings: arrays.impact_docs.len() as u64,
                calibration: None,
            };
            if settings.calibration.queries > 0 {
                progress.start("calibrating the approximate first stage", 1);
                let outcome = calibrate_staged(&staging, docs, &manifest.build, settings)?;
                manifest.query_defaults = outcome.query_defaults;
                manifest.calibration = Some(outcome.calibration);
                progress.advance(1);
                progress.finish();
            }
            Some(manifest)
        }
        None => None,
    };
    drop(inverted);
    put(&mut staging, files::TOKENS_OFFSETS, &token_offsets)?;
    put(
        &mut staging,
        files::TOKENS_PADDED,
        &vectors::padded_offsets(&token_offsets),
    )?;
    let target = match (storing.codec, storing.codebook) {
        (Codec::Pq, Some(codebook)) => {
            put(&mut staging, files::PQ_SUBSPACES, &codebook.bounds())?;
            put(&mut staging, files::PQ_CODEBOOK, &codebook.centroids())?;
            vectors::Target::Pq(codebook)
        }
        (Codec::Pq, None) => {
            return Err(Error::bad_input(
                "--codec pq",
                "the PQ codebook was not trained",
            ))
        }
        (Codec::Int8, _) => vectors::Target::Int8,
        (Codec::F16, _) => vectors::Target::F16,
    };
    vectors::write_packed(
        vectors,
        dim,
        rows,
        &docs.ids,
        target,
        &mut staging,
        progress,
    )?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_by: format!("tandem {}", env!("CARGO_PKG_VERSION")),
        created_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        doc_count: docs.ids.len() as u64,
        vocab_size: docs.vocab.len() as u64,
        token_count: total_tokens,
        posting_count: docs.terms.len() as u64,
        dim: dim as u32,
        vector_codec: storing.codec.name().to_string(),
        build_parameters: parameters,
        approx: approx_manifest,
        files: BTreeMap::new(),
    };
    let dir = staging.commit(manifest)?;
    let manifest = Manifest::read(&dir.join(files::MANIFEST))?;
    Ok((dir, manifest))
}

/// Writes a string table (offsets and bytes) into the staging directory.
pub(crate) fn write_strings(
    staging: &mut StagingDir,
    strings: &[String],
    name: &str,
    offsets_name: &str,
    bytes_name: &str,
) -> Result<()> {
    let table = StringTable::from_strings(strings);
    let (offsets, bytes) = table.write(
        &staging.file_path(offsets_name),
        &staging.file_path(bytes_name),
        name,
    )?;
    staging.record(offsets_name, offsets);
    staging.record(bytes_name, bytes);
    Ok(())
}

/// Writes document token strings (see [`crate::doc_tokens`]) into the staging directory.
pub(crate) fn write_token_strings(staging: &mut StagingDir, input: &TokenStrings) -> Result<()> {
    write_strings(
        staging,
        &input.strings,
        "doc_tokens",
        doc_tokens::files::OFFSETS,
        doc_tokens::files::BYTES,
    )?;
    put(staging, doc_tokens::files::IDS, &input.ids)
}

/// Posting lists by term.
struct Inverted {
    offsets: Vec<u64>,
    docs: Vec<u32>,
    weights: Vec<f32>,
}

/// Inverts the document-term matrix: a counting pass sizes each posting list, a fill pass in
/// document order appends to them, so every list comes out sorted by document id.
fn invert(docs: &ParsedDocs, progress: &dyn Progress) -> Inverted {
    progress.start("invert postings", docs.ids.len() as u64);
    let vocab_size = docs.vocab.len();
    let mut offsets = vec![0u64; vocab_size + 1];
    for &term in &docs.terms {
        offsets[term as usize + 1] += 1;
    }
    for t in 0..vocab_size {
        offsets[t + 1] += offsets[t];
    }
    let mut cursor: Vec<u64> = offsets[..vocab_size].to_vec();
    let mut post_docs = vec![0u32; docs.terms.len()];
    let mut post_weights = vec![0f32; docs.terms.len()];
    for doc in 0..docs.ids.len() {
        let range = docs.offsets[doc] as usize..docs.offsets[doc + 1] as usize;
        for (&term, &weight) in docs.terms[range.clone()].iter().zip(&docs.weights[range]) {
            let slot = &mut cursor[term as usize];
            post_docs[*slot as usize] = doc as u32;
            post_weights[*slot as usize] = weight;
            *slot += 1;
        }
    }
    progress.advance(docs.ids.len() as u64);
    progress.finish();
    Inverted {
        offsets,
        docs: post_docs,
        weights: post_weights,
    }
}

/// Writes one array file into the staging directory and records it for the manifest.
pub(crate) fn put<T: Element>(staging: &mut StagingDir, name: &str, values: &[T]) -> Result<()> {
    let written = write_array(&staging.file_path(name), name, values)?;
    staging.record(name, written);
    Ok(())
}

/// Calibrates the approximate first stage from the files already in the staging directory.
fn calibrate_staged(
    staging: &StagingDir,
    docs: &ParsedDocs,
    build: &ApproxBuildParams,
    settings: &ApproxSettings,
) -> Result<calibrate::Outcome> {
    let doc_count = docs.ids.len();
    let vocab_size = docs.vocab.len();
    let postings = InvertedIndex::open(staging.path(), vocab_size, doc_count)?;
    let approx = approx::ApproxIndex::open(staging.path(), vocab_size, doc_count, build)?;
    let row = |d: u32| {
        let range = docs.offsets[d as usize] as usize..docs.offsets[d as usize + 1] as usize;
        docs.terms[range.clone()]
            .iter()
            .copied()
            .zip(docs.weights[range].iter().copied())
            .collect()
    };
    let source = match &settings.calibration_queries {
        Some(path) => calibrate::QuerySource::Sample {
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            queries: read_queries(path, &docs.vocab)?,
        },
        None => calibrate::QuerySource::Documents { doc_count, row },
    };
    let stages = calibrate::Stages {
        postings: &postings,
        approx: &approx,
        kept: build.n_postings,
    };
    Ok(calibrate::calibrate(
        &stages,
        source,
        &settings.calibration,
        settings.query_defaults,
    ))
}

/// The queries of a JSONL file as `(term id, weight)` lists over `vocab`, terms outside it
/// dropped, queries left without terms skipped; errors name the file and line.
fn read_queries(path: &Path, vocab: &[String]) -> Result<Vec<Vec<(u32, f32)>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ids: std::collections::HashMap<&str, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let records = tandem_data::jsonl::parse_all(&text, &path.display().to_string())
        .map_err(|e| Error::bad_input("--calibration-queries-file", e.to_string()))?;
    Ok(records
        .iter()
        .map(|r| {
            r.terms
                .iter()
                .filter_map(|(t, w)| ids.get(t.as_str()).map(|&id| (id, *w)))
                .collect::<Vec<_>>()
        })
        .filter(|terms| !terms.is_empty())
        .collect())
}

/// Writes the approximate first stage's arrays into the staging directory.
pub(crate) fn write_approx(
    staging: &mut StagingDir,
    a: &approx::build::ApproxArrays,
) -> Result<()> {
    use approx::files as f;
    put(staging, f::FORWARD_OFFSETS, &a.forward_offsets)?;
    put(staging, f::FORWARD_TERMS, &a.forward_terms)?;
    put(staging, f::FORWARD_WEIGHTS, &a.forward_weights)?;
    put(staging, f::IMPACT_OFFSETS, &a.impact_offsets)?;
    put(staging, f::IMPACT_DOCS, &a.impact_docs)?;
    put(staging, f::IMPACT_WEIGHTS, &a.impact_weights)?;
    if let Some(c) = &a.clusters {
        put(staging, f::CLUSTER_OFFSETS, &c.offsets)?;
        put(staging, f::CLUSTER_DOCS, &c.docs)?;
        put(staging, f::CLUSTER_OF, &c.of)?;
    }
    Ok(())
}

fn build_parameters(config: &BuildConfig, vectors: &NpyArray) -> BTreeMap<String, String> {
    let path = |p: &Path| p.display().to_string();
    let mut params = BTreeMap::new();
    params.insert("docs".to_string(), path(&config.docs));
    params.insert("vectors".to_string(), path(&config.vectors));
    params.insert("lens".to_string(), path(&config.lens));
    params.insert(
        "vectors_dtype".to_string(),
        vectors.dtype().name().to_string(),
    );
    if let Some(scale) = config.int8_scale {
        params.insert("int8_scale".to_string(), scale.to_string());
    }
    params.insert(
        "vocab".to_string(),
        config
            .vocab
            .as_deref()
            .map(path)
            .unwrap_or_else(|| "from documents".to_string()),
    );
    params.insert("token_ids".to_string(), config.token_ids.to_string());
    if config.codec == Codec::Pq {
        let t = TrainParams::BUILD;
        params.insert(
            "pq_training".to_string(),
            format!(
                "{} subspaces (at most) × 256 centroids; k-means++ and at most {} Lloyd iterations on at most {} evenly spaced tokens; seed {}",
                t.subspaces, t.iterations, t.sample, t.seed
            ),
        );
    }
    params.insert(
        "first_stage".to_string(),
        match &config.approx {
            Some(a) => format!(
                "approx (n_postings {}, cluster_size {}; query defaults query_cut {}, depth {}, rescore {}, expand {})",
                a.build.n_postings,
                a.build.cluster_size,
                a.query_defaults.query_cut,
                a.query_defaults.depth,
                a.query_defaults.rescore,
                a.query_defaults.expand
            ),
            None => "exact".to_string(),
        },
    );
    params
}
