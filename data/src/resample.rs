//! A realistic synthetic corpus of any size, resampled from a real encoded one: every
//! generated document (query) is a perturbed copy of a source document (query), so the
//! source's term popularity, lengths, weight shapes and topical clustering carry over —
//! including its near-duplicates, as a large crawl has them.
//!
//! # Input (the eval-set layout)
//!
//! `docs.jsonl` and `queries.jsonl` (Seismic-style records, see [`crate::jsonl`]),
//! `vocab.txt` (one term per line; every term of the records must be in it) and
//! `qrels.trec` (`qid iter docid rel`; judgments naming an unknown query or document and
//! grades ≤ 0 are ignored); with [`ResampleConfig::token_vectors`] also `doc_vectors.npy`,
//! `doc_lens.npy`, `query_vectors.npy` and `query_lens.npy` (float32, float16, or int8 read
//! as int8 / 127; lengths one per record, in record order).
//!
//! # Output
//!
//! The layout of [`crate::synth`]: `vocab.txt` (copied from the source), `docs.jsonl`
//! (`{"id": "d0000000", "vector": {"term": 0.1234, ...}}`, terms in ascending token id
//! order, weights in 1e-4 steps and ≥ 0.0001), `queries.jsonl` (ids `q000000`, same
//! format) and `qrels.trec` (`qid 0 docid rel`); with token vectors `doc_vectors.npy`
//! (`<f2`, `[total_doc_tokens, D]`, `D` the source's), `doc_lens.npy` (`<u4`),
//! `query_vectors.npy` (`<f4`) and `query_lens.npy` (`<u4`), unit-norm rows.
//!
//! # Model
//!
//! Source weights are read in 1e-4 units. From the source documents the generator derives
//! document frequencies `df(t)` (over `N` documents) and, for each source document and
//! query, its [`KEY_TERMS`] *key terms*: the terms of largest `w · ln((N + 1) / df)`
//! (ties by token id); `key_docs(t)` lists the source documents having `t` as a key term.
//!
//! Parents: the generated documents take their parents from the non-empty source documents
//! in successive seeded permutations (item `i` of cycle `c` is the `i`-th of the `c`-th
//! shuffle), so every source document has `⌊docs / N⌋` or one more children; queries
//! likewise from the non-empty source queries.
//!
//! A child of parent `P` (terms `P.t` with weights `P.w`):
//! 1. drop fraction `f ~ Uniform[0.10, 0.30)` for documents (`[0.05, 0.20)` for queries);
//!    each term of `P` is dropped with probability `f`, the others kept with weight
//!    `w · e^{σz}`, `z ~ N(0, 1)`, `σ = 0.2` (queries `0.15`);
//! 2. each dropped term is replaced, so lengths are kept: with probability 0.7 by a
//!    *topical* term — a term, not already present, of a sibling `S`: a source document
//!    having one of `P`'s key terms (chosen uniformly) as a key term (chosen uniformly from
//!    `key_docs`, not `P` itself when another exists), weight `S.w · e^{σz}` — otherwise
//!    (or when no sibling term is free) by a *background* term: a uniformly chosen posting
//!    of the source documents (of the source queries, for queries), that is a term drawn
//!    by document frequency, with its own weight `· e^{σz}`;
//! 3. with a length target `T` (`doc_terms` / `query_terms`, e.g. the short shape: 100 and
//!    20), the child is cut to its `round(T · e^{0.25z})` (at least 1) heaviest terms after
//!    the noise above; a child already shorter is kept whole;
//! 4. while a child equals a source document or query (same terms and same weights; found by
//!    a 64-bit hash, so a rare collision also counts), its first weight is raised by 1e-4,
//!    so no generated item is an exact copy of a source item.
//!
//! Uniform drops plus df-proportional replacements keep the expected document frequency of
//! every term; sibling replacements keep documents inside their parent's topical cluster,
//! and the children of one parent are near-duplicates of each other.
//!
//! Token vectors: a child keeps each of its parent's token vectors with probability 0.9 (the
//! first one when none would be kept), in order, each moved to
//! `normalize(x + (0.15 / √D) · N(0, I_D))` (cosine ≈ 0.99 with the original), from its own
//! generator, so the sparse files do not depend on whether vectors are written.
//!
//! Qrels: generated query `q` (parent `Q`) is relevant, with the source grade, to every
//! generated document whose parent is judged relevant to `Q` in the source, so quality
//! measures keep their meaning.
//!
//! # Determinism
//!
//! As in [`crate::synth`]: every draw comes from a `Xoshiro256++` generator seeded from
//! `(seed, stream, index)` through SplitMix64 — one for the document parents, one for the
//! query parents, and one per generated document or query (another for its token
//! vectors). Items are generated in parallel in fixed-size batches and written in order, so
//! output is byte-identical for the same seed and source whatever the thread count, and
//! memory is the source plus 12 bytes per generated document plus one batch.

use crate::jsonl::parse_line;
use crate::npy::{npy_header, row_offsets, NpyArray, NpyDType};
use crate::synth::{mix64, normal, push_padded, push_weight, stream_rng, Sink};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::f16;
use rand::{Rng, RngExt};
use rayon::prelude::*;

/// Key terms per source document or query (see the module docs).
pub const KEY_TERMS: usize = 8;
/// Document length target of the short-document shape.
pub const SHORT_DOC_TERMS: usize = 100;
/// Query length target of the short-document shape.
pub const SHORT_QUERY_TERMS: usize = 20;

const WEIGHT_SCALE: f64 = 10_000.0;
/// Largest weight accepted from the source (keeps 1e-4 units inside `u32`).
const MAX_SOURCE_WEIGHT: f64 = 100_000.0;
const TOPICAL_PROB: f64 = 0.7;
const TARGET_SIGMA: f64 = 0.25;
const SIBLING_TRIES: usize = 4;
const TERM_TRIES: usize = 16;

