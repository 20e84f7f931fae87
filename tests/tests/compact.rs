//! `tandem-index compact`: the compacted index answers every query exactly as the original one
//! with its deletes (same documents by external id, same sparse and MaxSim scores), for every
//! vector codec, keeps attributes, has no tombstones, and can replace the original in place.

use std::path::Path;
use tandem_client::queries::QuerySet;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::compact::compact;
use tandem_engine::filter::{parse, Filter};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::tokens::Codec;
use tandem_engine::{Fusion, Limits, Query, QueryVectors, SearchParams, Segment};
use tandem_tests::synthetic_index_full;

fn queries(corpus: &Path, index: &Segment, filter: &Filter) -> Vec<Query> {
    let set = QuerySet::load(
        &corpus.join("queries.jsonl"),
        Some(&corpus.join("query_vectors.npy")),
        Some(&corpus.join("query_lens.npy")),
    )
    .unwrap();
    (0..set.len())
        .map(|i| {
            let (terms, _) =
                index.resolve_terms(set.records[i].terms.iter().map(|(t, w)| (t.as_str(), *w)));
            Query {
                terms,
                vectors: set.vectors.as_ref().map(|v| QueryVectors {
                    values: v[i].clone(),
                    dim: set.dim,
                }),
                filter: filter.clone(),
            }
        })
        .collect()
}

/// Every query's hits as (external id, sparse score, MaxSim score).
fn answers(
    corpus: &Path,
    index: &Segment,
    filter: &Filter,
) -> Vec<Vec<(String, f32, Option<f32>)>> {
    let params = SearchParams {
        first_stage: FirstStage::Exact,
        k: 10,
        kappa: 40,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: false,
        explain: false,
        fusion: Fusion::NONE,
    };
    queries(corpus, index, filter)
        .iter()
        .map(|q| {
            index
                .search(q, &params, &Limits::default())
                .unwrap()
                .hits
                .iter()
                .map(|h| {
                    let id = index.external_id(h.doc).unwrap().to_string();
                    (id, h.sparse_score, h.maxsim)
                })
                .collect()
        })
        .collect()
}

#[test]
fn compacted_indexes_answer_like_the_original_with_its_deletes() {
    let synth =
        synthetic_index_full(1500, 10, 16, 41, Some(tandem_tests::uncalibrated()), true).unwrap();
    let filter = Filter {
        expr: Some(parse("lang = 'en' or year >= 2020").unwrap()),
        ..Filter::default()
    };
    for codec in [Codec::F16, Codec::Int8, Codec::Pq] {
        let source = synth.dir.path().join(format!("index-{}", codec.name()));
        build_index(
            &BuildConfig {
                docs: synth.corpus.join("docs.jsonl"),
                vectors: synth.corpus.join("doc_vectors.npy"),
                lens: synth.corpus.join("doc_lens.npy"),
                int8_scale: None,
                vocab: Some(synth.corpus.join("vocab.txt")),
                token_ids: false,
                out: source.clone(),
                overwrite: false,
                approx: Some(tandem_tests::uncalibrated()),
                codec,
                doc_tokens: None,
            },
            &NoProgress,
        )
        .unwrap();
        let original = Segment::open(&source).unwrap();
        // Delete every document the first queries return first, and every 9th.
        let mut doomed: Vec<String> = answers(&synth.corpus, &original, &Filter::default())
            .iter()
            .flat_map(|hits| hits.iter().take(4).map(|h| h.0.clone()))
            .collect();
        doomed.extend(
            (0..1500)
                .step_by(9)
                .map(|d| original.external_id(d).unwrap().to_string()),
        );
        let outcome = original.delete(&doomed).unwrap();
        assert!(outcome.unknown.is_empty(), "{:?}", outcome.unknown);
        let deleted = original.tombstones().len();
        let expected = answers(&synth.corpus, &original, &Filter::default());
        let expected_filtered = answers(&synth.corpus, &original, &filter);

        let out = synth.dir.path().join(format!("compacted-{}", codec.name()));
        let summary = compact(&source, &out, false, &NoProgress).unwrap();
        assert_eq!(summary.dropped, deleted);
        assert_eq!(summary.kept, 1500 - deleted);
        let compacted = Segment::open(&out).unwrap();
        assert_eq!(compacted.doc_count() as u64, 1500 - deleted);
        assert_eq!(compacted.tombstones().len(), 0);
        assert!(compacted.manifest().approx.is_some());
        assert!(compacted
            .manifest()
            .build_parameters
            .contains_key("compacted_from"));
        assert_eq!(
            answers(&synth.corpus, &compacted, &Filter::default()),
            expected,
            "{codec:?}"
        );
        assert_eq!(
            answers(&synth.corpus, &compacted, &filter),
            expected_filtered,
            "{codec:?}"
        );
        // The approximate first stage was rebuilt and never returns a dropped document.
        let knobs = compacted.default_first_stage();
        for q in queries(&synth.corpus, &compacted, &Filter::default()) {
            for hit in compacted.first_stage(&q, 30, &knobs).unwrap() {
                let id = compacted.external_id(hit.id).unwrap();
                assert!(original
                    .doc_by_id(id)
                    .is_some_and(|d| !original.tombstones().current().contains(d)));
            }
        }
        // Refused while there is nothing to refuse, and in place.
        drop(original);
        let err = compact(&source, &out, false, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists"), "{err}");
        let summary = compact(&source, &source, false, &NoProgress).unwrap();
        assert_eq!(summary.dir, source);
        let in_place = Segment::open(&source).unwrap();
        assert_eq!(in_place.doc_count() as u64, 1500 - deleted);
        assert_eq!(in_place.tombstones().len(), 0);
        assert_eq!(
            answers(&synth.corpus, &in_place, &Filter::default()),
            expected
        );
    }
}
