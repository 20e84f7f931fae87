//! Document token strings (`--doc-tokens`): build-time validation naming the file and line,
//! lookups by document and position, survival through compaction, and explanations of a
//! first-stage-only query.

use tandem_data::npy::{write_f32, write_u32};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::compact::compact;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Limits, Query, SearchParams, Segment};

/// Three documents of 1, 2 and 3 tokens; returns the build config (doc tokens unset).
fn inputs(dir: &std::path::Path) -> BuildConfig {
    std::fs::write(
        dir.join("docs.jsonl"),
        "{\"id\": \"a\", \"vector\": {\"x\": 0.5}}\n{\"id\": \"b\", \"vector\": {\"x\": 1.0, \"y\": 2.0}}\n{\"id\": \"c\", \"vector\": {\"y\": 1.0}}\n",
    )
    .unwrap();
    write_u32(&dir.join("lens.npy"), &[3], &[1, 2, 3]).unwrap();
    let values: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
    write_f32(&dir.join("vectors.npy"), &[6, 2], &values).unwrap();
    BuildConfig {
        docs: dir.join("docs.jsonl"),
        vectors: dir.join("vectors.npy"),
        lens: dir.join("lens.npy"),
        int8_scale: None,
        vocab: None,
        token_ids: false,
        out: dir.join("index"),
        overwrite: true,
        approx: None,
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: Some(dir.join("tokens.jsonl")),
    }
}

fn build_with(dir: &std::path::Path, tokens: &str) -> tandem_engine::Result<Segment> {
    let config = inputs(dir);
    std::fs::write(dir.join("tokens.jsonl"), tokens).unwrap();
    build_index(&config, &NoProgress)?;
    Segment::open(&config.out)
}

#[test]
fn bad_token_files_are_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.jsonl").display().to_string();
    for (tokens, location, message) in [
        (
            "[\"a\"]\n[\"b\"]\n[\"c\",\"d\",\"e\"]\n",
            format!("{file}:2"),
            "2 token vectors but 1",
        ),
        (
            "[\"a\"]\n{\"no\": 1}\n",
            format!("{file}:2"),
            "not a JSON array of strings",
        ),
        (
            "[\"a\"]\n\n[\"b\",\"c\"]\n",
            file.clone(),
            "2 lines of token strings for 3",
        ),
        (
            "[\"a\"]\n[\"b\",\"c\"]\n[\"c\",\"d\",\"e\"]\n[\"f\"]\n",
            format!("{file}:4"),
            "more lines than the 3 documents",
        ),
    ] {
        let error = build_with(dir.path(), tokens)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains(&location) && error.contains(message),
            "{tokens:?}: {error}"
        );
        assert!(
            !dir.path().join("index").exists(),
            "nothing half-built is left"
        );
    }
}

#[test]
fn strings_are_found_by_document_and_position_and_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let index = build_with(
        dir.path(),
        "[\"the\"]\n[\"the\", \"cat\"]\n[\"sat\", \"the\", \"cat\"]\n",
    )
    .unwrap();
    let text = |index: &Segment, id: &str, pos: u32| {
        index
            .doc_token_text(index.doc_by_id(id).unwrap(), pos)
            .map(str::to_string)
    };
    assert_eq!(text(&index, "b", 1).as_deref(), Some("cat"));
    assert_eq!(text(&index, "c", 0).as_deref(), Some("sat"));
    assert_eq!(text(&index, "c", 3), None, "past the document's tokens");
    assert_eq!(text(&index, "a", 1), None, "past the document's tokens");
    let distinct: Vec<&str> = index.doc_token_strings().unwrap().strings().collect();
    assert_eq!(
        distinct,
        ["the", "cat", "sat"],
        "each distinct string stored once"
    );

    index.delete(&["b"]).unwrap();
    drop(index);
    let out = dir.path().join("compacted");
    compact(&dir.path().join("index"), &out, false, &NoProgress).unwrap();
    let compacted = Segment::open(&out).unwrap();
    assert_eq!(text(&compacted, "a", 0).as_deref(), Some("the"));
    let c: Vec<String> = (0..3).map(|p| text(&compacted, "c", p).unwrap()).collect();
    assert_eq!(c, ["sat", "the", "cat"]);

    // An index built without them has none.
    let mut config = inputs(dir.path());
    config.doc_tokens = None;
    build_index(&config, &NoProgress).unwrap();
    let plain = Segment::open(&config.out).unwrap();
    assert!(plain.doc_token_strings().is_none());
    assert_eq!(text(&plain, "a", 0), None);
}

#[test]
fn a_first_stage_only_explanation_lists_the_shared_terms() {
    let dir = tempfile::tempdir().unwrap();
    let index = build_with(
        dir.path(),
        "[\"a\"]\n[\"b\", \"c\"]\n[\"d\", \"e\", \"f\"]\n",
    )
    .unwrap();
    let (x, y) = (index.term_id("x").unwrap(), index.term_id("y").unwrap());
    let query = Query {
        terms: vec![(x, 3.0), (y, 0.5)],
        ..Query::default()
    };
    let params = SearchParams {
        first_stage: FirstStage::Exact,
        k: 3,
        kappa: 3,
        cp_alpha: None,
        ee_beta: None,
        rerank: false,
        prefetch: false,
        explain: true,
        fusion: tandem_engine::Fusion::NONE,
    };
    let out = index.search(&query, &params, &Limits::default()).unwrap();
    assert_eq!(out.explanations.len(), out.hits.len());
    let b = out
        .hits
        .iter()
        .position(|h| index.external_id(h.doc) == Some("b"))
        .unwrap();
    let e = &out.explanations[b];
    assert!(e.token_matches.is_empty(), "not reranked");
    let terms: Vec<(u32, f32, f32, f32)> = e
        .terms
        .iter()
        .map(|t| (t.term, t.query_weight, t.doc_weight, t.contribution))
        .collect();
    assert_eq!(terms, [(x, 3.0, 1.0, 3.0), (y, 0.5, 2.0, 1.0)]);
    assert_eq!(out.hits[b].sparse_score, 4.0);
    let off = index
        .search(
            &query,
            &SearchParams {
                explain: false,
                ..params
            },
            &Limits::default(),
        )
        .unwrap();
    assert!(off.explanations.is_empty());
    assert_eq!(off.hits, out.hits);
}