/// Items per parallel work unit (fewer with token vectors) and work units per written batch:
/// fixed, so batches do not depend on the thread count (nor does the output on batches).
const CHUNK_ITEMS: usize = 256;
const CHUNK_ITEMS_WITH_VECTORS: usize = 32;
const BATCH_CHUNKS: usize = 32;

// Independent random streams (distinct from `synth`'s).
const STREAM_DOC_PARENTS: u64 = 101;
const STREAM_QUERY_PARENTS: u64 = 102;
const STREAM_DOCS: u64 = 103;
const STREAM_QUERIES: u64 = 104;
const STREAM_DOC_TOKENS: u64 = 105;
const STREAM_QUERY_TOKENS: u64 = 106;

const TOKEN_KEEP: f64 = 0.9;
const TOKEN_NOISE_NORM: f64 = 0.15;

/// What to generate from a source eval set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResampleConfig {
    /// Number of documents.
    pub docs: usize,
    /// Number of queries.
    pub queries: usize,
    /// Seed for every random draw; the same seed and source give byte-identical files.
    pub seed: u64,
    /// Mean terms per document after cutting to the heaviest ones; `None` keeps the source
    /// lengths.
    pub doc_terms: Option<usize>,
    /// Mean terms per query after cutting to the heaviest ones; `None` keeps the source
    /// lengths.
    pub query_terms: Option<usize>,
    /// Also write token vectors, derived from the source's (which must have them).
    pub token_vectors: bool,
}

/// Counts of what [`resample`] read and wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResampleSummary {
    /// Documents written.
    pub docs: usize,
    /// Queries written.
    pub queries: usize,
    /// Total (document, term) postings in `docs.jsonl`.
    pub postings: u64,
    /// Total (query, term) pairs in `queries.jsonl`.
    pub query_postings: u64,
    /// Lines of `qrels.trec`.
    pub judgments: u64,
    /// Rows of `doc_vectors.npy` (0 without token vectors).
    pub doc_tokens: u64,
    /// Rows of `query_vectors.npy` (0 without token vectors).
    pub query_tokens: u64,
    /// Mean terms per source document.
    pub source_doc_terms: f64,
    /// Mean terms per source query.
    pub source_query_terms: f64,
}

