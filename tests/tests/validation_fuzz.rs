//! A property test (fuzz harness) of the request-validation layer: arbitrary `SearchRequest`s,
//! and arbitrary or mutated bytes decoded as one, go through `tandem_server::convert::prepare`
//! and `Index::search` on a small synthetic index, as the server runs them. Nothing panics; each
//! request is answered, with at most `k` hits and finite scores, or refused with
//! `InvalidArgument` naming one of the request's fields.
//!
//! Requests are edits of real queries: every knob is absent (the server default), a plausible
//! value, or an extreme one (0, `u32::MAX`, NaN, ±inf, `f32::MAX`, values just past a limit); the
//! sparse part is kept, replaced by random token strings or ids (some out of the vocabulary, some
//! repeated, values and indices of different lengths), both forms or neither; the token vectors
//! are kept, dropped, or random (random dims, lengths that fill no whole row, float16 bytes of
//! any length). So most cases pass the early checks and reach the later ones.
//!
//! Each property runs 256 cases by default (a few seconds); `PROPTEST_CASES=N` runs N, e.g.
//! `PROPTEST_CASES=100000 cargo test -p tandem-tests --test validation_fuzz` for a long run. A
//! failure prints the smallest failing request; add it to `bad_input.rs` with its fix.

use half::f16;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use std::collections::HashMap;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_engine::{Error, Index};
use tandem_proto::v1::{Query, SearchRequest, SparseVector, TokenVectors};
use tandem_server::config::ServeOptions;
use tandem_server::convert::{prepare, response};
use tandem_tests::{synthetic_index, SyntheticIndex};

const DIM: usize = 16;

/// The index, the server options and real queries to edit.
struct Setup {
    _synth: SyntheticIndex,
    index: Index,
    options: ServeOptions,
    good: Vec<SearchRequest>,
}

impl Setup {
    fn new() -> Setup {
        let synth = synthetic_index(300, 6, DIM, 11).unwrap();
        let queries = QuerySet::load(
            &synth.corpus.join("queries.jsonl"),
            Some(&synth.corpus.join("query_vectors.npy")),
            Some(&synth.corpus.join("query_lens.npy")),
        )
        .unwrap();
        let good = (0..6)
            .map(|i| queries.request(i, &QueryKnobs::default()))
            .collect();
        let index = Index::open(&synth.index).unwrap();
        Setup {
            _synth: synth,
            index,
            options: ServeOptions::default(),
            good,
        }
    }

    /// Runs `request` as the server would and checks the outcome.
    fn check(&self, request: SearchRequest) -> Result<(), TestCaseError> {
        let outcome = prepare(&self.index, &self.options, request).and_then(|prepared| {
            let output =
                self.index
                    .search(&prepared.query, &prepared.params, &self.options.limits)?;
            Ok((prepared, output))
        });
        match outcome {
            Ok((prepared, output)) => {
                prop_assert!(output.hits.len() <= prepared.params.k);
                for hit in &output.hits {
                    let scores = [
                        Some(hit.score),
                        Some(hit.sparse_score),
                        hit.maxsim,
                        hit.fused,
                    ];
                    prop_assert!(
                        scores.iter().flatten().all(|s| s.is_finite()),
                        "a score is not finite: {hit:?} for {:?}",
                        prepared
                    );
                }
                let answer = response(&self.index, &prepared, output, &[]);
                prop_assert!(answer.hits.iter().all(|h| !h.doc_id.is_empty()));
            }
            Err(Error::InvalidArgument { field, message }) => {
                prop_assert!(names_a_field(&field), "unknown field {field:?}: {message}");
                prop_assert!(!message.is_empty(), "no message for {field}");
            }
            Err(other) => prop_assert!(false, "not an InvalidArgument: {other}"),
        }
        Ok(())
    }
}

/// The request fields errors may name (an index or key in brackets may follow).
const FIELDS: &[&str] = &[
    "k",
    "kappa",
    "cp_alpha",
    "ee_beta",
    "rerank",
    "first_stage",
    "query_cut",
    "rescore",
    "fusion_method",
    "fusion_weight",
    "rrf_k",
    "query",
    "query.sparse",
    "query.sparse.indices",
    "query.sparse.values",
    "query.sparse_tokens",
    "query.vectors",
    "query.vectors.dim",
    "query.vectors.f16_le",
];

fn names_a_field(field: &str) -> bool {
    let path = field.split('[').next().unwrap_or(field);
    FIELDS.contains(&path)
}

