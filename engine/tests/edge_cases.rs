//! Edge cases of the query path on a tiny hand-made index.

use tandem_data::npy::{write_f32, write_u32};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};

fn tiny_index(dir: &std::path::Path) -> Segment {
    std::fs::write(
        dir.join("docs.jsonl"),
        "{\"id\": \"a\", \"vector\": {\"x\": 0.25, \"y\": 1.0}}\n{\"id\": \"b\", \"vector\": {\"y\": 2.0}}\n",
    )
    .unwrap();
    write_u32(&dir.join("lens.npy"), &[2], &[1, 2]).unwrap();
    write_f32(
        &dir.join("vectors.npy"),
        &[3, 2],
        &[1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
    )
    .unwrap();
    let config = BuildConfig {
        docs: dir.join("docs.jsonl"),
        vectors: dir.join("vectors.npy"),
        lens: dir.join("lens.npy"),
        int8_scale: None,
        vocab: None,
        token_ids: false,
        out: dir.join("index"),
        overwrite: false,
        approx: Some(tandem_engine::approx::ApproxSettings::default()),
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: None,
    };
    build_index(&config, &NoProgress).unwrap();
    Segment::open(&dir.join("index")).unwrap()
}

fn params(rerank: bool) -> SearchParams {
    SearchParams {
        first_stage: FirstStage::Exact,
        k: 5,
        kappa: 5,
        cp_alpha: None,
        ee_beta: None,
        rerank,
        prefetch: false,
        explain: false,
        fusion: tandem_engine::Fusion::NONE,
    }
}

#[test]
fn a_product_that_underflows_to_zero_does_not_duplicate_a_document() {
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_index(dir.path());
    let (x, y) = (index.term_id("x").unwrap(), index.term_id("y").unwrap());
    // 1e-45 × 0.25 underflows to 0 in f32; document "a" is then scored again by "y".
    let query = Query {
        terms: vec![(x, 1e-45), (y, 1.0)],
        vectors: None,
        filter: Default::default(),
    };
    let out = index
        .search(&query, &params(false), &Limits::default())
        .unwrap();
    let docs: Vec<&str> = out
        .hits
        .iter()
        .map(|h| index.external_id(h.doc).unwrap())
        .collect();
    assert_eq!(docs, ["b", "a"]);
    assert_eq!(out.stats.candidates, 2);
}

#[test]
fn maxsim_scores_and_vector_value_limits() {
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_index(dir.path());
    let y = index.term_id("y").unwrap();
    let query = |values: Vec<f32>| Query {
        terms: vec![(y, 1.0)],
        vectors: Some(QueryVectors { values, dim: 2 }),
        filter: Default::default(),
    };
    // Two query tokens: (1, 0) and (0, 1). Doc a = [(1, 0)]: 1 + 0. Doc b = [(0, 1), (0.6, 0.8)]:
    // max(0, 0.6) + max(1, 0.8) = 1.6, with 0.6 as stored in float16.
    let out = index
        .search(
            &query(vec![1.0, 0.0, 0.0, 1.0]),
            &params(true),
            &Limits::default(),
        )
        .unwrap();
    let got: Vec<(&str, f32)> = out
        .hits
        .iter()
        .map(|h| (index.external_id(h.doc).unwrap(), h.maxsim.unwrap()))
        .collect();
    let stored = half::f16::from_f32(0.6).to_f32();
    assert_eq!(got, [("b", stored + 1.0), ("a", 1.0)]);

    let err = index
        .search(
            &query(vec![1e30, -1e30, 1.0, 1.0]),
            &params(true),
            &Limits::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("query.vectors") && err.contains("exceeds"),
        "{err}"
    );
}

#[test]
fn prefetch_is_wanted_until_the_token_files_are_found_resident() {
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_index(dir.path());
    let tokens = index.tokens();
    assert!(tokens.needs_prefetch(), "no residency check yet");
    // Reading every document through the mapping brings all its pages in.
    for doc in 0..index.doc_count() as u32 {
        let vectors = tokens.doc(doc).unwrap();
        assert!(vectors.maxsim(tandem_engine::kernels::detect(), &[1.0, 0.0], 1, 2) > 0.0);
    }
    assert!(tokens.check_residency(), "every page was just read");
    assert!(!tokens.needs_prefetch());
}

#[test]
fn residency_is_reported_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_index(dir.path());
    let files = index.manifest().files.clone();
    // Read every file, so that all of it is in the page cache.
    for name in files.keys() {
        std::fs::read(dir.path().join("index").join(name)).unwrap();
    }
    let resident = index.resident_bytes_by_file();
    let names: Vec<&str> = resident.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, files.keys().map(String::as_str).collect::<Vec<_>>());
    for (name, bytes) in &resident {
        assert_eq!(
            *bytes as u64, files[*name].bytes,
            "{name} is all in the page cache"
        );
    }
}

#[test]
fn attribute_faults_name_the_line_and_old_indexes_have_no_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_index(dir.path());
    assert!(index.attributes().is_none());
    assert!(!dir.path().join("index/attrs.bin").exists());
    std::fs::write(
        dir.path().join("docs.jsonl"),
        "{\"id\": \"a\", \"vector\": {\"x\": 1}, \"attrs\": {\"year\": 2020}}\n{\"id\": \"b\", \"vector\": {\"y\": 2}, \"attrs\": {\"year\": \"2021\"}}\n",
    )
    .unwrap();
    let config = BuildConfig {
        docs: dir.path().join("docs.jsonl"),
        vectors: dir.path().join("vectors.npy"),
        lens: dir.path().join("lens.npy"),
        int8_scale: None,
        vocab: None,
        token_ids: false,
        out: dir.path().join("index2"),
        overwrite: false,
        approx: None,
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: None,
    };
    let err = build_index(&config, &NoProgress).unwrap_err().to_string();
    assert!(
        err.ends_with("docs.jsonl:2: field `attrs`: attribute `year` is string here but integer in earlier documents"),
        "{err}"
    );
    assert!(!config.out.exists());
}

#[test]
fn a_missing_index_directory_is_reported_as_missing_not_corrupt() {
    use std::io::ErrorKind;
    use tandem_engine::Error;
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("no-such-index");
    let err = Segment::open(&missing)
        .err()
        .expect("a missing directory is refused");
    let message = err.to_string();
    assert!(
        matches!(&err, Error::Io { path, error } if *path == missing && error.kind() == ErrorKind::NotFound),
        "{message}"
    );
    assert!(
        message.contains("no-such-index") && message.contains("does not exist"),
        "{message}"
    );
    assert!(
        !message.contains("corrupt") && !message.contains("manifest"),
        "{message}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not an index").unwrap();
    let err = Segment::open(&file).err().expect("a file is refused");
    assert!(
        matches!(&err, Error::Io { error, .. } if error.kind() == ErrorKind::NotADirectory),
        "{err}"
    );
    assert!(err.to_string().contains("is not a directory"), "{err}");

    // A directory without a manifest (an interrupted build) is still a corrupt index.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Segment::open(&empty)
        .err()
        .expect("a directory without manifest is refused");
    assert!(matches!(&err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("no manifest.json"), "{err}");
}