/// Generates the corpus described by `config` from the eval set in `source` into the
/// directory `out` (created if missing; existing files are overwritten), calling `progress`
/// with the number of documents written so far after each batch. See the module docs for
/// the model.
pub fn resample(
    config: &ResampleConfig,
    source: &Path,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<ResampleSummary> {
    for (name, value) in [
        ("doc_terms", config.doc_terms),
        ("query_terms", config.query_terms),
    ] {
        if value == Some(0) {
            bail!("resampled corpus: {name} must be at least 1");
        }
    }
    let src = Source::load(source)?;
    let tokens = if config.token_vectors {
        let docs = Tokens::load(source, "doc_vectors.npy", "doc_lens.npy", &src.docs)?;
        let queries = Tokens::load(source, "query_vectors.npy", "query_lens.npy", &src.queries)?;
        if docs.dim != queries.dim {
            bail!(
                "{}: dimension {} differs from {}'s {}",
                queries.array.path().display(),
                queries.dim,
                docs.array.path().display(),
                docs.dim
            );
        }
        Some((docs, queries))
    } else {
        None
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating output directory {}", out.display()))?;
    let vocab_out = out.join("vocab.txt");
    std::fs::write(&vocab_out, &src.vocab_text)
        .with_context(|| format!("writing {}", vocab_out.display()))?;

    let doc_parents = parents(config.seed, STREAM_DOC_PARENTS, &src.docs, config.docs)?;
    let query_parents = parents(
        config.seed,
        STREAM_QUERY_PARENTS,
        &src.queries,
        config.queries,
    )?;
    let doc_kind = Kind {
        items: &src.docs,
        parents: &doc_parents,
        pool: &src.docs.terms,
        drop: (0.10, 0.30),
        sigma: 0.2,
        target: config.doc_terms,
        avoid_parent_as_sibling: true,
        stream: STREAM_DOCS,
        prefix: b'd',
        id_width: 7,
        file: "docs.jsonl",
        tokens: tokens.as_ref().map(|t| &t.0),
        tokens_stream: STREAM_DOC_TOKENS,
        half: true,
        vectors_file: "doc_vectors.npy",
        lens_file: "doc_lens.npy",
    };
    let query_kind = Kind {
        items: &src.queries,
        parents: &query_parents,
        pool: &src.queries.terms,
        drop: (0.05, 0.20),
        sigma: 0.15,
        target: config.query_terms,
        avoid_parent_as_sibling: false,
        stream: STREAM_QUERIES,
        prefix: b'q',
        id_width: 6,
        file: "queries.jsonl",
        tokens: tokens.as_ref().map(|t| &t.1),
        tokens_stream: STREAM_QUERY_TOKENS,
        half: false,
        vectors_file: "query_vectors.npy",
        lens_file: "query_lens.npy",
    };
    let (postings, doc_tokens) = src.write_items(&doc_kind, config.seed, out, progress)?;
    let (query_postings, query_tokens) = src.write_items(&query_kind, config.seed, out, &|_| {})?;
    let judgments = src.write_qrels(&doc_parents, &query_parents, &out.join("qrels.trec"))?;
    Ok(ResampleSummary {
        docs: config.docs,
        queries: config.queries,
        postings,
        query_postings,
        judgments,
        doc_tokens,
        query_tokens,
        source_doc_terms: src.docs.mean_terms(),
        source_query_terms: src.queries.mean_terms(),
    })
}

/// Source documents or queries: sparse vectors in token ids and 1e-4 weight units.
struct Items {
    /// Every item's `(term id, weight)` pairs, sorted by term id, concatenated.
    terms: Vec<(u32, u32)>,
    /// Item `i` is `terms[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    /// Source ids, in file order.
    ids: Vec<String>,
    /// Each item's key terms (see the module docs), `KEY_TERMS` or fewer per item.
    keys: Vec<Vec<u32>>,
    /// The file the items came from (for errors).
    path: PathBuf,
}

impl Items {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn get(&self, i: usize) -> &[(u32, u32)] {
        &self.terms[self.offsets[i]..self.offsets[i + 1]]
    }

    fn mean_terms(&self) -> f64 {
        self.terms.len() as f64 / self.len().max(1) as f64
    }

    /// Reads a JSONL file, mapping terms through `vocab`.
    fn load(path: &Path, vocab: &HashMap<&str, u32>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
        let mut items = Items {
            terms: Vec::new(),
            offsets: vec![0],
            ids: Vec::new(),
            keys: Vec::new(),
            path: path.to_path_buf(),
        };
        for (n, text) in text.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line = n + 1;
            let record = parse_line(text, &|| format!("{}:{line}", path.display()))?;
            let start = items.terms.len();
            for (term, weight) in &record.terms {
                let Some(&id) = vocab.get(term.as_str()) else {
                    bail!(
                        "{}:{line}: term {term:?} of record {:?} is not in vocab.txt",
                        path.display(),
                        record.id
                    );
                };
                let units = (f64::from(*weight) * WEIGHT_SCALE).round();
                if units > MAX_SOURCE_WEIGHT * WEIGHT_SCALE {
                    bail!(
                        "{}:{line}: weight {weight} of term {term:?} is above {MAX_SOURCE_WEIGHT}",
                        path.display()
                    );
                }
                items.terms.push((id, (units as u32).max(1)));
            }
            items.terms[start..].sort_unstable_by_key(|&(t, _)| t);
            items.offsets.push(items.terms.len());
            items.ids.push(record.id);
        }
        Ok(items)
    }

    /// Fills `keys` using document frequencies `df` over `n` documents.
    fn set_keys(&mut self, df: &[u32], n: usize) {
        self.keys = (0..self.len())
            .map(|i| {
                let mut scored: Vec<(f64, u32)> = self
                    .get(i)
                    .iter()
                    .map(|&(t, w)| {
                        let idf = ((n + 1) as f64 / f64::from(df[t as usize].max(1))).ln();
                        (f64::from(w) * idf, t)
                    })
                    .collect();
                scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.iter().take(KEY_TERMS).map(|&(_, t)| t).collect()
            })
            .collect();
    }
}

/// The source eval set, in memory.
struct Source {
    vocab_text: Vec<u8>,
    /// Each term as a JSON string (quoted, escaped), by token id.
    json_terms: Vec<Vec<u8>>,
    docs: Items,
    queries: Items,
    /// Source documents having each term as a key term, by token id.
    key_docs: Vec<Vec<u32>>,
    /// Per source query: `(source document, grade)` of its positive judgments.
    qrels: Vec<Vec<(u32, i64)>>,
    /// [`item_hash`] of every source document and query.
    originals: HashSet<u64>,
}

impl Source {
    fn load(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.txt");
        let vocab_text =
            std::fs::read(&vocab_path).map_err(|e| crate::Error::io(&vocab_path, e))?;
        let vocab_str = std::str::from_utf8(&vocab_text)
            .with_context(|| format!("{}: not UTF-8", vocab_path.display()))?;
        let terms: Vec<&str> = vocab_str.lines().collect();
        if terms.is_empty() || terms.len() > u32::MAX as usize {
            bail!("{}: {} terms", vocab_path.display(), terms.len());
        }
        let mut vocab = HashMap::with_capacity(terms.len());
        for (i, &term) in terms.iter().enumerate() {
            vocab.entry(term).or_insert(i as u32);
        }
        let json_terms = terms
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<_, _>>()
            .context("encoding vocabulary terms")?;

        let mut docs = Items::load(&dir.join("docs.jsonl"), &vocab)?;
        let mut queries = Items::load(&dir.join("queries.jsonl"), &vocab)?;
        let mut df = vec![0u32; terms.len()];
        for &(t, _) in &docs.terms {
            df[t as usize] += 1;
        }
        docs.set_keys(&df, docs.len());
        queries.set_keys(&df, docs.len());
        let mut key_docs = vec![Vec::new(); terms.len()];
        for (d, keys) in docs.keys.iter().enumerate() {
            for &t in keys {
                key_docs[t as usize].push(d as u32);
            }
        }
        let qrels = read_qrels(&dir.join("qrels.trec"), &docs, &queries)?;
        let originals = [&docs, &queries]
            .iter()
            .flat_map(|items| (0..items.len()).map(|i| item_hash(items.get(i))))
            .collect();
        Ok(Self {
            originals,
            vocab_text,
            json_terms,
            docs,
            queries,
            key_docs,
            qrels,
        })
    }

    /// Generates and writes all items of `kind`; returns the numbers of postings and of
    /// token vectors.
    fn write_items(
        &self,
        kind: &Kind,
        seed: u64,
        out: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<(u64, u64)> {
        let mut sink = Sink::create(out.join(kind.file))?;
        let count = kind.parents.len();
        let mut total_tokens = 0;
        let mut vectors = match kind.tokens {
            Some(tokens) => {
                // Lengths first (the first draws of each item's token generator), so the
                // NPY shape is known.
                let lens: Vec<u32> = (0..count)
                    .into_par_iter()
                    .map(|i| {
                        let mut rng = stream_rng(seed, kind.tokens_stream, i as u64);
                        let parent = kind.parents[i] as usize;
                        kept_tokens(&mut rng, tokens.len(parent)).len() as u32
                    })
                    .collect();
                total_tokens = lens.iter().map(|&l| u64::from(l)).sum();
                let mut lens_sink = Sink::create(out.join(kind.lens_file))?;
                lens_sink.write(&npy_header("<u4", &[count as u64]))?;
                let bytes: Vec<u8> = lens.iter().flat_map(|l| l.to_le_bytes()).collect();
                lens_sink.write(&bytes)?;
                lens_sink.finish()?;
                let descr = if kind.half { "<f2" } else { "<f4" };
                let mut v = Sink::create(out.join(kind.vectors_file))?;
                v.write(&npy_header(descr, &[total_tokens, tokens.dim as u64]))?;
                Some(v)
            }
            None => None,
        };
        let chunk = match kind.tokens {
            Some(_) => CHUNK_ITEMS_WITH_VECTORS,
            None => CHUNK_ITEMS,
        };
        let batch = chunk * BATCH_CHUNKS;
        let mut postings = 0;
        for start in (0..count).step_by(batch) {
            let end = (start + batch).min(count);
            let chunks: Vec<ChunkOut> = (start..end)
                .step_by(chunk)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|from| self.chunk(kind, seed, from..(from + chunk).min(end)))
                .collect::<Result<_>>()?;
            for c in chunks {
                sink.write(&c.json)?;
                if let Some(v) = vectors.as_mut() {
                    v.write(&c.vectors)?;
                }
                postings += c.postings;
            }
            progress(end as u64);
        }
        sink.finish()?;
        if let Some(v) = vectors {
            v.finish()?;
        }
        Ok((postings, total_tokens))
    }

    /// JSON lines and token vectors of items `range` of `kind`.
    fn chunk(&self, kind: &Kind, seed: u64, range: std::ops::Range<usize>) -> Result<ChunkOut> {
        let mut json = Vec::with_capacity(range.len() * 24 * 64);
        let mut vectors = Vec::new();
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut postings = 0;
        let mut seen = vec![false; self.json_terms.len()];
        let mut terms = Vec::new();
        for i in range {
            let mut rng = stream_rng(seed, kind.stream, i as u64);
            self.derive(
                kind,
                kind.parents[i] as usize,
                &mut rng,
                &mut seen,
                &mut terms,
            );
            json.extend_from_slice(b"{\"id\": \"");
            json.push(kind.prefix);
            push_padded(&mut json, i as u64, kind.id_width);
            json.extend_from_slice(b"\", \"vector\": {");
            for (k, &(term, weight)) in terms.iter().enumerate() {
                if k > 0 {
                    json.extend_from_slice(b", ");
                }
                json.extend_from_slice(&self.json_terms[term as usize]);
                json.extend_from_slice(b": ");
                push_weight(&mut json, weight);
            }
            json.extend_from_slice(b"}}\n");
            postings += terms.len() as u64;
            if let Some(tokens) = kind.tokens {
                let mut rng = stream_rng(seed, kind.tokens_stream, i as u64);
                let parent = kind.parents[i] as usize;
                let kept = kept_tokens(&mut rng, tokens.len(parent));
                tokens.read(parent, &mut rows)?;
                let sigma = TOKEN_NOISE_NORM / (tokens.dim as f64).sqrt();
                for &t in &kept {
                    row.clear();
                    row.extend(
                        rows[t * tokens.dim..(t + 1) * tokens.dim]
                            .iter()
                            .map(|&x| x + (sigma * normal(&mut rng)) as f32),
                    );
                    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    let inv = 1.0 / norm.max(f32::MIN_POSITIVE);
                    row.iter_mut().for_each(|x| *x *= inv);
                    if kind.half {
                        vectors.extend(row.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()));
                    } else {
                        vectors.extend(row.iter().flat_map(|x| x.to_le_bytes()));
                    }
                }
            }
        }
        Ok(ChunkOut {
            json,
            vectors,
            postings,
        })
    }

    /// Derives one child of source item `parent` of `kind` into `out` (sorted by term id);
    /// `seen` is all false on entry and on return.
    fn derive(
        &self,
        kind: &Kind,
        parent: usize,
        rng: &mut impl Rng,
        seen: &mut [bool],
        out: &mut Vec<(u32, u32)>,
    ) {
        out.clear();
        let source = kind.items.get(parent);
        let drop = rng.random_range(kind.drop.0..kind.drop.1);
        let mut dropped = 0;
        for &(t, w) in source {
            if rng.random::<f64>() < drop {
                dropped += 1;
            } else {
                out.push((t, noisy(rng, kind.sigma, w)));
                seen[t as usize] = true;
            }
        }
        // Dropped terms only leave room for new ones; mark them so none comes straight back.
        for &(t, _) in source {
            seen[t as usize] = true;
        }

        let keys = &kind.items.keys[parent];
        for _ in 0..dropped {
            let mut added = false;
            if !keys.is_empty() && rng.random::<f64>() < TOPICAL_PROB {
                if let Some(sibling) = self.sibling(kind, parent, keys, rng) {
                    let terms = self.docs.get(sibling);
                    for _ in 0..TERM_TRIES {
                        let (t, w) = terms[rng.random_range(0..terms.len())];
                        if !seen[t as usize] {
                            seen[t as usize] = true;
                            out.push((t, noisy(rng, kind.sigma, w)));
                            added = true;
                            break;
                        }
                    }
                }
            }
            if !added && !kind.pool.is_empty() {
                for _ in 0..TERM_TRIES {
                    let (t, w) = kind.pool[rng.random_range(0..kind.pool.len())];
                    if !seen[t as usize] {
                        seen[t as usize] = true;
                        out.push((t, noisy(rng, kind.sigma, w)));
                        break;
                    }
                }
            }
        }
        for &(t, _) in out.iter().chain(source) {
            seen[t as usize] = false;
        }

        if out.is_empty() {
            // Nothing kept and nothing free to add: keep the parent's heaviest term.
            if let Some(&(t, w)) = source
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            {
                out.push((t, noisy(rng, kind.sigma, w)));
            }
        }
        if let Some(target) = kind.target {
            // Log-normal around the target with mean `target`.
            let z = TARGET_SIGMA * normal(rng) - TARGET_SIGMA * TARGET_SIGMA / 2.0;
            let n = ((target as f64 * z.exp()).round() as usize).max(1);
            if out.len() > n {
                out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                out.truncate(n);
            }
        }
        out.sort_unstable_by_key(|&(t, _)| t);
        while self.originals.contains(&item_hash(out)) {
            match out.first_mut() {
                Some(first) => first.1 += 1,
                None => break,
            }
        }
    }

    /// A source document sharing one of `keys` as a key term, other than `parent` (for
    /// documents) when one exists.
    fn sibling(
        &self,
        kind: &Kind,
        parent: usize,
        keys: &[u32],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        let mut found = None;
        for _ in 0..SIBLING_TRIES {
            let list = &self.key_docs[keys[rng.random_range(0..keys.len())] as usize];
            if list.is_empty() {
                continue;
            }
            let d = list[rng.random_range(0..list.len())] as usize;
            found = Some(d);
            if !(kind.avoid_parent_as_sibling && d == parent) {
                break;
            }
        }
        found
    }

    /// Writes `qrels.trec`; returns the number of lines.
    fn write_qrels(&self, doc_parents: &[u32], query_parents: &[u32], path: &Path) -> Result<u64> {
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); self.docs.len()];
        for (d, &p) in doc_parents.iter().enumerate() {
            children[p as usize].push(d as u32);
        }
        let mut sink = Sink::create(path.to_path_buf())?;
        let mut lines = 0;
        let mut judged: Vec<(u32, i64)> = Vec::new();
        let mut buf = Vec::new();
        for (q, &parent) in query_parents.iter().enumerate() {
            judged.clear();
            for &(doc, grade) in &self.qrels[parent as usize] {
                judged.extend(children[doc as usize].iter().map(|&d| (d, grade)));
            }
            judged.sort_unstable();
            buf.clear();
            for &(d, grade) in &judged {
                buf.push(b'q');
                push_padded(&mut buf, q as u64, 6);
                buf.extend_from_slice(b" 0 d");
                push_padded(&mut buf, u64::from(d), 7);
                buf.extend_from_slice(format!(" {grade}\n").as_bytes());
            }
            lines += judged.len() as u64;
            sink.write(&buf)?;
        }
        sink.finish()?;
        Ok(lines)
    }
}

