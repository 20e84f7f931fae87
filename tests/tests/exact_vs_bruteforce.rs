//! The engine against plain reference computations on a synthetic corpus: exact sparse
//! retrieval equals brute force (same documents, same scores, same order), the two-stage
//! pipeline equals MaxSim computed by a naive loop over the first stage's candidates, CP/EE
//! follow their definitions, fusion equals its formulas computed here in f64, and the gRPC
//! service returns exactly what the engine returns.

use half::f16;
use std::collections::HashMap;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_data::jsonl::parse_all;
use tandem_data::npy::NpyArray;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Fusion, FusionMethod, Limits, Query, QueryVectors, SearchParams, Segment};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, TestServer};

struct Corpus {
    index: Segment,
    /// Per document: term id → weight.
    docs: Vec<HashMap<u32, f32>>,
    /// Per document: its f16 token vectors widened to f32.
    doc_vectors: Vec<Vec<f32>>,
    queries: QuerySet,
    dim: usize,
}

fn load(synth: &tandem_tests::SyntheticIndex) -> Corpus {
    let index = Segment::open(&synth.index).unwrap();
    let text = std::fs::read_to_string(synth.corpus.join("docs.jsonl")).unwrap();
    let docs = parse_all(&text, "docs.jsonl")
        .unwrap()
        .into_iter()
        .map(|r| {
            r.terms
                .into_iter()
                .map(|(t, w)| (index.term_id(&t).unwrap(), w))
                .collect()
        })
        .collect::<Vec<HashMap<u32, f32>>>();
    let vectors = NpyArray::open(&synth.corpus.join("doc_vectors.npy")).unwrap();
    let (_, dim) = vectors.matrix_shape().unwrap();
    let lens = NpyArray::open(&synth.corpus.join("doc_lens.npy"))
        .unwrap()
        .to_u64_vec()
        .unwrap();
    let mut doc_vectors = Vec::new();
    let mut start = 0usize;
    for len in lens {
        let mut rows = Vec::new();
        vectors
            .rows_f32(start..start + len as usize, None, &mut rows)
            .unwrap();
        // The index stores f16; the inputs are f16 already, so this is exact.
        assert!(rows.iter().all(|&v| f16::from_f32(v).to_f32() == v));
        doc_vectors.push(rows);
        start += len as usize;
    }
    let queries = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    Corpus {
        index,
        docs,
        doc_vectors,
        queries,
        dim,
    }
}

fn engine_query(c: &Corpus, i: usize) -> Query {
    let mut terms: Vec<(u32, f32)> = c.queries.records[i]
        .terms
        .iter()
        .map(|(t, w)| (c.index.term_id(t).unwrap(), *w))
        .collect();
    terms.sort_unstable_by_key(|t| t.0);
    Query {
        terms,
        vectors: c.queries.vectors.as_ref().map(|v| QueryVectors {
            values: v[i].clone(),
            dim: c.dim,
        }),
        filter: Default::default(),
    }
}