/// 256 cases, or `PROPTEST_CASES`; failures are reported, not persisted to files.
fn config() -> Config {
    let defaults = Config::default();
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => defaults.cases,
        None => 256,
    };
    Config {
        cases,
        failure_persistence: None,
        ..defaults
    }
}

/// Floats: mostly plausible, often extreme.
fn float() -> BoxedStrategy<f32> {
    prop_oneof![
        6 => -1.0f32..2.0,
        1 => Just(0.0f32),
        2 => prop::sample::select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE,
            -0.0,
            1.0 + f32::EPSILON,
            65504.0,
            65505.0,
            1e30,
        ]),
        1 => any::<f32>(),
    ]
    .boxed()
}

/// Values of a repeated field: plausible, now and then anything [`float`] gives.
fn element() -> BoxedStrategy<f32> {
    prop_oneof![40 => -1.0f32..2.0, 1 => float()].boxed()
}

/// Counts (k, kappa, query_cut, ee_beta): absent, small, near a limit, or anything.
fn count() -> BoxedStrategy<Option<u32>> {
    prop_oneof![
        10 => Just(None),
        4 => (0u32..60).prop_map(Some),
        1 => (995u32..1005).prop_map(Some),
        1 => (9995u32..10005).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ]
    .boxed()
}

/// Optional float knobs: absent, in [0, 1], or any float.
fn knob() -> BoxedStrategy<Option<f32>> {
    prop_oneof![
        10 => Just(None),
        4 => (0.0f32..=1.0).prop_map(Some),
        1 => float().prop_map(Some),
    ]
    .boxed()
}

/// Enum fields whose known values are `0..known`: mostly those, sometimes the next one or any
/// int32.
fn enumeration(known: i32) -> BoxedStrategy<i32> {
    prop_oneof![20 => 0..known, 1 => Just(known), 1 => any::<i32>()].boxed()
}

/// Token strings: vocabulary terms (`w00000` ..), near misses, anything.
fn token() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0u32..30_522).prop_map(|i| format!("w{i:05}")),
        1 => "[a-z0-9]{0,6}",
        1 => any::<String>(),
    ]
    .boxed()
}

/// Term ids: in the vocabulary (30 522 terms) or not.
fn term_id() -> BoxedStrategy<u32> {
    prop_oneof![6 => 0u32..30_522, 1 => 30_520u32..30_530, 1 => any::<u32>()].boxed()
}

/// How the sparse part of the query is edited.
#[derive(Debug, Clone)]
enum SparseEdit {
    Keep,
    Tokens(HashMap<String, f32>),
    /// Ids and weights; the weights are cut to a different length when the flag is set.
    Ids(Vec<(u32, f32)>, bool),
    Both(Vec<(u32, f32)>),
    Neither,
}

fn sparse_edit() -> BoxedStrategy<SparseEdit> {
    let pairs = || prop::collection::vec((term_id(), element()), 0..12);
    prop_oneof![
        4 => Just(SparseEdit::Keep),
        2 => prop::collection::hash_map(token(), element(), 0..12).prop_map(SparseEdit::Tokens),
        3 => (pairs(), prop::bool::weighted(0.2)).prop_map(|(p, cut)| SparseEdit::Ids(p, cut)),
        1 => pairs().prop_map(SparseEdit::Both),
        1 => Just(SparseEdit::Neither),
    ]
    .boxed()
}

/// How the token vectors are edited.
#[derive(Debug, Clone)]
enum VectorEdit {
    Keep,
    Drop,
    /// The kept vectors as float16 bytes, with `extra` bytes appended.
    F16 {
        extra: Vec<u8>,
    },
    /// Random vectors: a declared dim, `rows` rows of the index dim plus `extra` values, as
    /// float32 or float16, optionally with both encodings set.
    Random {
        dim: u32,
        values: Vec<f32>,
        f16: bool,
        both: bool,
    },
}

fn vector_edit() -> BoxedStrategy<VectorEdit> {
    let dim = prop_oneof![4 => Just(DIM as u32), 1 => 0u32..40, 1 => any::<u32>()];
    let values = (0usize..4, prop::bool::weighted(0.2)).prop_flat_map(|(rows, partial)| {
        prop::collection::vec(element(), rows * DIM + usize::from(partial))
    });
    prop_oneof![
        3 => Just(VectorEdit::Keep),
        1 => Just(VectorEdit::Drop),
        1 => prop::collection::vec(any::<u8>(), 0..3).prop_map(|extra| VectorEdit::F16 { extra }),
        3 => (dim, values, any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(dim, values, f16, both)| VectorEdit::Random {
                dim,
                values,
                f16,
                both,
            }
        ),
    ]
    .boxed()
}