/// Output of one parallel work unit.
struct ChunkOut {
    json: Vec<u8>,
    vectors: Vec<u8>,
    postings: u64,
}

/// A source's token vectors of one kind.
struct Tokens {
    array: NpyArray,
    /// Record `i`'s rows are `offsets[i]..offsets[i + 1]`.
    offsets: Vec<u64>,
    dim: usize,
    /// `Some(1 / 127)` for int8 vectors.
    scale: Option<f32>,
}

impl Tokens {
    /// Opens `vectors` and `lens` in `dir`; `items` are the records they belong to.
    fn load(dir: &Path, vectors: &str, lens: &str, items: &Items) -> Result<Self> {
        let lens_path = dir.join(lens);
        let counts = NpyArray::open(&lens_path)?.to_u64_vec()?;
        if counts.len() != items.len() {
            bail!(
                "{}: {} lengths for the {} records of {}",
                lens_path.display(),
                counts.len(),
                items.len(),
                items.path.display()
            );
        }
        if let Some(i) = counts.iter().position(|&c| c > u64::from(u32::MAX)) {
            bail!("{}: row {i}: {} tokens", lens_path.display(), counts[i]);
        }
        let offsets = row_offsets(&counts, &lens_path)?;
        let array = NpyArray::open(&dir.join(vectors))?;
        let (rows, dim) = array.matrix_shape()?;
        let scale = match array.dtype() {
            NpyDType::F32 | NpyDType::F16 => None,
            NpyDType::I8 => Some(1.0 / 127.0),
            other => bail!(
                "{}: {} token vectors are not supported (float32, float16 or int8)",
                array.path().display(),
                other.name()
            ),
        };
        if offsets.last() != Some(&(rows as u64)) {
            bail!(
                "{}: {rows} rows, but {} counts {} tokens",
                array.path().display(),
                lens_path.display(),
                offsets.last().copied().unwrap_or(0)
            );
        }
        Ok(Self {
            array,
            offsets,
            dim,
            scale,
        })
    }

