//! Criterion micro-benchmarks of the MaxSim kernels: one query of 32 tokens against a candidate
//! of 80 tokens (the paper's MS MARCO shape) and of 160 tokens (scifact), dim 128, hot; each
//! kernel plain (`maxsim/KERNEL/m`) and tracking each query token's best document token for
//! explanations (`maxsim/KERNEL-matches/m`), so the argmax's cost is read per instruction set.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use std::hint::black_box;
use tandem_engine::kernels::{self, KernelKind, TokenMax};

/// Deterministic values in [-1, 1] (xorshift), enough for timing.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn maxsim(c: &mut Criterion) {
    let (n_q, dim) = (32, 128);
    let query = values(n_q * dim, 7);
    let mut group = c.benchmark_group("maxsim");
    for m in [80, 160] {
        let rows: Vec<f16> = values(m * dim, 11).into_iter().map(f16::from_f32).collect();
        let mut packed = Vec::new();
        kernels::pack_doc(&rows, dim, &mut packed);
        group.throughput(Throughput::Elements((2 * n_q * m * dim) as u64));
        for kind in KernelKind::ALL
            .into_iter()
            .filter(|k| k.is_available() && *k != KernelKind::Scalar)
        {
            group.bench_with_input(BenchmarkId::new(kind.name(), m), &m, |b, &m| {
                b.iter(|| kernels::maxsim(kind, black_box(&query), n_q, dim, black_box(&packed), m))
            });
            let mut matches = vec![
                TokenMax {
                    token: 0,
                    score: 0.0
                };
                n_q
            ];
            let name = format!("{}-matches", kind.name());
            group.bench_with_input(BenchmarkId::new(name, m), &m, |b, &m| {
                b.iter(|| {
                    kernels::maxsim_matches(
                        kind,
                        black_box(&query),
                        n_q,
                        dim,
                        black_box(&packed),
                        m,
                        &mut matches,
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, maxsim);
criterion_main!(benches);
