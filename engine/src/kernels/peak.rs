//! The single-core f32 FMA peak of the x86-64 SIMD widths: a benchmark measurement, not a
//! kernel. `tandem-bench rerank` states kernel throughput as a share of it.
//!
//! Safety: the `#[target_feature]` FMA chains are only entered after checking that the CPU has
//! their features; their only other `unsafe` operation is one store into a local array.

use super::KernelKind;

/// Measured single-core f32 FMA throughput (GFLOP/s) of the SIMD width `kind` uses, for
/// expressing kernel throughput as a share of the machine's peak; `None` for kernels without a
/// peak measurement here (scalar, NEON) and for kernels this CPU cannot run. Takes about a tenth
/// of a second.
pub fn fma_peak_gflops(kind: KernelKind) -> Option<f64> {
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 => x86::measure(true, 50),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => x86::measure(false, 50),
        _ => None,
    }
}

/// The FMA chains and their timing.
#[cfg(target_arch = "x86_64")]
mod x86 {
    #![deny(unsafe_op_in_unsafe_fn)]

    use super::KernelKind;
    use core::arch::x86_64::*;

    /// Independent AVX-512 FMA chains: enough to cover the FMA latency × throughput (4 × 2 on
    /// current cores), and with the two operands within the 32 vector registers.
    const CHAINS_512: usize = 20;

    /// Independent AVX2 FMA chains: the same cover within AVX2's 16 vector registers (20
    /// chains spilled to the stack and measured a peak below what the AVX2 kernel reaches).
    const CHAINS_256: usize = 12;

    /// Runs `iters` rounds of [`CHAINS_512`] independent 16-lane FMAs; returns a value depending on all
    /// of them so the work cannot be optimised away.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn fma_chains_avx512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(1.0); CHAINS_512];
        let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm512_set1_ps(std::hint::black_box(1e-7));
        // Rounds of 256 FMAs per chain; the barrier between rounds keeps the compiler from
        // reasoning about the whole loop, and costs little at that distance.
        for _ in 0..std::hint::black_box(iters).div_ceil(256) {
            for _ in 0..256 {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, x, y);
                }
            }
            acc = std::hint::black_box(acc);
        }
        let mut sum = _mm512_setzero_ps();
        for a in acc {
            sum = _mm512_add_ps(sum, a);
        }
        _mm512_reduce_add_ps(sum)
    }

    /// [`fma_chains_avx512`] with [`CHAINS_256`] chains of 8-lane AVX2 FMAs.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_chains_avx2(iters: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); CHAINS_256];
        let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let y = _mm256_set1_ps(std::hint::black_box(1e-7));
        // Rounds of 256 FMAs per chain; the barrier between rounds keeps the compiler from
        // reasoning about the whole loop, and costs little at that distance.
        for _ in 0..std::hint::black_box(iters).div_ceil(256) {
            for _ in 0..256 {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, x, y);
                }
            }
            acc = std::hint::black_box(acc);
        }
        let mut lanes = [0f32; 8];
        let mut sum = _mm256_setzero_ps();
        for a in acc {
            sum = _mm256_add_ps(sum, a);
        }
        // SAFETY: `lanes` holds 8 f32, the width of one unaligned 256-bit store.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }

    /// Flops of one call of the FMA chains with `iters` rounds (rounded up to 256), `chains`
    /// chains and `lanes` lanes.
    fn chain_flops(iters: u64, chains: usize, lanes: usize) -> f64 {
        (iters.div_ceil(256) * 256) as f64 * chains as f64 * lanes as f64 * 2.0
    }

    /// Measured single-core f32 FMA throughput in GFLOP/s of AVX-512 (`wide`) or AVX2, or `None`
    /// when the CPU lacks the features: the best of runs of about 2 ms, `millis` ms in all.
    pub(super) fn measure(wide: bool, millis: u64) -> Option<f64> {
        let kind = if wide {
            KernelKind::Avx512
        } else {
            KernelKind::Avx2
        };
        // The AVX2 kernel's features (AVX2, FMA, F16C) include what the AVX2 chains need.
        if !kind.is_available() {
            return None;
        }
        let run = |iters: u64| {
            let started = std::time::Instant::now();
            let sink = if wide {
                // SAFETY: the AVX-512 kernel is available, so the CPU has AVX-512F.
                unsafe { fma_chains_avx512(iters) }
            } else {
                // SAFETY: the AVX2 kernel is available, so the CPU has AVX2 and FMA.
                unsafe { fma_chains_avx2(iters) }
            };
            std::hint::black_box(sink);
            started.elapsed().as_secs_f64()
        };
        let (chains, lanes) = if wide {
            (CHAINS_512, 16)
        } else {
            (CHAINS_256, 8)
        };
        // Calibrate runs of about 2 ms and keep the best of `millis / 2` (at least five) of them:
        // short runs are likelier to find the core unshared on a busy machine.
        let mut iters = 1u64 << 12;
        while run(iters) < 0.5e-3 && iters < 1 << 34 {
            iters *= 2;
        }
        let runs = (millis / 2).max(5);
        let best = (0..runs).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
        Some(chain_flops(iters, chains, lanes) / best / 1e9)
    }
}