    /// Token count of record `i`.
    fn len(&self, i: usize) -> usize {
        (self.offsets[i + 1] - self.offsets[i]) as usize
    }

    /// Record `i`'s token vectors into `out`, row-major f32.
    fn read(&self, i: usize, out: &mut Vec<f32>) -> Result<()> {
        let rows = self.offsets[i] as usize..self.offsets[i + 1] as usize;
        Ok(self.array.rows_f32(rows, self.scale, out)?)
    }
}

/// The indices of a child's kept tokens out of its parent's `len`: each kept with
/// probability [`TOKEN_KEEP`], the first when none would be (none of none).
fn kept_tokens(rng: &mut impl Rng, len: usize) -> Vec<usize> {
    let mut kept: Vec<usize> = (0..len)
        .filter(|_| rng.random::<f64>() < TOKEN_KEEP)
        .collect();
    if kept.is_empty() && len > 0 {
        kept.push(0);
    }
    kept
}

/// Documents or queries: what differs between the two.
struct Kind<'a> {
    items: &'a Items,
    /// The source parent of every item to generate.
    parents: &'a [u32],
    /// Postings drawn for background terms.
    pool: &'a [(u32, u32)],
    drop: (f64, f64),
    sigma: f64,
    target: Option<usize>,
    /// Siblings come from the same source (documents), so the parent itself is avoided.
    avoid_parent_as_sibling: bool,
    stream: u64,
    prefix: u8,
    id_width: usize,
    file: &'static str,
    /// The source's token vectors, when they are to be resampled.
    tokens: Option<&'a Tokens>,
    tokens_stream: u64,
    /// Token vectors written as f16 (documents) or f32 (queries).
    half: bool,
    vectors_file: &'static str,
    lens_file: &'static str,
}

