//! The approximate first stage against the exact one: its scores are real sparse scores, it
//! equals exact search when nothing is pruned or everything is expanded, its build-time
//! calibration chooses and records its defaults, and the server exposes its knobs.

use std::sync::Arc;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_engine::approx::{
    ApproxBuildParams, ApproxQueryParams, ApproxSettings, CalibrationParams,
};
use tandem_engine::filter::Filter;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Query, Segment};
use tandem_proto::v1::FirstStage as WireFirstStage;
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index_with, uncalibrated, TestServer};
use tonic::Code;

fn queries(index: &Segment, corpus: &std::path::Path) -> Vec<Query> {
    let set = QuerySet::load(&corpus.join("queries.jsonl"), None, None).unwrap();
    set.records
        .iter()
        .map(|r| {
            let mut terms: Vec<(u32, f32)> = r
                .terms
                .iter()
                .map(|(t, w)| (index.term_id(t).unwrap(), *w))
                .collect();
            terms.sort_unstable_by_key(|t| t.0);
            Query {
                terms,
                vectors: None,
                filter: Default::default(),
            }
        })
        .collect()
}

#[test]
fn unpruned_approximate_search_equals_exact_search() {
    // Every posting kept, every query term walked, every matched document rescored: the
    // candidates are all documents sharing a term with the query, scored exactly.
    let settings = ApproxSettings {
        build: ApproxBuildParams {
            n_postings: 1_000_000,
            cluster_size: 0,
            tiers: true,
        },
        ..uncalibrated()
    };
    let synth = synthetic_index_with(1500, 30, 8, 21, Some(settings)).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let knobs = FirstStage::Approx(ApproxQueryParams {
        query_cut: 1000,
        depth: 0,
        rescore: 1_000_000,
        expand: 0,
    });
    for (i, query) in queries(&index, &synth.corpus).iter().enumerate() {
        for kappa in [10, 50] {
            let exact = index.first_stage(query, kappa, &FirstStage::Exact).unwrap();
            let approx = index.first_stage(query, kappa, &knobs).unwrap();
            assert_eq!(approx.len(), exact.len(), "query {i}");
            for (a, e) in approx.iter().zip(&exact) {
                // Same ranking up to float rounding of near-ties: equal scores at each rank.
                assert!(
                    (a.score - e.score).abs() <= 1e-4 * e.score.abs().max(1.0),
                    "query {i}: {a:?} vs {e:?}"
                );
            }
        }
    }
}

/// The exact top `kappa` of `query` and the approximate one with `knobs`: same documents, same
/// scores up to float rounding.
fn assert_same_as_exact(
    index: &Segment,
    query: &Query,
    kappa: usize,
    knobs: &FirstStage,
    what: &str,
) {
    let exact = index.first_stage(query, kappa, &FirstStage::Exact).unwrap();
    let approx = index.first_stage(query, kappa, knobs).unwrap();
    assert_eq!(approx.len(), exact.len(), "{what}");
    for (a, e) in approx.iter().zip(&exact) {
        assert!(
            (a.score - e.score).abs() <= 1e-4 * e.score.abs().max(1.0),
            "{what}: {a:?} vs {e:?}"
        );
    }
}

#[test]
fn expanding_a_single_cluster_is_exact_search_also_under_a_filter() {
    // One posting per term (every query term walked, so some document is met) and one
    // document rescored: without expansion nearly everything is missed. With every document
    // in one cluster, expanding it scores them all exactly.
    let settings = ApproxSettings {
        build: ApproxBuildParams {
            n_postings: 1,
            cluster_size: 1_000_000,
            tiers: true,
        },
        ..uncalibrated()
    };
    let synth = synthetic_index_with(1200, 20, 8, 31, Some(settings)).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    assert_eq!(index.approx().unwrap().cluster_count(), 1);
    let knobs = |expand| {
        FirstStage::Approx(ApproxQueryParams {
            query_cut: 1000,
            depth: 0,
            rescore: 1,
            expand,
        })
    };
    let even: roaring::RoaringBitmap = (0..1200).step_by(2).collect();
    let mut missed_without = 0;
    for (i, query) in queries(&index, &synth.corpus).iter().enumerate() {
        for kappa in [10, 50] {
            assert_same_as_exact(&index, query, kappa, &knobs(1), &format!("query {i}"));
            let filtered = Query {
                filter: Filter {
                    include_docs: Some(Arc::new(even.clone())),
                    ..Filter::default()
                },
                ..query.clone()
            };
            assert_same_as_exact(
                &index,
                &filtered,
                kappa,
                &knobs(1),
                &format!("query {i}, even"),
            );
            let exact = index.first_stage(query, kappa, &FirstStage::Exact).unwrap();
            let bare = index.first_stage(query, kappa, &knobs(0)).unwrap();
            missed_without += exact
                .iter()
                .filter(|e| !bare.iter().any(|b| b.id == e.id))
                .count();
        }
    }
    assert!(
        missed_without > 0,
        "the test needs queries that pruning alone gets wrong"
    );
}

