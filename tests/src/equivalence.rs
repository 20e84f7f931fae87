//! Comparing two indexes holding the same documents query by query: every hit's external id and
//! scores (bit for bit) and every explanation, over pipeline variants (fusion, CP/EE, sparse
//! only) and filters (attributes, included and excluded ids). The tests of segments and of live
//! writes use it against a one-segment batch build.

use crate::SyntheticIndex;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_engine::filter::{parse, Filter};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Fusion, FusionMethod, Index, Limits, Query, SearchOutput, SearchParams};

/// The queries of a synthetic corpus.
pub fn queries(synth: &SyntheticIndex) -> QuerySet {
    QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap()
}

/// k = 10, κ = 40, no CP/EE/fusion, explanations on.
pub fn params(first_stage: FirstStage) -> SearchParams {
    SearchParams {
        first_stage,
        k: 10,
        kappa: 40,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        fusion: Fusion::NONE,
        prefetch: true,
        explain: true,
    }
}

/// Every hit as (external id, score bits, sparse bits, MaxSim bits, fused bits), and the
/// explanations, comparable across indexes.
pub type Answer = (Vec<(String, u32, u32, Option<u32>, Option<u32>)>, String);

/// `output` comparable across indexes.
pub fn answer(index: &Index, output: &SearchOutput) -> Answer {
    let hits = output
        .hits
        .iter()
        .map(|h| {
            (
                index.external_id(h.doc).unwrap().to_string(),
                h.score.to_bits(),
                h.sparse_score.to_bits(),
                h.maxsim.map(f32::to_bits),
                h.fused.map(f32::to_bits),
            )
        })
        .collect();
    (hits, format!("{:?}", output.explanations))
}

/// The engine query of query `i`, resolved through `index`'s vocabulary.
pub fn query(index: &Index, qs: &QuerySet, i: usize, filter: Filter) -> Query {
    let request = qs.request(i, &QueryKnobs::default());
    let q = request.query.unwrap();
    let (terms, _) = index.resolve_terms(q.sparse_tokens.iter().map(|(t, w)| (t.as_str(), *w)));
    let vectors = q.vectors.unwrap();
    Query {
        terms,
        vectors: Some(tandem_engine::QueryVectors {
            values: vectors.values,
            dim: vectors.dim as usize,
        }),
        filter,
    }
}

/// The filters compared: none, attribute expressions, included and excluded ids (from `qs_ids`).
pub fn filters(qs_ids: &[String]) -> Vec<(&'static str, Filter)> {
    let expr = |text: &str| Filter {
        expr: Some(parse(text).unwrap()),
        ..Filter::default()
    };
    vec![
        ("none", Filter::default()),
        ("year", expr("year >= 2010 AND lang = \"en\"")),
        ("not-odd", expr("NOT tags = \"odd\"")),
        ("year-ne", expr("year != 2003")),
        (
            "include",
            Filter {
                include: Some(qs_ids.iter().step_by(3).cloned().collect()),
                ..Filter::default()
            },
        ),
        (
            "exclude",
            Filter {
                exclude: qs_ids.iter().step_by(2).cloned().collect(),
                ..Filter::default()
            },
        ),
    ]
}

/// Runs every query of `qs` under every variant and filter on both indexes and asserts equal
/// answers; returns how many searches were compared.
pub fn compare(single: &Index, split: &Index, qs: &QuerySet, ids: &[String]) -> usize {
    let limits = Limits::default();
    let mut compared = 0;
    let variants: Vec<(&str, SearchParams)> = vec![
        ("plain", params(FirstStage::Exact)),
        (
            "zscore",
            SearchParams {
                fusion: Fusion {
                    method: FusionMethod::ZScore,
                    weight: 0.3,
                },
                ..params(FirstStage::Exact)
            },
        ),
        (
            "rrf-cp-ee",
            SearchParams {
                fusion: Fusion {
                    method: FusionMethod::Rrf { k: 60.0 },
                    weight: 1.0,
                },
                cp_alpha: Some(0.3),
                ee_beta: Some(4),
                ..params(FirstStage::Exact)
            },
        ),
        (
            "sparse-only",
            SearchParams {
                rerank: false,
                ..params(FirstStage::Exact)
            },
        ),
    ];
    for (filter_name, filter) in filters(ids) {
        for (variant, p) in &variants {
            for i in 0..qs.len() {
                let a = single
                    .search(&query(single, qs, i, filter.clone()), p, &limits)
                    .unwrap();
                let b = split
                    .search(&query(split, qs, i, filter.clone()), p, &limits)
                    .unwrap();
                assert!(!a.hits.is_empty(), "{filter_name}/{variant}/q{i}: no hits");
                assert_eq!(
                    answer(single, &a),
                    answer(split, &b),
                    "{filter_name}/{variant}/query {i}"
                );
                assert_eq!(a.stats.candidates, b.stats.candidates);
                compared += 1;
            }
        }
    }
    compared
}
