//! An index split into segments answers exactly as the same documents in one segment: the
//! reference is a one-segment build of the same corpus (`build_index`), the index under test
//! its segmented build (`build_segments`, segments of 97 documents, the first of which has no
//! attributes at all). With the exact first stage, every hit (external id, final, sparse,
//! MaxSim and fused scores, bit for bit) and every explanation agree, with and without
//! fusion, CP/EE, filters (ids, attributes, including one no document of a segment has) and
//! deletes; the approximate first stage stays accurate; the server serves a segmented index
//! (info aggregated, deletes across segments); inconsistent segment lists are refused naming
//! what is wrong.

use std::path::{Path, PathBuf};
use tandem_client::queries::QueryKnobs;
use tandem_client::TandemClient;
use tandem_engine::build::{build_index, build_segments, BuildConfig, NoProgress};
use tandem_engine::compact::compact;
use tandem_engine::filter::Filter;
use tandem_engine::format::segments::{SegmentEntry, SegmentList, FILE as SEGMENTS_FILE};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::tokens::Codec;
use tandem_engine::Index;
use tandem_proto::v1;
use tandem_server::config::ServeOptions;
use tandem_tests::equivalence::{compare, queries, query};
use tandem_tests::{synthetic_index_full, uncalibrated, SyntheticIndex, TestServer};

const DIM: usize = 16;
const DOCS: usize = 500;
const SEGMENT_DOCS: usize = 97;

/// The synthetic corpus with attributes, minus those of the first segment's documents.
fn corpus() -> SyntheticIndex {
    let synth = synthetic_index_full(DOCS, 16, DIM, 23, Some(uncalibrated()), true).unwrap();
    let path = synth.corpus.join("docs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
        if i < SEGMENT_DOCS {
            record.as_object_mut().unwrap().remove("attrs");
        }
        out.push_str(&record.to_string());
        out.push('\n');
    }
    std::fs::write(&path, out).unwrap();
    synth
}

fn config(corpus: &Path, out: PathBuf, codec: Codec) -> BuildConfig {
    BuildConfig {
        docs: corpus.join("docs.jsonl"),
        vectors: corpus.join("doc_vectors.npy"),
        lens: corpus.join("doc_lens.npy"),
        int8_scale: None,
        vocab: None,
        token_ids: false,
        out,
        overwrite: false,
        approx: Some(uncalibrated()),
        codec,
        doc_tokens: None,
    }
}

/// The one-segment and the segmented index of `synth`'s corpus.
fn both(synth: &SyntheticIndex, codec: Codec) -> (PathBuf, PathBuf) {
    let single = synth.dir.path().join(format!("single-{}", codec.name()));
    let split = synth.dir.path().join(format!("split-{}", codec.name()));
    build_index(&config(&synth.corpus, single.clone(), codec), &NoProgress).unwrap();
    let summary = build_segments(
        &config(&synth.corpus, split.clone(), codec),
        SEGMENT_DOCS,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(summary.segments.len(), DOCS.div_ceil(SEGMENT_DOCS));
    (single, split)
}

#[test]
fn a_segmented_index_ranks_exactly_as_one_segment() {
    let synth = corpus();
    let qs = queries(&synth);
    for codec in [Codec::F16, Codec::Pq] {
        let (single_dir, split_dir) = both(&synth, codec);
        let single = Index::open(&single_dir).unwrap();
        let split = Index::open(&split_dir).unwrap();
        assert_eq!(single.segments().len(), 1);
        assert_eq!(split.segments().len(), 6);
        assert!(split.segments()[0].attributes().is_none());
        assert_eq!(
            split.segments()[2].manifest().build_parameters["segment"],
            "documents 194..291 of 500 (--segment-docs 97)"
        );
        assert_eq!(split.doc_count(), single.doc_count());
        assert_eq!(split.vocab_size(), single.vocab_size());
        assert_eq!(split.token_count(), single.token_count());
        assert_eq!(split.posting_count(), single.posting_count());
        assert_eq!(split.attribute_kinds(), single.attribute_kinds());
        assert_eq!(
            tandem_engine::weight_table::idf_table(&split),
            tandem_engine::weight_table::idf_table(&single)
        );
        let ids: Vec<String> = (0..DOCS as u32)
            .map(|d| single.external_id(d).unwrap().to_string())
            .collect();
        for (d, id) in ids.iter().enumerate() {
            assert_eq!(split.external_id(d as u32), Some(id.as_str()));
            assert_eq!(split.doc_by_id(id), Some(d as u32));
        }
        let compared = compare(&single, &split, &qs, &ids);
        println!("{}: {compared} searches identical", codec.name());

        // The same deletes on both (ids spread over every segment), then the same answers.
        let victims: Vec<String> = ids.iter().step_by(7).cloned().collect();
        let mut asked = victims.clone();
        asked.push("no-such-doc".to_string());
        asked.push(victims[3].clone());
        let a = single.delete(&asked).unwrap();
        let b = split.delete(&asked).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.deleted, victims.len() as u64);
        assert_eq!(b.unknown, vec!["no-such-doc".to_string()]);
        assert_eq!(split.live_count(), (DOCS - victims.len()) as u64);
        assert_eq!(
            split.delete(&victims[..2]).unwrap().already_deleted,
            2,
            "deleting again"
        );
        compare(&single, &split, &qs, &ids);
        drop(split);
        // Tombstones persist per segment.
        let reopened = Index::open(&split_dir).unwrap();
        assert_eq!(reopened.live_count(), (DOCS - victims.len()) as u64);
        assert!(reopened
            .segments()
            .iter()
            .all(|s| !s.tombstones().is_empty()));

        // A full merge of the segments writes, file for file, what compacting the one-segment
        // index writes.
        let merged = synth.dir.path().join(format!("merged-{}", codec.name()));
        let compacted = synth.dir.path().join(format!("compacted-{}", codec.name()));
        let m = compact(&split_dir, &merged, false, &NoProgress).unwrap();
        let c = compact(&single_dir, &compacted, false, &NoProgress).unwrap();
        assert_eq!((m.kept, m.dropped), (c.kept, c.dropped));
        let merged = Index::open(&merged).unwrap();
        let compacted = Index::open(&compacted).unwrap();
        assert_eq!(merged.segments().len(), 1);
        assert_eq!(
            merged.primary().manifest().files,
            compacted.primary().manifest().files
        );
        compare(&compacted, &merged, &qs, &ids);
    }
}