/// An index built with `settings` (calibration asked for), and its manifest's calibration.
fn calibrated(
    settings: ApproxSettings,
    seed: u64,
) -> (Segment, tandem_engine::format::manifest::Calibration) {
    let synth = synthetic_index_with(1500, 4, 8, seed, Some(settings)).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let calibration = index
        .manifest()
        .approx
        .as_ref()
        .unwrap()
        .calibration
        .clone()
        .unwrap();
    // The test index's directory is removed with `synth`; the open index keeps its mappings.
    (index, calibration)
}

#[test]
fn calibration_chooses_the_cheapest_setting_that_reaches_the_target() {
    let easy = ApproxSettings {
        calibration: CalibrationParams {
            queries: 60,
            target_accuracy: 0.01,
            choose_defaults: true,
        },
        ..ApproxSettings::default()
    };
    // A target every rung reaches: the first rungs are timed and the fastest kept, unless
    // exact search was faster, which then becomes the default.
    let (index, c) = calibrated(easy, 41);
    assert_eq!(c.queries, 60);
    assert!(c.accuracy_at_10 >= 0.01 && c.accuracy_at_10 <= 1.0, "{c:?}");
    assert!(c.mean_us > 0.0 && c.exact_mean_us > 0.0, "{c:?}");
    assert_eq!(c.exact_by_default, c.exact_mean_us < c.mean_us, "{c:?}");
    let chosen = index.manifest().approx.as_ref().unwrap().query_defaults;
    let first_rungs: Vec<(usize, usize, usize)> =
        tandem_engine::build::calibrate::LADDER[..3].to_vec();
    assert!(
        first_rungs.contains(&(chosen.depth, chosen.rescore, chosen.expand)),
        "{chosen:?}"
    );
    assert_eq!(
        index.default_first_stage(),
        if c.exact_by_default {
            FirstStage::Exact
        } else {
            FirstStage::Approx(chosen)
        }
    );

    // One posting per term and no clusters (so only the rung without expansion is tried): at
    // most 20 documents are found per query, a target of 1 is out of reach, and queries
    // default to exact.
    let hopeless = ApproxSettings {
        build: ApproxBuildParams {
            n_postings: 1,
            cluster_size: 0,
            tiers: true,
        },
        calibration: CalibrationParams {
            queries: 60,
            target_accuracy: 1.0,
            choose_defaults: true,
        },
        ..ApproxSettings::default()
    };
    let (index, c) = calibrated(hopeless, 41);
    assert!(c.exact_by_default && c.accuracy_at_10 < 1.0, "{c:?}");
    assert_eq!(index.default_first_stage(), FirstStage::Exact);

    // Defaults given: kept, and only measured.
    let given = ApproxQueryParams {
        query_cut: 7,
        depth: 2000,
        rescore: 30,
        expand: 2,
    };
    let fixed = ApproxSettings {
        query_defaults: given,
        calibration: CalibrationParams {
            queries: 60,
            target_accuracy: 1.0,
            choose_defaults: false,
        },
        ..ApproxSettings::default()
    };
    let (index, c) = calibrated(fixed, 41);
    assert!(!c.exact_by_default, "{c:?}");
    assert_eq!(index.default_first_stage(), FirstStage::Approx(given));
}