/// Brute force: every document's dot product with the query, summed in query-term order as the
/// engine does, sorted by score (ties by document order), documents with score 0 left out.
fn brute_force_sparse(c: &Corpus, query: &Query) -> Vec<(u32, f32)> {
    let mut scored: Vec<(u32, f32)> = c
        .docs
        .iter()
        .enumerate()
        .filter_map(|(d, doc)| {
            let mut score = 0f32;
            let mut touched = false;
            for (t, w) in &query.terms {
                if let Some(dw) = doc.get(t) {
                    score += w * dw;
                    touched = true;
                }
            }
            touched.then_some((d as u32, score))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

fn naive_maxsim(query: &[f32], doc: &[f32], dim: usize) -> f64 {
    query
        .chunks(dim)
        .map(|q| {
            doc.chunks(dim)
                .map(|d| {
                    q.iter()
                        .zip(d)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                })
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum()
}

/// The brute-force top `n` sparse candidates of `query` and their naive MaxSim scores.
fn reference_candidates(c: &Corpus, query: &Query, n: usize) -> (Vec<(u32, f32)>, Vec<f64>) {
    let candidates: Vec<(u32, f32)> = brute_force_sparse(c, query).into_iter().take(n).collect();
    let qv = &query.vectors.as_ref().unwrap().values;
    let maxsim = candidates
        .iter()
        .map(|(d, _)| naive_maxsim(qv, &c.doc_vectors[*d as usize], c.dim))
        .collect();
    (candidates, maxsim)
}

fn params(k: usize, kappa: usize) -> SearchParams {
    SearchParams {
        first_stage: FirstStage::Exact,
        k,
        kappa,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: false,
        explain: false,
        fusion: Fusion::NONE,
    }
}

#[test]
fn exact_first_stage_equals_brute_force() {
    let synth = synthetic_index(1500, 40, 24, 7).unwrap();
    let c = load(&synth);
    let limits = Limits {
        max_k: 5000,
        ..Limits::default()
    };
    for i in 0..c.queries.len() {
        let query = engine_query(&c, i);
        let expected = brute_force_sparse(&c, &query);
        assert!(
            expected.len() >= 10,
            "query {i} matches too few documents for a real test"
        );
        for kappa in [1, 10, 100, 5000] {
            let p = SearchParams {
                rerank: false,
                ..params(kappa, kappa)
            };
            let got = c.index.search(&query, &p, &limits).unwrap();
            let got: Vec<(u32, f32)> = got.hits.iter().map(|h| (h.doc, h.sparse_score)).collect();
            let want = &expected[..kappa.min(expected.len())];
            assert_eq!(got, want, "query {i}, kappa {kappa}");
        }
    }
}

#[test]
fn two_stage_equals_naive_maxsim_rerank_with_cp_and_ee() {
    let synth = synthetic_index(1200, 30, 32, 11).unwrap();
    let c = load(&synth);
    let limits = Limits::default();
    let (k, kappa) = (10, 40);
    let mut ee_stopped_early = 0;
    for i in 0..c.queries.len() {
        let query = engine_query(&c, i);
        let (candidates, maxsim) = reference_candidates(&c, &query, kappa);

        // Plain rerank: the top k of the candidates by MaxSim.
        let got = c.index.search(&query, &params(k, kappa), &limits).unwrap();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| maxsim[b].total_cmp(&maxsim[a]).then(a.cmp(&b)));
        assert_eq!(got.stats.reranked, candidates.len());
        for (rank, hit) in got.hits.iter().enumerate() {
            let want = order[rank];
            let got_score = hit.maxsim.unwrap() as f64;
            // Near-ties may swap under float rounding; scores must agree either way.
            assert!(
                (got_score - maxsim[want]).abs() < 1e-4,
                "query {i} rank {rank}"
            );
            let position = candidates.iter().position(|(d, _)| *d == hit.doc).unwrap();
            assert!((maxsim[position] - got_score).abs() < 1e-4);
            assert_eq!(hit.sparse_score, candidates[position].1);
        }

        // CP(α): the reranked set is the candidates at or above (1 − α) × the k-th score.
        let alpha = 0.05f32;
        let threshold = (1.0 - alpha) * candidates[k - 1].1;
        let kept = k + candidates[k..]
            .iter()
            .take_while(|c| c.1 >= threshold)
            .count();
        let p = SearchParams {
            cp_alpha: Some(alpha),
            ..params(k, kappa)
        };
        let got = c.index.search(&query, &p, &limits).unwrap();
        assert_eq!(got.stats.reranked, kept, "query {i}");
        assert_eq!(got.stats.pruned, candidates.len() - kept);

        // EE(β): simulate the rule on the naive scores.
        let beta = 3;
        let mut top: Vec<f64> = Vec::new();
        let (mut misses, mut scored) = (0, 0);
        for (pos, s) in maxsim.iter().enumerate() {
            scored += 1;
            let entered = top.len() < k || *s > top[k - 1];
            top.push(*s);
            top.sort_by(|a, b| b.total_cmp(a));
            top.truncate(k);
            if pos >= k {
                misses = if entered { 0 } else { misses + 1 };
                if misses >= beta {
                    break;
                }
            }
        }
        let p = SearchParams {
            ee_beta: Some(beta),
            ..params(k, kappa)
        };
        let got = c.index.search(&query, &p, &limits).unwrap();
        assert_eq!(got.stats.reranked, scored, "query {i}");
        ee_stopped_early += usize::from(scored < candidates.len());
    }
    assert!(
        ee_stopped_early > 0,
        "EE never stopped early: the test would not see a broken rule"
    );
}

/// The reference fused scores of candidates with MaxSim scores `maxsim` and sparse scores
/// `sparse`, written from the formulas: norm(MaxSim) + w · norm(sparse).
fn reference_fusion(method: FusionMethod, w: f64, maxsim: &[f64], sparse: &[f64]) -> Vec<f64> {
    let norm = |x: &[f64]| -> Vec<f64> {
        let n = x.len() as f64;
        match method {
            FusionMethod::ZScore => {
                let mean = x.iter().sum::<f64>() / n;
                let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
                x.iter()
                    .map(|v| if std > 0.0 { (v - mean) / std } else { 0.0 })
                    .collect()
            }
            FusionMethod::MinMax => {
                let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                x.iter()
                    .map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 })
                    .collect()
            }
            FusionMethod::Rrf { k } => x
                .iter()
                .map(|v| {
                    // Rank = 1 + the number of strictly larger values (ties share a rank).
                    let rank = 1 + x.iter().filter(|o| *o > v).count();
                    1.0 / (f64::from(k) + rank as f64)
                })
                .collect(),
        }
    };
    let (a, b) = (norm(maxsim), norm(sparse));
    a.iter().zip(&b).map(|(a, b)| a + w * b).collect()
}

#[test]
fn fusion_equals_the_reference_formulas_and_weight_zero_is_maxsim_alone() {
    let synth = synthetic_index(1000, 25, 24, 5).unwrap();
    let c = load(&synth);
    let limits = Limits::default();
    let (k, kappa) = (10, 30);
    let mut reordered = 0;
    for i in 0..c.queries.len() {
        let query = engine_query(&c, i);
        let (candidates, maxsim) = reference_candidates(&c, &query, kappa);
        let sparse: Vec<f64> = candidates.iter().map(|c| f64::from(c.1)).collect();
        let plain = c.index.search(&query, &params(k, kappa), &limits).unwrap();

        // w = 0 is MaxSim alone, hit for hit, whatever the method.
        for method in [FusionMethod::ZScore, FusionMethod::Rrf { k: 60.0 }] {
            let p = SearchParams {
                fusion: Fusion {
                    method,
                    weight: 0.0,
                },
                ..params(k, kappa)
            };
            let got = c.index.search(&query, &p, &limits).unwrap();
            assert_eq!(got.hits, plain.hits);
        }

        for (method, weight) in [
            (FusionMethod::ZScore, 0.3),
            (FusionMethod::MinMax, 0.5),
            (FusionMethod::Rrf { k: 60.0 }, 1.0),
        ] {
            let fused = reference_fusion(method, weight, &maxsim, &sparse);
            let p = SearchParams {
                fusion: Fusion {
                    method,
                    weight: weight as f32,
                },
                ..params(k, kappa)
            };
            let got = c.index.search(&query, &p, &limits).unwrap();
            let mut order: Vec<usize> = (0..candidates.len()).collect();
            order.sort_by(|&a, &b| fused[b].total_cmp(&fused[a]).then(a.cmp(&b)));
            assert_eq!(got.hits.len(), k);
            for (rank, hit) in got.hits.iter().enumerate() {
                let position = candidates.iter().position(|(d, _)| *d == hit.doc).unwrap();
                let score = f64::from(hit.fused.unwrap());
                assert_eq!(hit.score, hit.fused.unwrap());
                assert!(
                    (score - fused[position]).abs() < 1e-4,
                    "query {i} {method:?}"
                );
                // Near-ties may swap under float rounding; the score at each rank must agree.
                assert!(
                    (score - fused[order[rank]]).abs() < 1e-4,
                    "query {i} {method:?} rank {rank}"
                );
                assert!((f64::from(hit.maxsim.unwrap()) - maxsim[position]).abs() < 1e-4);
                assert_eq!(hit.sparse_score, candidates[position].1);
            }
            let docs = |o: &tandem_engine::SearchOutput| -> Vec<u32> {
                o.hits.iter().map(|h| h.doc).collect()
            };
            reordered += usize::from(docs(&got) != docs(&plain));
        }
    }
    assert!(
        reordered > 0,
        "fusion never changed a ranking: the test would not see it ignored"
    );
}

#[test]
fn fusion_normalises_over_the_candidates_early_exit_reranked() {
    let synth = synthetic_index(1200, 30, 32, 11).unwrap();
    let c = load(&synth);
    let (k, kappa, beta) = (10, 40, 2);
    let fusion = Fusion {
        method: FusionMethod::ZScore,
        weight: 0.5,
    };
    let mut stopped = 0;
    for i in 0..c.queries.len() {
        let query = engine_query(&c, i);
        let p = SearchParams {
            ee_beta: Some(beta),
            fusion,
            ..params(k, kappa)
        };
        let got = c.index.search(&query, &p, &Limits::default()).unwrap();
        // EE decides on MaxSim alone: it reranks what it reranks without fusion.
        let plain = SearchParams {
            fusion: Fusion::NONE,
            ..p
        };
        let plain = c.index.search(&query, &plain, &Limits::default()).unwrap();
        assert_eq!(got.stats.reranked, plain.stats.reranked, "query {i}");
        let reranked = got.stats.reranked;
        stopped += usize::from(reranked < kappa);
        // The fused scores are normalised over exactly the reranked candidates.
        let (candidates, maxsim) = reference_candidates(&c, &query, reranked);
        let sparse: Vec<f64> = candidates.iter().map(|c| f64::from(c.1)).collect();
        let fused = reference_fusion(fusion.method, 0.5, &maxsim, &sparse);
        for hit in &got.hits {
            let position = candidates.iter().position(|(d, _)| *d == hit.doc).unwrap();
            assert!(
                (f64::from(hit.score) - fused[position]).abs() < 1e-4,
                "query {i}"
            );
        }
    }
    assert!(
        stopped > 0,
        "EE never stopped early: the test would not see the difference"
    );
}

/// A hit as compared across engine and gRPC: id, score, sparse, MaxSim and fused scores.
type HitScores = (String, f32, f32, Option<f32>, Option<f32>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_equal_engine_answers() {
    let synth = synthetic_index(800, 12, 16, 3).unwrap();
    let c = load(&synth);
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let knobs = QueryKnobs {
        k: Some(5),
        kappa: Some(30),
        first_stage: tandem_proto::v1::FirstStage::Exact,
        ..QueryKnobs::default()
    };
    let requests: Vec<_> = (0..c.queries.len())
        .map(|i| c.queries.request(i, &knobs))
        .collect();
    let batch = client.search_batches(requests.clone(), 5).await.unwrap();
    assert_eq!(batch.len(), c.queries.len());
    for (i, request) in requests.into_iter().enumerate() {
        let single = client.search(request).await.unwrap();
        // The server's defaults for what the request leaves out: fusion, CP and EE.
        let defaults = ServeOptions::default();
        let p = SearchParams {
            fusion: defaults.default_fusion,
            cp_alpha: defaults.default_cp_alpha,
            ee_beta: defaults.default_ee_beta,
            ..params(5, 30)
        };
        let engine = c
            .index
            .search(&engine_query(&c, i), &p, &Limits::default())
            .unwrap();
        let engine_hits: Vec<HitScores> = engine
            .hits
            .iter()
            .map(|h| {
                (
                    c.index.external_id(h.doc).unwrap().to_string(),
                    h.score,
                    h.sparse_score,
                    h.maxsim,
                    h.fused,
                )
            })
            .collect();
        assert!(
            engine_hits.iter().all(|h| h.4.is_some()),
            "fused by default"
        );
        for response in [&single, &batch[i]] {
            assert_eq!(response.query_id, c.queries.records[i].id);
            let hits: Vec<HitScores> = response
                .hits
                .iter()
                .map(|h| {
                    (
                        h.doc_id.clone(),
                        h.score,
                        h.sparse_score,
                        h.maxsim_score,
                        h.fused_score,
                    )
                })
                .collect();
            assert_eq!(hits, engine_hits, "query {i}");
        }
    }
    server.stop().await.unwrap();
}