#[test]
fn the_approximate_first_stage_stays_accurate_over_segments() {
    let synth = corpus();
    let qs = queries(&synth);
    let (_, split_dir) = both(&synth, Codec::F16);
    let split = Index::open(&split_dir).unwrap();
    let stage = split.default_first_stage();
    assert!(matches!(stage, FirstStage::Approx(_)), "{stage:?}");
    let (mut found, mut wanted) = (0, 0);
    for i in 0..qs.len() {
        let q = query(&split, &qs, i, Filter::default());
        let exact = split.first_stage(&q, 10, &FirstStage::Exact).unwrap();
        let approx = split.first_stage(&q, 10, &stage).unwrap();
        wanted += exact.len();
        found += exact
            .iter()
            .filter(|e| approx.iter().any(|a| a.id == e.id))
            .count();
        for a in &approx {
            let e = exact.iter().find(|e| e.id == a.id);
            if let Some(e) = e {
                // Rescored exactly, summed in the forward index's order.
                let tolerance = 1e-5 * e.score.abs();
                assert!(
                    (e.score - a.score).abs() <= tolerance,
                    "query {i}: real scores"
                );
            }
        }
    }
    let accuracy = found as f64 / wanted as f64;
    println!("approximate first stage over 6 segments: accuracy@10 {accuracy:.3}");
    assert!(accuracy >= 0.95, "accuracy@10 {accuracy}");
}