/// A hash of an item's `(term, weight)` pairs.
fn item_hash(terms: &[(u32, u32)]) -> u64 {
    terms.iter().fold(terms.len() as u64, |h, &(t, w)| {
        mix64(h ^ (u64::from(t) << 32 | u64::from(w)))
    })
}

/// `w · e^{σz}`, `z ~ N(0, 1)`, in 1e-4 units and at least 1.
fn noisy(rng: &mut impl Rng, sigma: f64, w: u32) -> u32 {
    ((f64::from(w) * (sigma * normal(rng)).exp()).round() as u32).max(1)
}

/// The parents of `count` generated items: successive seeded permutations of the non-empty
/// source items.
fn parents(seed: u64, stream: u64, items: &Items, count: usize) -> Result<Vec<u32>> {
    let mut perm: Vec<u32> = (0..items.len())
        .filter(|&i| !items.get(i).is_empty())
        .map(|i| i as u32)
        .collect();
    if perm.is_empty() && count > 0 {
        bail!("{}: no record with terms to resample", items.path.display());
    }
    let mut rng = stream_rng(seed, stream, 0);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        for i in (1..perm.len()).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        out.extend(perm.iter().take(count - out.len()));
    }
    Ok(out)
}

/// Reads TREC qrels into per-query positive judgments (unknown ids and grades ≤ 0 skipped).
fn read_qrels(path: &Path, docs: &Items, queries: &Items) -> Result<Vec<Vec<(u32, i64)>>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let doc_index: HashMap<&str, u32> = docs
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let query_index: HashMap<&str, usize> = queries
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut qrels = vec![Vec::new(); queries.len()];
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [qid, _, docid, grade] = fields[..] else {
            bail!(
                "{}:{}: expected `qid iter docid rel`, got {} fields",
                path.display(),
                n + 1,
                fields.len()
            );
        };
        let grade: i64 = grade.parse().with_context(|| {
            format!(
                "{}:{}: rel {grade:?} is not an integer",
                path.display(),
                n + 1
            )
        })?;
        if let (Some(&q), Some(&d), true) = (query_index.get(qid), doc_index.get(docid), grade > 0)
        {
            qrels[q].push((d, grade));
        }
    }
    Ok(qrels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{generate, SynthConfig};
    use std::collections::{HashMap, HashSet};

    /// A small SPLADE-like source eval set, written by the synthetic generator.
    fn source() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            docs: 600,
            queries: 40,
            seed: 3,
            dim: Some(16),
            tokens_per_doc: 8,
            query_tokens: 5,
        };
        generate(&config, dir.path(), &|_| {}).unwrap();
        dir
    }

    fn config(docs: usize, queries: usize, seed: u64) -> ResampleConfig {
        ResampleConfig {
            docs,
            queries,
            seed,
            doc_terms: None,
            query_terms: None,
            token_vectors: false,
        }
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Each line's `(id, terms with weights as printed)`.
    fn records(dir: &Path, name: &str) -> Vec<(String, Vec<(String, String)>)> {
        String::from_utf8(read(dir, name))
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let mut terms: Vec<(String, String)> = v["vector"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(t, w)| (t.clone(), w.to_string()))
                    .collect();
                terms.sort();
                (v["id"].to_string(), terms)
            })
            .collect()
    }

    #[test]
    fn deterministic_and_thread_independent() {
        let src = source();
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        // More documents than one batch, so batching is exercised.
        let cfg = ResampleConfig {
            token_vectors: true,
            ..config(CHUNK_ITEMS * BATCH_CHUNKS + 700, 90, 7)
        };
        let sa = pool(1)
            .install(|| resample(&cfg, src.path(), a.path(), &|_| {}))
            .unwrap();
        let sb = pool(3)
            .install(|| resample(&cfg, src.path(), b.path(), &|_| {}))
            .unwrap();
        assert_eq!(sa, sb);
        for name in ["vocab.txt", "docs.jsonl", "queries.jsonl", "qrels.trec"]
            .into_iter()
            .chain(VECTOR_FILES)
        {
            assert!(
                read(a.path(), name) == read(b.path(), name),
                "{name} differs"
            );
        }
        assert_eq!(read(a.path(), "vocab.txt"), read(src.path(), "vocab.txt"));
        resample(
            &config(CHUNK_ITEMS * BATCH_CHUNKS + 700, 90, 8),
            src.path(),
            c.path(),
            &|_| {},
        )
        .unwrap();
        assert!(read(a.path(), "docs.jsonl") != read(c.path(), "docs.jsonl"));
        assert!(read(a.path(), "queries.jsonl") != read(c.path(), "queries.jsonl"));
    }

    const VECTOR_FILES: [&str; 4] = [
        "doc_vectors.npy",
        "doc_lens.npy",
        "query_vectors.npy",
        "query_lens.npy",
    ];

    /// An NPY file's shape and data (v1.0 header, as written here and by `synth`).
    fn npy(dir: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
        let bytes = read(dir, name);
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
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
        (shape, bytes[10 + hlen..].to_vec())
    }

    /// Each record's token vectors, from a vectors file (f16 or f32) and its lengths.
    fn token_rows(dir: &Path, vectors: &str, lens: &str) -> Vec<Vec<Vec<f32>>> {
        let (_, data) = npy(dir, lens);
        let lens: Vec<usize> = data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        let (shape, data) = npy(dir, vectors);
        let dim = shape[1];
        let elem = data.len() / (shape[0] * dim);
        let values: Vec<f32> = data
            .chunks_exact(elem)
            .map(|c| match elem {
                2 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
                _ => f32::from_le_bytes(c.try_into().unwrap()),
            })
            .collect();
        assert_eq!(shape[0], lens.iter().sum::<usize>());
        let mut rows = values.chunks_exact(dim).map(<[f32]>::to_vec);
        lens.iter()
            .map(|&l| rows.by_ref().take(l).collect())
            .collect()
    }

    #[test]
    fn token_vectors_follow_the_parents() {
        let src = source();
        let (with, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cfg = ResampleConfig {
            token_vectors: true,
            ..config(1_500, 60, 6)
        };
        let s = resample(&cfg, src.path(), with.path(), &|_| {}).unwrap();
        resample(&config(1_500, 60, 6), src.path(), without.path(), &|_| {}).unwrap();
        for name in ["docs.jsonl", "queries.jsonl", "qrels.trec"] {
            assert!(
                read(with.path(), name) == read(without.path(), name),
                "{name} differs"
            );
        }
        assert!(!without.path().join("doc_vectors.npy").exists());

        let source = Source::load(src.path()).unwrap();
        for (vectors, lens, items, stream, count, rows) in [
            (
                "doc_vectors.npy",
                "doc_lens.npy",
                &source.docs,
                STREAM_DOC_PARENTS,
                1_500,
                s.doc_tokens,
            ),
            (
                "query_vectors.npy",
                "query_lens.npy",
                &source.queries,
                STREAM_QUERY_PARENTS,
                60,
                s.query_tokens,
            ),
        ] {
            let parents = parents(cfg.seed, stream, items, count).unwrap();
            let original = token_rows(src.path(), vectors, lens);
            let generated = token_rows(with.path(), vectors, lens);
            assert_eq!(generated.len(), count);
            assert_eq!(generated.iter().map(Vec::len).sum::<usize>() as u64, rows);
            let (mut kept, mut total) = (0, 0);
            for (child, &p) in generated.iter().zip(&parents) {
                let parent = &original[p as usize];
                assert!(!child.is_empty() && child.len() <= parent.len());
                (kept, total) = (kept + child.len(), total + parent.len());
                for row in child {
                    let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-2, "{vectors}: norm {norm}");
                    let best = parent
                        .iter()
                        .map(|r| r.iter().zip(row).map(|(a, b)| a * b).sum::<f32>())
                        .fold(f32::MIN, f32::max);
                    assert!(best > 0.95, "{vectors}: cosine with the parent {best}");
                }
            }
            let rate = kept as f64 / total as f64;
            assert!((rate - TOKEN_KEEP).abs() < 0.05, "{vectors}: kept {rate}");
        }

        // A source without token vectors says which file is missing.
        std::fs::remove_file(src.path().join("doc_lens.npy")).unwrap();
        let err = resample(&cfg, src.path(), with.path(), &|_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("doc_lens.npy: does not exist"),
            "{err:#}"
        );
    }

    #[test]
    fn no_exact_copies() {
        let src = source();
        let out = tempfile::tempdir().unwrap();
        resample(&config(3_000, 200, 1), src.path(), out.path(), &|_| {}).unwrap();
        for name in ["docs.jsonl", "queries.jsonl"] {
            let originals: HashSet<Vec<(String, String)>> =
                records(src.path(), name).into_iter().map(|r| r.1).collect();
            for (id, terms) in records(out.path(), name) {
                assert!(
                    !originals.contains(&terms),
                    "{name}: {id} copies a source item"
                );
            }
        }

        // One- and two-term records leave nothing to drop: copies must still be avoided.
        let tiny = tempfile::tempdir().unwrap();
        std::fs::write(tiny.path().join("vocab.txt"), "a\nb\n\"q\"\n").unwrap();
        std::fs::write(
            tiny.path().join("docs.jsonl"),
            "{\"id\": \"1\", \"vector\": {\"a\": 0.0001}}\n\n{\"id\": 2, \"vector\": {\"b\": 1.5, \"\\\"q\\\"\": 0.25}}\n",
        )
        .unwrap();
        std::fs::write(
            tiny.path().join("queries.jsonl"),
            "{\"id\": \"x\", \"vector\": {\"a\": 2.0}}\n",
        )
        .unwrap();
        std::fs::write(
            tiny.path().join("qrels.trec"),
            "x 0 2 1\nx 0 1 0\ny 0 1 1\n",
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let s = resample(&config(200, 50, 2), tiny.path(), out.path(), &|_| {}).unwrap();
        let originals: HashSet<Vec<(String, String)>> = records(tiny.path(), "docs.jsonl")
            .into_iter()
            .chain(records(tiny.path(), "queries.jsonl"))
            .map(|r| r.1)
            .collect();
        for name in ["docs.jsonl", "queries.jsonl"] {
            for (id, terms) in records(out.path(), name) {
                assert!(!terms.is_empty());
                assert!(!originals.contains(&terms), "{name}: {id} {terms:?}");
            }
        }
        // Only document "2" is relevant to "x", and half the documents descend from it.
        assert_eq!(s.judgments, 50 * 100);
    }

    /// Document frequency of every term in a JSONL file, normalised by the record count.
    fn df(dir: &Path, name: &str) -> (HashMap<String, f64>, f64) {
        let recs = records(dir, name);
        let mut df = HashMap::new();
        let mut postings = 0;
        for (_, terms) in &recs {
            postings += terms.len();
            for (t, _) in terms {
                *df.entry(t.clone()).or_insert(0.0) += 1.0 / recs.len() as f64;
            }
        }
        (df, postings as f64 / recs.len() as f64)
    }

    fn top(df: &HashMap<String, f64>, k: usize) -> HashSet<String> {
        let mut v: Vec<(&String, &f64)> = df.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(k).map(|(t, _)| t.clone()).collect()
    }

    #[test]
    fn statistics_follow_the_source() {
        let src = source();
        let out = tempfile::tempdir().unwrap();
        let s = resample(&config(6_000, 400, 4), src.path(), out.path(), &|_| {}).unwrap();
        let (src_df, src_len) = df(src.path(), "docs.jsonl");
        let (gen_df, gen_len) = df(out.path(), "docs.jsonl");
        assert!(
            (gen_len / src_len - 1.0).abs() < 0.03,
            "{gen_len} vs {src_len}"
        );
        assert!((s.postings as f64 / 6_000.0 - s.source_doc_terms).abs() < 0.03 * src_len);
        let overlap = top(&src_df, 200).intersection(&top(&gen_df, 200)).count();
        assert!(overlap >= 170, "top-200 df overlap {overlap}");
        let (_, src_q) = df(src.path(), "queries.jsonl");
        let (_, gen_q) = df(out.path(), "queries.jsonl");
        assert!((gen_q / src_q - 1.0).abs() < 0.05, "{gen_q} vs {src_q}");

        // Children stay near their parents: a generated document's nearest source document
        // (Jaccard over terms) is far closer than a typical one.
        let sources: Vec<HashSet<String>> = records(src.path(), "docs.jsonl")
            .into_iter()
            .map(|r| r.1.into_iter().map(|t| t.0).collect())
            .collect();
        for (_, terms) in records(out.path(), "docs.jsonl").into_iter().take(20) {
            let terms: HashSet<String> = terms.into_iter().map(|t| t.0).collect();
            let jaccard = |s: &HashSet<String>| {
                s.intersection(&terms).count() as f64 / s.union(&terms).count() as f64
            };
            let best = sources.iter().map(jaccard).fold(0.0, f64::max);
            assert!(best > 0.4, "nearest source Jaccard {best}");
        }

        // The short shape: ~100 terms per document, ~20 per query.
        let short = tempfile::tempdir().unwrap();
        let cfg = ResampleConfig {
            doc_terms: Some(SHORT_DOC_TERMS),
            query_terms: Some(SHORT_QUERY_TERMS),
            ..config(2_000, 400, 4)
        };
        resample(&cfg, src.path(), short.path(), &|_| {}).unwrap();
        let (_, d) = df(short.path(), "docs.jsonl");
        let (_, q) = df(short.path(), "queries.jsonl");
        assert!((d / 100.0 - 1.0).abs() < 0.1, "{d} terms per document");
        assert!((q / 20.0 - 1.0).abs() < 0.15, "{q} terms per query");
    }

    #[test]
    fn qrels_follow_the_parents() {
        let src = source();
        let out = tempfile::tempdir().unwrap();
        let cfg = config(2_500, 120, 5);
        let s = resample(&cfg, src.path(), out.path(), &|_| {}).unwrap();
        let source = Source::load(src.path()).unwrap();
        let docs = parents(cfg.seed, STREAM_DOC_PARENTS, &source.docs, cfg.docs).unwrap();
        let queries =
            parents(cfg.seed, STREAM_QUERY_PARENTS, &source.queries, cfg.queries).unwrap();
        // Every source document has ⌊2500 / 600⌋ or one more children.
        let mut counts = vec![0; source.docs.len()];
        docs.iter().for_each(|&p| counts[p as usize] += 1);
        assert!(counts.iter().all(|&c| c == 4 || c == 5), "{counts:?}");

        let source_qrels: HashSet<String> = String::from_utf8(read(src.path(), "qrels.trec"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let mut expected = HashSet::new();
        for (q, &qp) in queries.iter().enumerate() {
            for (d, &dp) in docs.iter().enumerate() {
                let line = format!(
                    "{} 0 {} 1",
                    source.queries.ids[qp as usize], source.docs.ids[dp as usize]
                );
                if source_qrels.contains(&line) {
                    expected.insert(format!("q{q:06} 0 d{d:07} 1"));
                }
            }
        }
        let text = String::from_utf8(read(out.path(), "qrels.trec")).unwrap();
        let got: HashSet<String> = text.lines().map(str::to_string).collect();
        assert_eq!(got.len() as u64, s.judgments);
        assert!(!got.is_empty());
        assert_eq!(got, expected);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let src = source();
        let out = tempfile::tempdir().unwrap();
        let missing = resample(
            &config(10, 1, 0),
            &src.path().join("nope"),
            out.path(),
            &|_| {},
        )
        .unwrap_err();
        assert!(
            format!("{missing:#}").contains("nope/vocab.txt: does not exist"),
            "{missing:#}"
        );

        let good = read(src.path(), "docs.jsonl");
        let mut docs = good.clone();
        docs.extend_from_slice(b"{\"id\": \"z\", \"vector\": {\"zzz\": 1.0}}\n");
        std::fs::write(src.path().join("docs.jsonl"), docs).unwrap();
        let err = resample(&config(10, 1, 0), src.path(), out.path(), &|_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("docs.jsonl:601: term \"zzz\""),
            "{err:#}"
        );

        std::fs::write(src.path().join("docs.jsonl"), good).unwrap();
        std::fs::write(src.path().join("qrels.trec"), "q000001 0 d0000002\n").unwrap();
        let err = resample(&config(10, 1, 0), src.path(), out.path(), &|_| {}).unwrap_err();
        assert!(
            format!("{err:#}").contains("qrels.trec:1: expected"),
            "{err:#}"
        );
        let short = ResampleConfig {
            doc_terms: Some(0),
            ..config(10, 1, 0)
        };
        assert!(resample(&short, src.path(), out.path(), &|_| {}).is_err());
    }
}
