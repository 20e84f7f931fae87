//! Explanations of hits checked against independent references, for every codec and with and
//! without the approximate first stage (whose forward index the sparse terms are then read
//! from): each hit's terms are exactly the query terms its JSONL vector holds, with their
//! weights; their contributions sum to the sparse score; each token match's score is the dot
//! product recomputed from the document's decoded vectors, its document token is the best one,
//! and the scores sum to the MaxSim score bit for bit (query order).

use std::collections::HashMap;
use std::path::Path;
use tandem_data::jsonl::parse_all;
use tandem_data::npy::{row_offsets, NpyArray};
use tandem_data::synth::{generate, SynthConfig};
use tandem_engine::approx::ApproxSettings;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::tokens::Codec;
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};

const DIM: usize = 32;

/// A query: its terms with weights, and its token vectors (`n × DIM`).
type TestQuery = (Vec<(String, f32)>, Vec<f32>);

/// A hit's terms as (term id, query weight, document weight).
type Terms = Vec<(u32, f32, f32)>;

/// Largest difference between a listed token score and its f64 recomputation from the decoded
/// vectors (the kernels sum `DIM` f32 products in another order), relative to the sum of the
/// products' magnitudes.
const DOT_TOLERANCE: f64 = 1e-5;

fn build(corpus: &Path, out: &Path, codec: Codec, approx: bool) -> Segment {
    let config = BuildConfig {
        docs: corpus.join("docs.jsonl"),
        vectors: corpus.join("doc_vectors.npy"),
        lens: corpus.join("doc_lens.npy"),
        int8_scale: None,
        vocab: Some(corpus.join("vocab.txt")),
        token_ids: false,
        out: out.to_path_buf(),
        overwrite: false,
        approx: approx.then(ApproxSettings::default),
        codec,
        doc_tokens: None,
    };
    build_index(&config, &NoProgress).unwrap();
    Segment::open(out).unwrap()
}

/// The corpus's documents as term → weight maps, by external id.
fn doc_vectors(corpus: &Path) -> HashMap<String, HashMap<String, f32>> {
    let text = std::fs::read_to_string(corpus.join("docs.jsonl")).unwrap();
    parse_all(&text, "docs.jsonl")
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.terms.into_iter().collect()))
        .collect()
}

/// The queries as (term strings with weights, token vectors).
fn queries(corpus: &Path) -> Vec<TestQuery> {
    let text = std::fs::read_to_string(corpus.join("queries.jsonl")).unwrap();
    let records = parse_all(&text, "queries.jsonl").unwrap();
    let lens_path = corpus.join("query_lens.npy");
    let lens = NpyArray::open(&lens_path).unwrap().to_u64_vec().unwrap();
    let offsets = row_offsets(&lens, &lens_path).unwrap();
    let vectors = NpyArray::open(&corpus.join("query_vectors.npy")).unwrap();
    records
        .into_iter()
        .zip(offsets.windows(2))
        .map(|(r, range)| {
            let mut values = Vec::new();
            vectors
                .rows_f32(range[0] as usize..range[1] as usize, None, &mut values)
                .unwrap();
            (r.terms, values)
        })
        .collect()
}

