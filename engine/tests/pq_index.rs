//! A `--codec pq` index end to end: the build is reproducible, odd shapes (dim 7, documents of 1,
//! 17 and 40 tokens) load and score, and reranking ranks a document holding the query's own
//! vectors first.

use tandem_data::npy::{write_f32, write_u32};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::tokens::{Codec, DocData};
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};

const DIM: usize = 7;
const LENS: [u32; 4] = [1, 17, 40, 3];

/// Values in [-1, 1) from a fixed linear congruential sequence.
fn values(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn build(dir: &std::path::Path, out: &str) -> Segment {
    let tokens: u32 = LENS.iter().sum();
    let docs: String = (0..LENS.len())
        .map(|d| format!("{{\"id\": \"d{d}\", \"vector\": {{\"w\": 1.0}}}}\n"))
        .collect();
    std::fs::write(dir.join("docs.jsonl"), docs).unwrap();
    write_u32(&dir.join("lens.npy"), &[LENS.len() as u64], &LENS).unwrap();
    write_f32(
        &dir.join("vectors.npy"),
        &[tokens as u64, DIM as u64],
        &values(tokens as usize * DIM),
    )
    .unwrap();
    let config = BuildConfig {
        docs: dir.join("docs.jsonl"),
        vectors: dir.join("vectors.npy"),
        lens: dir.join("lens.npy"),
        int8_scale: None,
        vocab: None,
        token_ids: false,
        out: dir.join(out),
        overwrite: false,
        approx: None,
        codec: Codec::Pq,
        doc_tokens: None,
    };
    build_index(&config, &NoProgress).unwrap();
    Segment::open(&dir.join(out)).unwrap()
}

#[test]
fn a_pq_index_is_reproducible_and_scores_odd_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let index = build(dir.path(), "a");
    let again = build(dir.path(), "b");
    for name in ["pq.codes", "pq.scales", "pq.subspaces", "pq.codebook"] {
        assert_eq!(
            index.manifest().files[name],
            again.manifest().files[name],
            "{name} differs between two builds"
        );
    }
    assert_eq!(index.manifest().vector_codec, "pq");
    // dim 7: 7 one-dimension subspaces, 7 code bytes and a 2-byte scale per token.
    let tokens: usize = LENS.iter().map(|&l| l as usize).sum();
    assert_eq!(index.tokens().vector_bytes(), tokens * (DIM + 2));
    for (d, &len) in LENS.iter().enumerate() {
        let doc = index.tokens().doc(d as u32).unwrap();
        let DocData::Pq(pq) = doc.data else {
            panic!("a pq index");
        };
        assert_eq!(
            (doc.tokens, pq.codes.len(), pq.scales.len()),
            (len as usize, len as usize * DIM, len as usize)
        );
    }

    // The query is document 2's first 5 tokens: document 2 scores highest.
    let all = values(tokens * DIM);
    let start = (LENS[0] + LENS[1]) as usize * DIM;
    let query = Query {
        terms: vec![(index.term_id("w").unwrap(), 1.0)],
        vectors: Some(QueryVectors {
            values: all[start..start + 5 * DIM].to_vec(),
            dim: DIM,
        }),
        filter: Default::default(),
    };
    let params = SearchParams {
        first_stage: FirstStage::Exact,
        k: 4,
        kappa: 4,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: true,
        explain: false,
        fusion: tandem_engine::Fusion::NONE,
    };
    let out = index.search(&query, &params, &Limits::default()).unwrap();
    assert_eq!(out.hits.len(), 4);
    assert_eq!(index.external_id(out.hits[0].doc), Some("d2"));
    assert!(out.hits.iter().all(|h| h.maxsim.is_some()));
}