#[test]
fn calibration_can_use_a_sample_of_real_queries() {
    // The synthetic corpus of a seed is deterministic: the queries of a first build are a
    // query sample for a second build of the same documents.
    let first = synthetic_index_with(1500, 40, 8, 43, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.jsonl");
    std::fs::copy(first.corpus.join("queries.jsonl"), &sample).unwrap();
    let settings = ApproxSettings {
        calibration: CalibrationParams {
            queries: 25,
            ..CalibrationParams::default()
        },
        calibration_queries: Some(sample),
        ..ApproxSettings::default()
    };
    let (_, c) = calibrated(settings, 43);
    assert_eq!((c.queries, c.source.as_str()), (25, "sample.jsonl"));

    // A file that is not JSONL queries: the build fails naming the file and line.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"id\": 1}\n").unwrap();
    let settings = ApproxSettings {
        calibration_queries: Some(dir.path().join("bad.jsonl")),
        ..ApproxSettings::default()
    };
    let error = synthetic_index_with(300, 4, 8, 43, Some(settings))
        .err()
        .expect("a bad queries file fails the build")
        .to_string();
    assert!(error.contains("bad.jsonl:1"), "{error}");
}

#[test]
fn approximate_scores_are_real_sparse_scores() {
    let synth = synthetic_index_with(2000, 30, 8, 5, Some(uncalibrated())).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let exact_all = |q: &Query| index.first_stage(q, 100_000, &FirstStage::Exact).unwrap();
    let mut total_overlap = 0.0;
    let queries = queries(&index, &synth.corpus);
    for (i, query) in queries.iter().enumerate() {
        let all = exact_all(query);
        let approx = index
            .first_stage(query, 10, &index.default_first_stage())
            .unwrap();
        let mut seen = std::collections::HashSet::new();
        for (rank, hit) in approx.iter().enumerate() {
            assert!(seen.insert(hit.id), "query {i}: document {} twice", hit.id);
            let truth = all
                .iter()
                .find(|e| e.id == hit.id)
                .expect("a returned document matches the query");
            assert!(
                (hit.score - truth.score).abs() <= 1e-4 * truth.score.max(1.0),
                "query {i}"
            );
            if rank > 0 {
                assert!(approx[rank - 1].score >= hit.score, "query {i}: not sorted");
            }
        }
        let top10: Vec<u32> = all.iter().take(10).map(|e| e.id).collect();
        total_overlap +=
            approx.iter().filter(|h| top10.contains(&h.id)).count() as f64 / top10.len() as f64;
    }
    let accuracy = total_overlap / queries.len() as f64;
    assert!(
        accuracy > 0.5,
        "default knobs find only {accuracy:.3} of the exact top 10"
    );
}

#[test]
fn an_answer_does_not_depend_on_the_queries_run_before_it() {
    // Query buffers are reused per thread: a query's answer must be the one a fresh thread
    // computes, also after filtered queries (whose refused documents were touched too).
    let synth = synthetic_index_with(3000, 30, 8, 13, Some(uncalibrated())).unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let queries = queries(&index, &synth.corpus);
    let stage = index.default_first_stage();
    let fresh: Vec<Vec<(u32, f32)>> = queries
        .iter()
        .map(|q| {
            std::thread::scope(|s| {
                s.spawn(|| index.first_stage(q, 20, &stage).unwrap())
                    .join()
                    .unwrap()
            })
            .iter()
            .map(|h| (h.id, h.score))
            .collect()
        })
        .collect();
    // Half the documents admitted: above the fraction scored directly, so the pruned lists are
    // walked and the refused documents' partial scores must be cleared like the others.
    let even: roaring::RoaringBitmap = (0..3000).step_by(2).collect();
    let filter = Filter {
        include_docs: Some(Arc::new(even)),
        ..Filter::default()
    };
    for (i, query) in queries.iter().enumerate() {
        let filtered = Query {
            filter: filter.clone(),
            ..query.clone()
        };
        let admitted = index.first_stage(&filtered, 20, &stage).unwrap();
        assert!(admitted.iter().all(|h| h.id % 2 == 0), "query {i}");
        let again: Vec<(u32, f32)> = index
            .first_stage(query, 20, &stage)
            .unwrap()
            .iter()
            .map(|h| (h.id, h.score))
            .collect();
        assert_eq!(again, fresh[i], "query {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_first_stage_knobs_and_refuses_bad_ones() {
    let synth = synthetic_index_with(600, 4, 8, 9, Some(uncalibrated())).unwrap();
    let exact_only = synthetic_index_with(300, 2, 8, 9, None).unwrap();
    let set = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let info = client.index_info().await.unwrap();
    assert_eq!(info.default_first_stage, "approximate");

    let request = |first_stage, query_cut, rescore| {
        set.request(
            0,
            &QueryKnobs {
                first_stage,
                query_cut,
                rescore,
                ..QueryKnobs::default()
            },
        )
    };
    let exact = client
        .search(request(WireFirstStage::Exact, None, None))
        .await
        .unwrap();
    let wide = client
        .search(request(
            WireFirstStage::Approximate,
            Some(1000),
            Some(1_000_000),
        ))
        .await
        .unwrap();
    assert_eq!(exact.hits.len(), wide.hits.len());
    for bad in [
        request(WireFirstStage::Approximate, Some(0), None),
        request(WireFirstStage::Approximate, None, Some(0)),
    ] {
        let status = client.search(bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("query_cut") || status.message().contains("rescore"),
            "{}",
            status.message()
        );
    }
    server.stop().await.unwrap();

    let server = TestServer::start(&exact_only.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    assert_eq!(
        client.index_info().await.unwrap().default_first_stage,
        "exact"
    );
    let status = client
        .search(request(WireFirstStage::Approximate, None, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("first_stage"),
        "{}",
        status.message()
    );
    server.stop().await.unwrap();
}