#[test]
fn inconsistent_segment_lists_are_refused_by_name() {
    let synth = corpus();
    let (single_dir, split_dir) = both(&synth, Codec::F16);
    let list_path = split_dir.join(SEGMENTS_FILE);
    let list = SegmentList::read(&list_path).unwrap();
    let refuse = |entries: Vec<SegmentEntry>, expected: &str| {
        SegmentList::new(entries).write(&split_dir).unwrap();
        let error = Index::open(&split_dir).err().unwrap().to_string();
        assert!(error.contains(expected), "{expected:?} not in {error}");
    };
    let mut wrong_count = list.segments.clone();
    wrong_count[2].doc_count += 1;
    refuse(
        wrong_count,
        "segment seg-000002 has 97 documents, the list says 98",
    );
    let mut missing = list.segments.clone();
    missing[1].name = "seg-000099".into();
    refuse(missing, "seg-000099");

    // A segment of an index with another vocabulary.
    let other = tandem_tests::synthetic_index(50, 2, DIM, 99).unwrap();
    let foreign = split_dir.join("foreign");
    std::fs::rename(&other.index, &foreign).unwrap();
    let mut mixed = list.segments.clone();
    mixed.push(SegmentEntry {
        name: "foreign".into(),
        doc_count: 50,
    });
    refuse(mixed, "their vocabularies must agree");

    // The same documents twice, both live.
    let copy = split_dir.join("copy");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(split_dir.join("seg-000001")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let mut twice = list.segments.clone();
    twice.push(SegmentEntry {
        name: "copy".into(),
        doc_count: SEGMENT_DOCS as u64,
    });
    refuse(twice, "is live in two segments");

    // A damaged list, and a directory that is both a segment and a list.
    list.write(&split_dir).unwrap();
    let text = std::fs::read_to_string(&list_path).unwrap();
    std::fs::write(&list_path, text.replace("seg-000003", "seg-000004")).unwrap();
    let error = Index::open(&split_dir).err().unwrap().to_string();
    assert!(
        error.contains("listed twice") || error.contains("checksum mismatch"),
        "{error}"
    );
    list.write(&split_dir).unwrap();
    Index::open(&split_dir).unwrap();
    std::fs::copy(
        single_dir.join("manifest.json"),
        split_dir.join("manifest.json"),
    )
    .unwrap();
    let error = Index::open(&split_dir).err().unwrap().to_string();
    assert!(
        error.contains("both manifest.json and segments.json"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_a_segmented_index_as_one() {
    let synth = corpus();
    let qs = queries(&synth);
    let (single_dir, split_dir) = both(&synth, Codec::F16);
    let single = TestServer::start(&single_dir, ServeOptions::default())
        .await
        .unwrap();
    let split = TestServer::start(&split_dir, ServeOptions::default())
        .await
        .unwrap();
    let mut a = TandemClient::connect(&single.url).await.unwrap();
    let mut b = TandemClient::connect(&split.url).await.unwrap();

    let info = b.index_info().await.unwrap();
    let reference = a.index_info().await.unwrap();
    assert_eq!(info.doc_count, reference.doc_count);
    assert_eq!(info.token_count, reference.token_count);
    assert_eq!(info.posting_count, reference.posting_count);
    assert_eq!(info.attributes, reference.attributes);
    assert_eq!(reference.segments.len(), 1);
    assert_eq!(reference.segments[0].name, "");
    let names: Vec<&str> = info.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "seg-000000",
            "seg-000001",
            "seg-000002",
            "seg-000003",
            "seg-000004",
            "seg-000005"
        ]
    );
    assert_eq!(
        info.segments.iter().map(|s| s.doc_count).sum::<u64>(),
        DOCS as u64
    );

    let knobs = QueryKnobs {
        k: Some(10),
        kappa: Some(40),
        first_stage: v1::FirstStage::Exact,
        fusion_method: v1::FusionMethod::Zscore,
        fusion_weight: Some(0.5),
        ..QueryKnobs::default()
    };
    let hits = |reply: v1::SearchResponse| -> Vec<(String, u32)> {
        reply
            .hits
            .into_iter()
            .map(|h| (h.doc_id, h.score.to_bits()))
            .collect()
    };
    for i in 0..qs.len() {
        let mut request = qs.request(i, &knobs);
        request.filter = "year >= 2005".to_string();
        let expected = hits(a.search(request.clone()).await.unwrap());
        assert!(!expected.is_empty());
        assert_eq!(
            hits(b.search(request).await.unwrap()),
            expected,
            "query {i}"
        );
    }

    // A delete spanning segments, counted once.
    let reference_index = Index::open(&single_dir).unwrap();
    let ids: Vec<String> = (0..DOCS)
        .step_by(50)
        .map(|d| reference_index.external_id(d as u32).unwrap().to_string())
        .collect();
    let reply = b.delete(ids.clone()).await.unwrap();
    assert_eq!(reply.deleted, ids.len() as u64);
    assert_eq!(reply.live_count, (DOCS - ids.len()) as u64);
    let info = b.index_info().await.unwrap();
    assert_eq!(info.deleted_count, ids.len() as u64);
    // Documents 0, 50, …, 450 over segments of 97: two in each but the last.
    let per_segment: Vec<u64> = info.segments.iter().map(|s| s.deleted_count).collect();
    assert_eq!(per_segment, [2, 2, 2, 2, 2, 0]);
    single.stop().await.unwrap();
    split.stop().await.unwrap();
}