/// The scalar fields of a request.
#[derive(Debug, Clone)]
struct Knobs {
    k: Option<u32>,
    kappa: Option<u32>,
    cp_alpha: Option<f32>,
    ee_beta: Option<u32>,
    rerank: i32,
    first_stage: i32,
    query_cut: Option<u32>,
    rescore: Option<u32>,
    fusion_method: i32,
    fusion_weight: Option<f32>,
    rrf_k: Option<f32>,
    query_id: String,
}

fn knobs() -> BoxedStrategy<Knobs> {
    (
        (count(), count(), knob(), count()),
        (enumeration(3), enumeration(3), count(), count()),
        (enumeration(4), knob(), knob(), any::<String>()),
    )
        .prop_map(
            |(
                (k, kappa, cp_alpha, ee_beta),
                (rerank, first_stage, query_cut, rescore),
                (fusion_method, fusion_weight, rrf_k, query_id),
            )| Knobs {
                k,
                kappa,
                cp_alpha,
                ee_beta,
                rerank,
                first_stage,
                query_cut,
                rescore,
                fusion_method,
                fusion_weight,
                rrf_k,
                query_id,
            },
        )
        .boxed()
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

/// `good` with `knobs`, `sparse` and `vectors` applied.
fn edited(
    good: &SearchRequest,
    knobs: Knobs,
    sparse: SparseEdit,
    vectors: VectorEdit,
) -> SearchRequest {
    let mut request = SearchRequest {
        k: knobs.k,
        kappa: knobs.kappa,
        cp_alpha: knobs.cp_alpha,
        ee_beta: knobs.ee_beta,
        rerank: knobs.rerank,
        first_stage: knobs.first_stage,
        query_cut: knobs.query_cut,
        rescore: knobs.rescore,
        fusion_method: knobs.fusion_method,
        fusion_weight: knobs.fusion_weight,
        rrf_k: knobs.rrf_k,
        query_id: knobs.query_id,
        query: good.query.clone(),
        ..SearchRequest::default()
    };
    let query = request.query.get_or_insert_with(Query::default);
    let ids = |pairs: Vec<(u32, f32)>, cut: bool| {
        let (indices, mut values): (Vec<u32>, Vec<f32>) = pairs.into_iter().unzip();
        if cut {
            values.pop();
        }
        Some(SparseVector { indices, values })
    };
    match sparse {
        SparseEdit::Keep => {}
        SparseEdit::Tokens(tokens) => query.sparse_tokens = tokens,
        SparseEdit::Ids(pairs, cut) => {
            query.sparse_tokens.clear();
            query.sparse = ids(pairs, cut);
        }
        SparseEdit::Both(pairs) => query.sparse = ids(pairs, false),
        SparseEdit::Neither => query.sparse_tokens.clear(),
    }
    match vectors {
        VectorEdit::Keep => {}
        VectorEdit::Drop => query.vectors = None,
        VectorEdit::F16 { extra } => {
            if let Some(v) = query.vectors.as_mut() {
                v.f16_le = [f16_bytes(&v.values), extra].concat();
                v.values.clear();
            }
        }
        VectorEdit::Random {
            dim,
            values,
            f16,
            both,
        } => {
            let f16_le = if f16 || both {
                f16_bytes(&values)
            } else {
                Vec::new()
            };
            let values = if f16 && !both { Vec::new() } else { values };
            query.vectors = Some(TokenVectors {
                dim,
                values,
                f16_le,
                f32_le: Vec::new(),
            });
        }
    }
    request
}

#[test]
fn arbitrary_requests_are_answered_or_refused_naming_a_field() {
    let setup = Setup::new();
    let strategy = (
        prop::sample::select(setup.good.clone()),
        knobs(),
        sparse_edit(),
        vector_edit(),
    )
        .prop_map(|(good, knobs, sparse, vectors)| edited(&good, knobs, sparse, vectors));
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, |request| setup.check(request)) {
        panic!("{e}");
    }
}

#[test]
fn arbitrary_and_mutated_bytes_never_panic() {
    let setup = Setup::new();
    let encoded: Vec<Vec<u8>> = setup.good.iter().map(Message::encode_to_vec).collect();
    let mutated = (
        prop::sample::select(encoded),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        any::<prop::sample::Index>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(mut bytes, flips, cut, truncate)| {
            for (at, byte) in flips {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            bytes
        });
    let strategy = prop_oneof![
        3 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |bytes| {
        // Bytes that do not decode are the wire layer's business (INVALID_ARGUMENT there).
        match SearchRequest::decode(bytes.as_slice()) {
            Ok(request) => setup.check(request),
            Err(_) => Ok(()),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
