//! Deterministic synthetic corpus generator with SPLADE-like sparse statistics and
//! ColBERT-like token vectors, streamed to disk in the layout of a real eval set
//! (`docs.jsonl`, `queries.jsonl`, `vocab.txt`, and with a dimension the `.npy` token
//! vector files).
//!
//! # Files
//!
//! - `vocab.txt`: [`VOCAB_SIZE`] terms `w00000` .. `w30521`, one per line (token id =
//!   line number − 1).
//! - `docs.jsonl`: `{"id": "d0000000", "vector": {"w00017": 0.1234, ...}}`, terms in
//!   ascending token id order, weights rounded to 4 decimals and > 0.
//! - `queries.jsonl`: `{"id": "q000000", "vector": {...}}`, same format.
//! - `qrels.trec`: TREC relevance judgments, `qid 0 docid 1`: a document is relevant to a
//!   query when both were drawn from the same topic (below), so quality measures
//!   (nDCG@10, recall) can be computed on a synthetic corpus too. Topics have `docs / K`
//!   documents on average, so with few documents some queries have no relevant one (they
//!   are then absent from the file, as trec_eval expects).
//! - with a dimension `D`: `doc_vectors.npy` (`<f2`, `[total_doc_tokens, D]`),
//!   `doc_lens.npy` (`<u4`, `[docs]`), `query_vectors.npy` (`<f4`,
//!   `[total_query_tokens, D]`), `query_lens.npy` (`<u4`, `[queries]`); NPY v1.0,
//!   row-major, unit-norm rows.
//!
//! # Statistics
//!
//! Vocabulary and topics (`V` = 30,522, `K` = 1,024 topics):
//! - Global term popularity is Zipf: the term of popularity rank `r` (1-based) has
//!   probability `p(r) = r^-1.05 / Σ_{j=1..V} j^-1.05`; ranks map to token ids through a
//!   seeded random permutation, so popular terms are not ids `0..`.
//! - Each topic `k` owns 256 distinct preferred terms, drawn uniformly from the ranks
//!   `101..=V` (the 100 most popular terms act as stopwords and belong to no topic).
//!   Inside a topic, the term in slot `j` (0-based) is preferred with probability
//!   `∝ (j + 1)^-0.8`, so each topic has core terms that most of its documents share
//!   and a tail that tells them apart.
//!
//! Documents (each independently):
//! - topic `k ~ Uniform{0..K-1}`;
//! - distinct terms `n ~ Uniform{120..=250}` (mean 185), of which
//!   `round(n · f)`, `f ~ Uniform[0.3, 0.5)`, are topical (drawn from the topic's
//!   preference distribution) and the rest background (drawn from the global Zipf);
//!   draws are without replacement;
//! - weights log-normal, `w = exp(μ + σ·z)`, `z ~ N(0, 1)`, `σ = 0.7`, topical median
//!   `e^μ = 0.7` (5–95 %: 0.22–2.2), background median 0.4 (0.13–1.26), redrawn above
//!   3.0, then rounded to 4 decimals with a floor of 0.0001.
//!
//! Queries: topic `k ~ Uniform{0..K-1}`; `n ~ Uniform{20..=40}` distinct terms, of which
//! `round(n · f)`, `f ~ Uniform[0.6, 0.8)`, are topical, the rest popular background
//! terms; weights log-normal with `σ = 0.6`, topical median 0.8, background median 0.4.
//! A query therefore shares its core terms with the ~`docs / K` documents of its topic.
//!
//! Token vectors (dimension `D`):
//! - 16 centroids per topic plus a pool of 64 common centroids shared by all topics
//!   (think `[CLS]`, punctuation, function words), each a uniformly random unit vector
//!   (`normalize(N(0, I_D))`);
//! - a token is `normalize(c + (0.7 / √D) · N(0, I_D))` where `c` is a common centroid
//!   with probability 0.2, otherwise a uniformly chosen centroid of the document's (or
//!   query's) topic; the noise has norm ≈ 0.7, so `cos(token, c) ≈ 0.82`;
//! - document lengths `L ~ Uniform{⌊T/2⌋..=T + ⌊T/2⌋}`, at least 1 (mean `T` =
//!   `tokens_per_doc`); query lengths likewise around `query_tokens`.
//!
//! # Determinism
//!
//! Every random draw comes from a `Xoshiro256++` generator seeded from
//! `(seed, stream, index)` through SplitMix64: one stream each for the vocabulary
//! permutation, the topics, the centroids and the lengths, and one generator per
//! document or query for its terms and one for its tokens. Output is therefore
//! byte-identical for the same seed whatever the thread count or batch size, and the
//! JSON files do not depend on the dimension or token counts. Items are generated in
//! parallel (rayon) in batches and written in order while the next batch is generated,
//! so memory stays bounded (a few hundred MB) whatever the corpus size.

