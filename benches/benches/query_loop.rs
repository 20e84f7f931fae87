//! Criterion benchmark of the query loop on a fixed small synthetic index (5,000 documents,
//! seed 1): the exact and approximate first stages, and a whole two-stage query (with and
//! without explanations).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tandem_data::jsonl::parse_all;
use tandem_data::npy::{row_offsets, NpyArray};
use tandem_data::synth::{generate, SynthConfig};
use tandem_engine::approx::ApproxSettings;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};

fn fixture() -> (tempfile::TempDir, Segment, Vec<Query>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).expect("corpus directory");
    let config = SynthConfig {
        docs: 5000,
        queries: 50,
        seed: 1,
        dim: Some(128),
        tokens_per_doc: 64,
        query_tokens: 32,
    };
    generate(&config, &corpus, &|_| {}).expect("synthetic corpus");
    let out = dir.path().join("index");
    let build = BuildConfig {
        docs: corpus.join("docs.jsonl"),
        vectors: corpus.join("doc_vectors.npy"),
        lens: corpus.join("doc_lens.npy"),
        int8_scale: None,
        vocab: Some(corpus.join("vocab.txt")),
        token_ids: false,
        out: out.clone(),
        overwrite: false,
        approx: Some(ApproxSettings::default()),
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: None,
    };
    build_index(&build, &NoProgress).expect("index build");
    let index = Segment::open(&out).expect("index");
    let text = std::fs::read_to_string(corpus.join("queries.jsonl")).expect("queries");
    let vectors = NpyArray::open(&corpus.join("query_vectors.npy")).expect("query vectors");
    let lens_path = corpus.join("query_lens.npy");
    let lens = NpyArray::open(&lens_path)
        .and_then(|a| a.to_u64_vec())
        .expect("query lens");
    let offsets = row_offsets(&lens, &lens_path).expect("offsets");
    let queries = parse_all(&text, "queries.jsonl")
        .expect("parse")
        .into_iter()
        .zip(offsets.windows(2))
        .map(|(record, range)| {
            let (terms, _) =
                index.resolve_terms(record.terms.iter().map(|(t, w)| (t.as_str(), *w)));
            let mut values = Vec::new();
            vectors
                .rows_f32(range[0] as usize..range[1] as usize, None, &mut values)
                .expect("query vectors");
            Query {
                terms,
                vectors: Some(QueryVectors { values, dim: 128 }),
                filter: Default::default(),
            }
        })
        .collect();
    (dir, index, queries)
}

fn query_loop(c: &mut Criterion) {
    let (_dir, index, queries) = fixture();
    let approx = index.default_first_stage();
    let mut group = c.benchmark_group("query_loop_50_queries");
    group.bench_function("first_stage_exact_k20", |b| {
        b.iter(|| {
            for q in &queries {
                black_box(
                    index
                        .first_stage(q, 20, &FirstStage::Exact)
                        .expect("search"),
                );
            }
        })
    });
    group.bench_function("first_stage_approx_k20", |b| {
        b.iter(|| {
            for q in &queries {
                black_box(index.first_stage(q, 20, &approx).expect("search"));
            }
        })
    });
    let params = SearchParams {
        first_stage: FirstStage::Exact,
        k: 10,
        kappa: 20,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: false,
        explain: false,
        fusion: tandem_engine::Fusion::NONE,
    };
    group.bench_function("two_stage_exact_kappa20", |b| {
        b.iter(|| {
            for q in &queries {
                black_box(
                    index
                        .search(q, &params, &Limits::default())
                        .expect("search"),
                );
            }
        })
    });
    // Explanations at κ = 30: their overhead is (explain − plain) / (plain − first stage),
    // the share of the rerank time (README, "Explaining hits"; `tandem-bench rerank` measures
    // it interleaved on a real corpus).
    group.bench_function("first_stage_exact_k30", |b| {
        b.iter(|| {
            for q in &queries {
                black_box(
                    index
                        .first_stage(q, 30, &FirstStage::Exact)
                        .expect("search"),
                );
            }
        })
    });
    for explain in [false, true] {
        let params = SearchParams {
            kappa: 30,
            explain,
            ..params
        };
        let name = if explain {
            "two_stage_exact_kappa30_explain"
        } else {
            "two_stage_exact_kappa30"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                for q in &queries {
                    black_box(
                        index
                            .search(q, &params, &Limits::default())
                            .expect("search"),
                    );
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, query_loop);
criterion_main!(benches);