#[test]
fn explanations_match_recomputed_terms_and_dot_products() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let config = SynthConfig {
        docs: 600,
        queries: 12,
        seed: 5,
        dim: Some(DIM),
        tokens_per_doc: 20,
        query_tokens: 9,
    };
    generate(&config, &corpus, &|_| {}).unwrap();
    let docs = doc_vectors(&corpus);
    let queries = queries(&corpus);
    let mut checked = 0usize;
    for codec in [Codec::F16, Codec::Int8, Codec::Pq] {
        // Terms per (query, document) over both indexes: they must agree.
        let mut terms_seen: HashMap<(usize, String), Terms> = HashMap::new();
        for approx in [false, true] {
            let out = dir.path().join(format!("{}-{approx}", codec.name()));
            let index = build(&corpus, &out, codec, approx);
            assert_eq!(index.approx().is_some(), approx);
            for (q, (terms, values)) in queries.iter().enumerate() {
                let (resolved, _) =
                    index.resolve_terms(terms.iter().map(|(t, w)| (t.as_str(), *w)));
                let query = Query {
                    terms: resolved,
                    vectors: Some(QueryVectors {
                        values: values.clone(),
                        dim: DIM,
                    }),
                    filter: Default::default(),
                };
                let params = SearchParams {
                    first_stage: FirstStage::Exact,
                    k: 8,
                    kappa: 20,
                    cp_alpha: None,
                    ee_beta: None,
                    rerank: true,
                    prefetch: false,
                    explain: true,
                    fusion: tandem_engine::Fusion::NONE,
                };
                let found = index.search(&query, &params, &Limits::default()).unwrap();
                let plain = index
                    .search(
                        &query,
                        &SearchParams {
                            explain: false,
                            ..params
                        },
                        &Limits::default(),
                    )
                    .unwrap();
                assert_eq!(found.hits, plain.hits, "explain changes no hit");
                assert!(plain.explanations.is_empty());
                assert_eq!(found.explanations.len(), found.hits.len());
                assert!(!found.hits.is_empty());
                for (hit, e) in found.hits.iter().zip(&found.explanations) {
                    let id = index.external_id(hit.doc).unwrap().to_string();
                    let what = format!("{} approx={approx} query {q} doc {id}", codec.name());

                    // Terms: the query terms the document's JSONL vector holds.
                    let vector = &docs[&id];
                    let mut expected: Terms = terms
                        .iter()
                        .filter(|(_, w)| *w > 0.0)
                        .filter_map(|(t, w)| Some((index.term_id(t)?, *w, *vector.get(t)?)))
                        .collect();
                    let mut listed: Terms = e
                        .terms
                        .iter()
                        .map(|t| (t.term, t.query_weight, t.doc_weight))
                        .collect();
                    for t in &e.terms {
                        assert_eq!(t.contribution, t.query_weight * t.doc_weight, "{what}");
                    }
                    let ordered = e
                        .terms
                        .windows(2)
                        .all(|w| w[0].contribution >= w[1].contribution);
                    assert!(ordered, "{what}: terms largest contribution first");
                    let sum: f64 = e.terms.iter().map(|t| f64::from(t.contribution)).sum();
                    let sparse = f64::from(hit.sparse_score);
                    assert!((sum - sparse).abs() <= 1e-5 * sparse.max(1.0), "{what}");
                    expected.sort_by_key(|t| t.0);
                    listed.sort_by_key(|t| t.0);
                    assert_eq!(listed, expected, "{what}: terms");
                    let seen = terms_seen.entry((q, id.clone())).or_insert(listed.clone());
                    assert_eq!(*seen, listed, "{what}: terms differ with approx");

                    // Token matches: recomputed from the decoded vectors.
                    let doc = index.tokens().doc(hit.doc).unwrap();
                    let mut decoded = Vec::new();
                    doc.decode(DIM, &mut decoded);
                    assert_eq!(e.token_matches.len(), values.len() / DIM, "{what}");
                    let mut total = 0f32;
                    for (i, m) in e.token_matches.iter().enumerate() {
                        assert_eq!(m.query_token as usize, i, "{what}");
                        let qrow = &values[i * DIM..(i + 1) * DIM];
                        let dot = |t: usize| -> (f64, f64) {
                            let row = &decoded[t * DIM..(t + 1) * DIM];
                            qrow.iter().zip(row).fold((0.0, 0.0), |(s, a), (&x, &y)| {
                                let p = f64::from(x) * f64::from(y);
                                (s + p, a + p.abs())
                            })
                        };
                        let (value, magnitude) = dot(m.doc_token as usize);
                        let tolerance = DOT_TOLERANCE * magnitude.max(1e-3);
                        assert!(
                            (value - f64::from(m.score)).abs() <= tolerance,
                            "{what}: token {i} lists {} for doc token {}, recomputed {value}",
                            m.score,
                            m.doc_token
                        );
                        for t in 0..doc.tokens {
                            let (other, _) = dot(t);
                            assert!(
                                other <= value + 2.0 * tolerance,
                                "{what}: query token {i}: doc token {t} ({other}) beats the listed {} ({value})",
                                m.doc_token
                            );
                        }
                        total += m.score;
                    }
                    assert_eq!(
                        Some(total),
                        hit.maxsim,
                        "{what}: token scores sum to MaxSim"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 3 * 2 * 12 * 4, "only {checked} hits explained");
}