use crate::npy::npy_header;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::f16;
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Number of terms in the generated vocabulary (the size of the BERT wordpiece vocabulary).
pub const VOCAB_SIZE: usize = 30_522;

const NUM_TOPICS: usize = 1_024;
const TERM_ZIPF_EXPONENT: f64 = 1.05;
const TOPIC_TERMS: usize = 256;
const TOPIC_EXCLUDED_RANKS: usize = 100;
const TOPIC_SLOT_EXPONENT: f64 = 0.8;

const CENTROIDS_PER_TOPIC: usize = 16;
const COMMON_CENTROIDS: usize = 64;
const COMMON_TOKEN_PROB: f64 = 0.2;
const TOKEN_NOISE_NORM: f64 = 0.7;

const WEIGHT_CAP: f64 = 3.0;
const WEIGHT_SCALE: f64 = 10_000.0;

/// Largest accepted token vector dimension (the centroids alone take
/// `16,448 × dim × 4` bytes).
const MAX_DIM: usize = 8_192;
/// Largest accepted mean token count per document or query.
const MAX_MEAN_TOKENS: usize = 1 << 20;

/// Target size of one parallel work unit's output, in bytes.
const CHUNK_BYTES: usize = 4 << 20;
const WRITE_BUFFER: usize = 8 << 20;

// Independent random streams.
const STREAM_VOCAB: u64 = 1;
const STREAM_TOPICS: u64 = 2;
const STREAM_CENTROIDS: u64 = 3;
const STREAM_DOC_LENS: u64 = 4;
const STREAM_QUERY_LENS: u64 = 5;
const STREAM_DOC_TERMS: u64 = 6;
const STREAM_DOC_TOKENS: u64 = 7;
const STREAM_QUERY_TERMS: u64 = 8;
const STREAM_QUERY_TOKENS: u64 = 9;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Number of documents.
    pub docs: usize,
    /// Number of queries.
    pub queries: usize,
    /// Seed for every random draw; the same seed gives byte-identical files.
    pub seed: u64,
    /// Token vector dimension; `None` writes only the sparse files and `vocab.txt`.
    pub dim: Option<usize>,
    /// Mean tokens per document (lengths are uniform in `[T/2, 3T/2]`, at least 1).
    pub tokens_per_doc: usize,
    /// Mean tokens per query (lengths are uniform in `[Q/2, 3Q/2]`, at least 1).
    pub query_tokens: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            docs: 10_000,
            queries: 1_000,
            seed: 0,
            dim: None,
            tokens_per_doc: 64,
            query_tokens: 32,
        }
    }
}

/// Counts of what [`generate`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// Documents written.
    pub docs: usize,
    /// Queries written.
    pub queries: usize,
    /// Total (document, term) postings in `docs.jsonl`.
    pub postings: u64,
    /// Rows of `doc_vectors.npy` (0 without a dimension).
    pub doc_tokens: u64,
    /// Rows of `query_vectors.npy` (0 without a dimension).
    pub query_tokens: u64,
}

/// Generates the corpus described by `config` into the directory `out` (created if
/// missing; existing files are overwritten), calling `progress` with the number of
/// documents written so far after each batch. See the module docs for the files and
/// their statistics.
pub fn generate(config: &SynthConfig, out: &Path, progress: &dyn Fn(u64)) -> Result<SynthSummary> {
    if let Some(dim) = config.dim {
        if !(1..=MAX_DIM).contains(&dim) {
            bail!("synthetic corpus: dim must be in 1..={MAX_DIM}, got {dim}");
        }
        for (name, value) in [
            ("tokens_per_doc", config.tokens_per_doc),
            ("query_tokens", config.query_tokens),
        ] {
            if !(1..=MAX_MEAN_TOKENS).contains(&value) {
                bail!("synthetic corpus: {name} must be in 1..={MAX_MEAN_TOKENS}, got {value}");
            }
        }
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating output directory {}", out.display()))?;

    write_vocab(&out.join("vocab.txt"))?;
    let model = Model::new(config.seed, config.dim.unwrap_or(0));

    let docs = ItemKind::Doc.run(config, &model, out, progress)?;
    let queries = ItemKind::Query.run(config, &model, out, &|_| {})?;
    write_qrels(config, &out.join("qrels.trec"))?;
    Ok(SynthSummary {
        docs: config.docs,
        queries: config.queries,
        postings: docs.postings,
        doc_tokens: docs.tokens,
        query_tokens: queries.tokens,
    })
}

fn write_vocab(path: &Path) -> Result<()> {
    let mut buf = Vec::with_capacity(VOCAB_SIZE * 7);
    for id in 0..VOCAB_SIZE {
        push_term(&mut buf, id as u16);
        buf.push(b'\n');
    }
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

/// SplitMix64 finaliser: a bijective 64-bit mix.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator for item `index` of `stream` under `seed`.
pub(crate) fn stream_rng(seed: u64, stream: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix64(mix64(seed ^ mix64(stream)) ^ index))
}

pub(crate) fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Walker/Vose alias table: O(1) sampling from a fixed discrete distribution with one
/// 64-bit draw.
struct AliasTable {
    /// Acceptance threshold of each slot, scaled to `[0, 2^32]`.
    threshold: Vec<u64>,
    alias: Vec<u32>,
}

impl AliasTable {
    fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding.
        for i in small.into_iter().chain(large) {
            scaled[i] = 1.0;
        }
        let threshold = scaled
            .iter()
            .map(|p| (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64)
            .collect();
        Self { threshold, alias }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let r = rng.next_u64();
        let slot = (((r >> 32) * self.threshold.len() as u64) >> 32) as usize;
        if (r & 0xffff_ffff) < self.threshold[slot] {
            slot
        } else {
            self.alias[slot] as usize
        }
    }
}

/// Everything shared by all items: vocabulary popularity, topics and centroids.
struct Model {
    /// Token id of each popularity rank (0-based).
    rank_to_term: Vec<u16>,
    /// Global Zipf popularity over ranks.
    background: AliasTable,
    /// `NUM_TOPICS × TOPIC_TERMS` preferred term ids.
    topic_terms: Vec<u16>,
    /// Preference over a topic's slots.
    topic_slots: AliasTable,
    dim: usize,
    /// `(NUM_TOPICS × CENTROIDS_PER_TOPIC + COMMON_CENTROIDS) × dim` unit vectors; the
    /// common pool comes last.
    centroids: Vec<f32>,
}

impl Model {
    fn new(seed: u64, dim: usize) -> Self {
        let mut rng = stream_rng(seed, STREAM_VOCAB, 0);
        let mut rank_to_term: Vec<u16> = (0..VOCAB_SIZE as u16).collect();
        for i in (1..VOCAB_SIZE).rev() {
            rank_to_term.swap(i, rng.random_range(0..=i));
        }
        let zipf: Vec<f64> = (1..=VOCAB_SIZE)
            .map(|r| (r as f64).powf(-TERM_ZIPF_EXPONENT))
            .collect();

        let mut rng = stream_rng(seed, STREAM_TOPICS, 0);
        let mut topic_terms = Vec::with_capacity(NUM_TOPICS * TOPIC_TERMS);
        let mut taken = vec![false; VOCAB_SIZE];
        for _ in 0..NUM_TOPICS {
            let start = topic_terms.len();
            while topic_terms.len() - start < TOPIC_TERMS {
                let term = rank_to_term[rng.random_range(TOPIC_EXCLUDED_RANKS..VOCAB_SIZE)];
                if !std::mem::replace(&mut taken[term as usize], true) {
                    topic_terms.push(term);
                }
            }
            for &term in &topic_terms[start..] {
                taken[term as usize] = false;
            }
        }
        let slots: Vec<f64> = (1..=TOPIC_TERMS)
            .map(|j| (j as f64).powf(-TOPIC_SLOT_EXPONENT))
            .collect();

        let mut rng = stream_rng(seed, STREAM_CENTROIDS, 0);
        let count = if dim == 0 {
            0
        } else {
            NUM_TOPICS * CENTROIDS_PER_TOPIC + COMMON_CENTROIDS
        };
        let mut centroids = Vec::with_capacity(count * dim);
        let mut v = vec![0f64; dim];
        for _ in 0..count {
            v.iter_mut().for_each(|x| *x = normal(&mut rng));
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::MIN_POSITIVE);
            centroids.extend(v.iter().map(|x| (x / norm) as f32));
        }

        Self {
            rank_to_term,
            background: AliasTable::new(&zipf),
            topic_terms,
            topic_slots: AliasTable::new(&slots),
            dim,
            centroids,
        }
    }

    /// Draws `n` distinct weighted terms (`topical` of them from `topic`) into `out`,
    /// sorted by term id; weights are quantised to 1e-4 units.
    fn sample_terms(
        &self,
        rng: &mut impl Rng,
        topic: usize,
        n: usize,
        topical: usize,
        weights: &TermWeights,
        scratch: &mut TermScratch,
    ) {
        let TermScratch { seen, terms: out } = scratch;
        out.clear();
        let terms = &self.topic_terms[topic * TOPIC_TERMS..(topic + 1) * TOPIC_TERMS];
        let topical = topical.min(TOPIC_TERMS);
        let mut attempts = 0;
        while out.len() < topical && attempts < 64 * TOPIC_TERMS {
            attempts += 1;
            let term = terms[self.topic_slots.sample(rng)];
            if !std::mem::replace(&mut seen[term as usize], true) {
                out.push((term, weights.draw(rng, weights.topical_median)));
            }
        }
        let n = n.min(VOCAB_SIZE);
        while out.len() < n {
            let term = self.rank_to_term[self.background.sample(rng)];
            if !std::mem::replace(&mut seen[term as usize], true) {
                out.push((term, weights.draw(rng, weights.background_median)));
            }
        }
        for &(term, _) in out.iter() {
            seen[term as usize] = false;
        }
        out.sort_unstable_by_key(|&(term, _)| term);
    }

    /// Appends `count` unit token vectors of `topic` to `out` as little-endian f16
    /// (`half`) or f32.
    fn push_tokens(
        &self,
        rng: &mut impl Rng,
        topic: usize,
        count: usize,
        half: bool,
        scratch: &mut TokenScratch,
        out: &mut Vec<u8>,
    ) {
        let dim = self.dim;
        let sigma = TOKEN_NOISE_NORM / (dim as f64).sqrt();
        for _ in 0..count {
            let centroid = if rng.random::<f64>() < COMMON_TOKEN_PROB {
                NUM_TOPICS * CENTROIDS_PER_TOPIC + rng.random_range(0..COMMON_CENTROIDS)
            } else {
                topic * CENTROIDS_PER_TOPIC + rng.random_range(0..CENTROIDS_PER_TOPIC)
            };
            let c = &self.centroids[centroid * dim..(centroid + 1) * dim];
            let mut norm2 = 0f32;
            for (x, &ci) in scratch.f32s.iter_mut().zip(c) {
                *x = ci + (sigma * normal(rng)) as f32;
                norm2 += *x * *x;
            }
            let inv = 1.0 / norm2.sqrt().max(f32::MIN_POSITIVE);
            scratch.f32s.iter_mut().for_each(|x| *x *= inv);
            if half {
                for (h, &x) in scratch.f16s.iter_mut().zip(&scratch.f32s) {
                    *h = f16::from_f32(x);
                }
                out.extend(scratch.f16s.iter().flat_map(|h| h.to_le_bytes()));
            } else {
                out.extend(scratch.f32s.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
    }
}

/// Reusable buffers for drawing one item's terms.
struct TermScratch {
    /// Which term ids are already drawn (all false between items).
    seen: Vec<bool>,
    /// Drawn `(term id, weight in 1e-4 units)`.
    terms: Vec<(u16, u32)>,
}

/// Reusable buffers for one token vector.
struct TokenScratch {
    f32s: Vec<f32>,
    f16s: Vec<f16>,
}

/// Log-normal weight parameters of one item kind.
struct TermWeights {
    topical_median: f64,
    background_median: f64,
    sigma: f64,
}

impl TermWeights {
    /// A log-normal weight with the given median, redrawn above the cap, in 1e-4 units.
    fn draw(&self, rng: &mut impl Rng, median: f64) -> u32 {
        let mut w = WEIGHT_CAP;
        for _ in 0..16 {
            w = median * (self.sigma * normal(rng)).exp();
            if w <= WEIGHT_CAP {
                break;
            }
        }
        ((w.min(WEIGHT_CAP) * WEIGHT_SCALE).round() as u32).max(1)
    }
}

/// Documents or queries: everything that differs between the two.
#[derive(Clone, Copy)]
enum ItemKind {
    Doc,
    Query,
}

struct KindParams {
    prefix: u8,
    id_width: usize,
    terms: (usize, usize),
    topical_fraction: (f64, f64),
    weights: TermWeights,
    json_file: &'static str,
    vectors_file: &'static str,
    lens_file: &'static str,
    half: bool,
    terms_stream: u64,
    tokens_stream: u64,
    lens_stream: u64,
}

/// Counts from writing one item kind.
struct KindTotals {
    postings: u64,
    tokens: u64,
}

/// Output of one parallel work unit.
struct ChunkOut {
    json: Vec<u8>,
    vectors: Vec<u8>,
    postings: u64,
}

impl ItemKind {
    fn params(self) -> KindParams {
        match self {
            ItemKind::Doc => KindParams {
                prefix: b'd',
                id_width: 7,
                terms: (120, 250),
                topical_fraction: (0.3, 0.5),
                weights: TermWeights {
                    topical_median: 0.7,
                    background_median: 0.4,
                    sigma: 0.7,
                },
                json_file: "docs.jsonl",
                vectors_file: "doc_vectors.npy",
                lens_file: "doc_lens.npy",
                half: true,
                terms_stream: STREAM_DOC_TERMS,
                tokens_stream: STREAM_DOC_TOKENS,
                lens_stream: STREAM_DOC_LENS,
            },
            ItemKind::Query => KindParams {
                prefix: b'q',
                id_width: 6,
                terms: (20, 40),
                topical_fraction: (0.6, 0.8),
                weights: TermWeights {
                    topical_median: 0.8,
                    background_median: 0.4,
                    sigma: 0.6,
                },
                json_file: "queries.jsonl",
                vectors_file: "query_vectors.npy",
                lens_file: "query_lens.npy",
                half: false,
                terms_stream: STREAM_QUERY_TERMS,
                tokens_stream: STREAM_QUERY_TOKENS,
                lens_stream: STREAM_QUERY_LENS,
            },
        }
    }

    /// Generates and writes all items of this kind.
    fn run(
        self,
        config: &SynthConfig,
        model: &Model,
        out: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<KindTotals> {
        let p = self.params();
        let (count, mean_tokens) = match self {
            ItemKind::Doc => (config.docs, config.tokens_per_doc),
            ItemKind::Query => (config.queries, config.query_tokens),
        };
        let mut json = Sink::create(out.join(p.json_file))?;

        // Token counts come first, from their own stream, so the NPY shape is known.
        let (lens, mut vectors) = match config.dim {
            Some(dim) => {
                let mut rng = stream_rng(config.seed, p.lens_stream, 0);
                let (lo, hi) = (mean_tokens / 2, mean_tokens + mean_tokens / 2);
                let lens: Vec<u32> = (0..count)
                    .map(|_| rng.random_range(lo..=hi).max(1) as u32)
                    .collect();
                let total: u64 = lens.iter().map(|&l| u64::from(l)).sum();

                let mut lens_sink = Sink::create(out.join(p.lens_file))?;
                lens_sink.write(&npy_header("<u4", &[count as u64]))?;
                let bytes: Vec<u8> = lens.iter().flat_map(|l| l.to_le_bytes()).collect();
                lens_sink.write(&bytes)?;
                lens_sink.finish()?;

                let descr = if p.half { "<f2" } else { "<f4" };
                let mut sink = Sink::create(out.join(p.vectors_file))?;
                sink.write(&npy_header(descr, &[total, dim as u64]))?;
                (lens, Some(sink))
            }
            None => (Vec::new(), None),
        };
        let total_tokens: u64 = lens.iter().map(|&l| u64::from(l)).sum();

        // Work units sized by output bytes; any size gives the same files.
        let elem = if p.half { 2 } else { 4 };
        let item_bytes =
            16 * (p.terms.0 + p.terms.1) + mean_tokens * config.dim.unwrap_or(0) * elem;
        let chunk = (CHUNK_BYTES / item_bytes.max(1)).clamp(1, 4096);
        let batch = chunk * (4 * rayon::current_num_threads()).clamp(8, 64);

        let generate_batch = |start: usize| -> Vec<ChunkOut> {
            let end = (start + batch).min(count);
            (start..end)
                .step_by(chunk)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|from| {
                    self.generate_chunk(&p, config, model, &lens, from..(from + chunk).min(end))
                })
                .collect()
        };

        let mut postings = 0u64;
        let mut done = 0usize;
        let mut pending = generate_batch(0);
        while done < count {
            let next_start = done + batch;
            let write = || -> Result<u64> {
                let mut n = 0;
                for c in &pending {
                    json.write(&c.json)?;
                    if let Some(v) = vectors.as_mut() {
                        v.write(&c.vectors)?;
                    }
                    n += c.postings;
                }
                Ok(n)
            };
            let (written, next) = rayon::join(write, || {
                (next_start < count).then(|| generate_batch(next_start))
            });
            postings += written?;
            done = next_start.min(count);
            progress(done as u64);
            pending = next.unwrap_or_default();
        }

        json.finish()?;
        if let Some(v) = vectors {
            v.finish()?;
        }
        Ok(KindTotals {
            postings,
            tokens: total_tokens,
        })
    }

    /// Generates items `range` (JSON lines and token vector bytes).
    fn generate_chunk(
        self,
        p: &KindParams,
        config: &SynthConfig,
        model: &Model,
        lens: &[u32],
        range: std::ops::Range<usize>,
    ) -> ChunkOut {
        let dim = model.dim;
        let elem = if p.half { 2 } else { 4 };
        let tokens: usize = lens
            .get(range.clone())
            .map_or(0, |l| l.iter().map(|&x| x as usize).sum());
        let mut out = ChunkOut {
            json: Vec::with_capacity(range.len() * 16 * p.terms.1),
            vectors: Vec::with_capacity(tokens * dim * elem),
            postings: 0,
        };
        let mut term_scratch = TermScratch {
            seen: vec![false; VOCAB_SIZE],
            terms: Vec::with_capacity(p.terms.1),
        };
        let mut token_scratch = TokenScratch {
            f32s: vec![0.0; dim],
            f16s: vec![f16::ZERO; dim],
        };
        for i in range {
            let mut rng = stream_rng(config.seed, p.terms_stream, i as u64);
            let topic = rng.random_range(0..NUM_TOPICS);
            let n = rng.random_range(p.terms.0..=p.terms.1);
            let fraction = rng.random_range(p.topical_fraction.0..p.topical_fraction.1);
            let topical = (n as f64 * fraction).round() as usize;
            model.sample_terms(&mut rng, topic, n, topical, &p.weights, &mut term_scratch);
            let terms = &term_scratch.terms;
            push_json_line(&mut out.json, p.prefix, p.id_width, i as u64, terms);
            out.postings += terms.len() as u64;

            if let Some(&len) = lens.get(i) {
                let mut rng = stream_rng(config.seed, p.tokens_stream, i as u64);
                model.push_tokens(
                    &mut rng,
                    topic,
                    len as usize,
                    p.half,
                    &mut token_scratch,
                    &mut out.vectors,
                );
            }
        }
        out
    }
}

/// The topic of item `index` of a kind: the first draw of its terms generator (see
/// [`ItemKind::generate_chunk`]).
fn item_topic(seed: u64, terms_stream: u64, index: usize) -> usize {
    stream_rng(seed, terms_stream, index as u64).random_range(0..NUM_TOPICS)
}

/// Writes `qrels.trec`: for each query, in order, every document of its topic, in id order.
fn write_qrels(config: &SynthConfig, path: &Path) -> Result<()> {
    let (doc, query) = (ItemKind::Doc.params(), ItemKind::Query.params());
    let doc_topics: Vec<u16> = (0..config.docs)
        .into_par_iter()
        .map(|i| item_topic(config.seed, doc.terms_stream, i) as u16)
        .collect();
    let mut by_topic: Vec<Vec<u32>> = vec![Vec::new(); NUM_TOPICS];
    for (i, &topic) in doc_topics.iter().enumerate() {
        by_topic[usize::from(topic)].push(i as u32);
    }
    let mut sink = Sink::create(path.to_path_buf())?;
    let mut line = Vec::new();
    for q in 0..config.queries {
        line.clear();
        for &d in &by_topic[item_topic(config.seed, query.terms_stream, q)] {
            line.push(query.prefix);
            push_padded(&mut line, q as u64, query.id_width);
            line.extend_from_slice(b" 0 ");
            line.push(doc.prefix);
            push_padded(&mut line, u64::from(d), doc.id_width);
            line.extend_from_slice(b" 1\n");
        }
        sink.write(&line)?;
    }
    sink.finish()
}

/// A buffered output file that names its path in every error.
pub(crate) struct Sink {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl Sink {
    pub(crate) fn create(path: PathBuf) -> Result<Self> {
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            writer: BufWriter::with_capacity(WRITE_BUFFER, file),
            path,
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.writer
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Appends `v` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_padded(buf: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(len)));
    buf.extend_from_slice(&digits[start..]);
}

/// Appends a weight given in 1e-4 units the way Python's `json` prints a float rounded
/// to 4 decimals (`0.164`, `1.0`, `0.0005`).
pub(crate) fn push_weight(buf: &mut Vec<u8>, q: u32) {
    push_padded(buf, u64::from(q) / 10_000, 1);
    buf.push(b'.');
    let mut frac = q % 10_000;
    if frac == 0 {
        buf.push(b'0');
        return;
    }
    let mut width = 4;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    push_padded(buf, u64::from(frac), width);
}

fn push_term(buf: &mut Vec<u8>, id: u16) {
    buf.push(b'w');
    push_padded(buf, u64::from(id), 5);
}

/// Appends `{"id": "<prefix><index>", "vector": {"<term>": weight, ...}}\n`.
fn push_json_line(buf: &mut Vec<u8>, prefix: u8, width: usize, index: u64, terms: &[(u16, u32)]) {
    buf.extend_from_slice(b"{\"id\": \"");
    buf.push(prefix);
    push_padded(buf, index, width);
    buf.extend_from_slice(b"\", \"vector\": {");
    for (k, &(term, weight)) in terms.iter().enumerate() {
        if k > 0 {
            buf.extend_from_slice(b", ");
        }
        buf.push(b'"');
        push_term(buf, term);
        buf.extend_from_slice(b"\": ");
        push_weight(buf, weight);
    }
    buf.extend_from_slice(b"}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SynthConfig {
        SynthConfig {
            docs: 700,
            queries: 60,
            seed,
            dim: Some(16),
            tokens_per_doc: 8,
            query_tokens: 5,
        }
    }

    const FILES: [&str; 7] = [
        "vocab.txt",
        "docs.jsonl",
        "queries.jsonl",
        "doc_vectors.npy",
        "doc_lens.npy",
        "query_vectors.npy",
        "query_lens.npy",
    ];

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Parses an NPY v1.0 header: (descr, shape, data).
    fn parse_npy(bytes: &[u8]) -> (String, Vec<usize>, &[u8]) {
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
        assert!(header.ends_with('\n'));
        assert!(header.contains("'fortran_order': False"));
        let descr = header
            .split("'descr': '")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        let shape = header
            .split("'shape': (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        let shape = shape
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        (descr.to_string(), shape, &bytes[10 + hlen..])
    }

    #[test]
    fn deterministic_and_thread_independent() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let sa = one
            .install(|| generate(&small(7), a.path(), &|_| {}))
            .unwrap();
        let sb = three
            .install(|| generate(&small(7), b.path(), &|_| {}))
            .unwrap();
        assert_eq!(sa, sb);
        for name in FILES {
            assert!(
                read(a.path(), name) == read(b.path(), name),
                "{name} differs"
            );
        }
        let c = tempfile::tempdir().unwrap();
        generate(&small(8), c.path(), &|_| {}).unwrap();
        assert!(read(a.path(), "docs.jsonl") != read(c.path(), "docs.jsonl"));
    }

    #[test]
    fn sparse_files_do_not_depend_on_vectors() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(&small(3), a.path(), &|_| {}).unwrap();
        let config = SynthConfig {
            dim: None,
            ..small(3)
        };
        let summary = generate(&config, b.path(), &|_| {}).unwrap();
        assert_eq!(summary.doc_tokens, 0);
        assert!(!b.path().join("doc_vectors.npy").exists());
        for name in ["docs.jsonl", "queries.jsonl", "vocab.txt"] {
            assert!(
                read(a.path(), name) == read(b.path(), name),
                "{name} differs"
            );
        }
    }

    fn check_vectors(
        dir: &Path,
        vectors: &str,
        lens: &str,
        descr: &str,
        items: usize,
        dim: usize,
    ) -> u64 {
        let lens_bytes = read(dir, lens);
        let (d, shape, data) = parse_npy(&lens_bytes);
        assert_eq!((d.as_str(), shape), ("<u4", vec![items]));
        let lens: Vec<u32> = data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert!(lens.iter().all(|&l| l >= 1));
        let total: usize = lens.iter().map(|&l| l as usize).sum();

        let bytes = read(dir, vectors);
        let (d, shape, data) = parse_npy(&bytes);
        assert_eq!((d.as_str(), shape), (descr, vec![total, dim]));
        let values: Vec<f32> = if descr == "<f2" {
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        } else {
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        assert_eq!(values.len(), total * dim);
        for row in values.chunks_exact(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "row norm {norm}");
        }
        total as u64
    }

    fn check_json(
        dir: &Path,
        name: &str,
        prefix: &str,
        width: usize,
        terms: (usize, usize),
    ) -> u64 {
        let text = String::from_utf8(read(dir, name)).unwrap();
        let mut postings = 0;
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["id"], format!("{prefix}{i:0width$}"));
            let vector = v["vector"].as_object().unwrap();
            assert!(
                (terms.0..=terms.1).contains(&vector.len()),
                "{} terms",
                vector.len()
            );
            for (term, w) in vector {
                let id: usize = term.strip_prefix('w').unwrap().parse().unwrap();
                assert!(id < VOCAB_SIZE);
                let w = w.as_f64().unwrap();
                assert!(w > 0.0 && w <= WEIGHT_CAP);
                assert_eq!((w * 1e4).round() / 1e4, w);
            }
            postings += vector.len() as u64;
        }
        postings
    }

    #[test]
    fn shapes_and_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let config = small(11);
        let calls = std::cell::Cell::new(0);
        let s = generate(&config, dir.path(), &|done| {
            assert!(done <= config.docs as u64);
            calls.set(calls.get() + 1);
        })
        .unwrap();
        assert!(calls.get() >= 1);

        let vocab = String::from_utf8(read(dir.path(), "vocab.txt")).unwrap();
        let vocab: Vec<&str> = vocab.lines().collect();
        assert_eq!(vocab.len(), VOCAB_SIZE);
        assert_eq!(vocab[17], "w00017");

        assert_eq!(
            check_json(dir.path(), "docs.jsonl", "d", 7, (120, 250)),
            s.postings
        );
        check_json(dir.path(), "queries.jsonl", "q", 6, (20, 40));
        let dt = check_vectors(
            dir.path(),
            "doc_vectors.npy",
            "doc_lens.npy",
            "<f2",
            700,
            16,
        );
        let qt = check_vectors(
            dir.path(),
            "query_vectors.npy",
            "query_lens.npy",
            "<f4",
            60,
            16,
        );
        assert_eq!(
            (s.docs, s.queries, s.doc_tokens, s.query_tokens),
            (700, 60, dt, qt)
        );
    }

    #[test]
    fn queries_share_vocabulary_with_their_topic() {
        // A query's best-scoring documents (exact sparse dot product) should match it on
        // far more terms than a random document does.
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            docs: 3_000,
            queries: 20,
            dim: None,
            ..small(5)
        };
        generate(&config, dir.path(), &|_| {}).unwrap();
        let parse = |name: &str| -> Vec<Vec<(String, f64)>> {
            String::from_utf8(read(dir.path(), name))
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let m = v["vector"].as_object().unwrap();
                    m.iter()
                        .map(|(k, w)| (k.clone(), w.as_f64().unwrap()))
                        .collect()
                })
                .collect()
        };
        let docs: Vec<std::collections::HashMap<String, f64>> = parse("docs.jsonl")
            .into_iter()
            .map(|d| d.into_iter().collect())
            .collect();
        // The qrels: a query's relevant documents are those of its topic.
        let mut relevant: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for line in String::from_utf8(read(dir.path(), "qrels.trec"))
            .unwrap()
            .lines()
        {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!((f.len(), f[1], f[3]), (4, "0", "1"), "{line}");
            let doc: usize = f[2].trim_start_matches('d').parse().unwrap();
            relevant.entry(f[0].to_string()).or_default().push(doc);
        }
        let mut top_is_relevant = 0;
        for (i, q) in parse("queries.jsonl").into_iter().enumerate() {
            let mut scores: Vec<f64> = docs
                .iter()
                .map(|d| q.iter().map(|(t, w)| w * d.get(t).unwrap_or(&0.0)).sum())
                .collect();
            let best = (0..scores.len())
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                .unwrap();
            let qid = format!("q{i:06}");
            top_is_relevant += usize::from(relevant.get(&qid).is_some_and(|r| r.contains(&best)));
            scores.sort_by(|a, b| b.total_cmp(a));
            let median = scores[scores.len() / 2];
            assert!(
                scores[0] > 3.0 * median,
                "top {} median {}",
                scores[0],
                median
            );
        }
        // ~3 documents per topic here: most queries' best match is one of them.
        assert!(top_is_relevant >= 15, "{top_is_relevant} of 20");
    }

    #[test]
    fn formats() {
        let mut b = Vec::new();
        for q in [1640, 10_000, 5, 12_345, 30_000, 1] {
            push_weight(&mut b, q);
            b.push(b' ');
        }
        assert_eq!(b, b"0.164 1.0 0.0005 1.2345 3.0 0.0001 ");
        let h = npy_header("<f2", &[3, 128]);
        assert_eq!(h.len() % 64, 0);
        assert!(h.ends_with(b"\n"));
        let bad = [
            SynthConfig {
                dim: Some(0),
                ..small(1)
            },
            SynthConfig {
                tokens_per_doc: 0,
                ..small(1)
            },
            SynthConfig {
                query_tokens: usize::MAX,
                ..small(1)
            },
        ];
        for config in bad {
            assert!(generate(&config, Path::new("/nonexistent"), &|_| {}).is_err());
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = generate(&small(1), &file.join("sub"), &|_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("file/sub"), "{err:#}");
    }
}
