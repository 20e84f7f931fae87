//! Which kernels ran on this CPU: every SIMD level the CPU supports must have had its kernels
//! compared with the scalar reference.
//!
//! The other kernel tests loop over [`KernelKind::available`], so a kernel that detection wrongly
//! reported unavailable (or that a `cfg` compiled out) would pass them untested. This test asks the
//! CPU for its features itself, runs every supported level's kernels (f16 MaxSim, int8 MaxSim,
//! nearest centroid) against the scalar reference on shapes that reach each kernel's tails and
//! tiles, prints which kernels ran (`cargo test -p tandem-engine kernels -- --nocapture` shows it),
//! and fails if the CPU supports a level whose kernels did not run.

use super::tests::Rng;
use super::*;

/// Whether this CPU has the instructions kernel `kind` needs, asked of the CPU directly rather
/// than through [`KernelKind::is_available`]. The match names every kind, so a new kind does not
/// compile until this says how the CPU reports it.
fn cpu_supports(kind: KernelKind) -> bool {
    match kind {
        KernelKind::Scalar => true,
        KernelKind::Avx2 => {
            #[cfg(target_arch = "x86_64")]
            let supported = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            #[cfg(not(target_arch = "x86_64"))]
            let supported = false;
            supported
        }
        KernelKind::Avx512 => {
            #[cfg(target_arch = "x86_64")]
            let supported = is_x86_feature_detected!("avx512f");
            #[cfg(not(target_arch = "x86_64"))]
            let supported = false;
            supported
        }
        KernelKind::Neon => {
            #[cfg(target_arch = "aarch64")]
            let supported = std::arch::is_aarch64_feature_detected!("neon");
            #[cfg(not(target_arch = "aarch64"))]
            let supported = false;
            supported
        }
    }
}

/// Runs `kind`'s f16 and int8 MaxSim kernels and its nearest-centroid search against the scalar
/// reference (panicking on a difference beyond the tolerance, or on another centroid).
fn compare_with_reference(kind: KernelKind) {
    let mut rng = Rng(17);
    // One token and one dimension; odd shapes with a tail block; ColBERT's 128 (compiled apart by
    // the AVX-512 kernel) with two query groups; a dimension that takes two passes.
    for (n_q, m, dim) in [(1, 1, 1), (7, 33, 17), (65, 81, 128), (15, 17, 129)] {
        let what = format!("{kind} n_q={n_q} m={m} dim={dim}");
        let query = rng.values(n_q * dim, -1.0, 1.0);
        super::tests::check_kernels(&[kind], &query, &rng.halves(m * dim, -1.0, 1.0), dim, &what);
        let rows = rng.values(m * dim, -1.0, 1.0);
        super::tests_int8::check_kernels(&[kind], &query, &rows, dim, &what);
    }
    for (k, width) in [(1, 1), (17, 3), (256, 8), (100, 9)] {
        let (mut values, mut norms) = (Vec::new(), Vec::new());
        pack_centroids(
            &rng.values(k * width, -1.0, 1.0),
            width,
            &mut values,
            &mut norms,
        );
        for _ in 0..20 {
            let x = rng.values(width, -1.5, 1.5);
            assert_eq!(
                nearest(kind, &x, &values, &norms),
                nearest(KernelKind::Scalar, &x, &values, &norms),
                "{kind}: nearest of {k} centroids of width {width}"
            );
        }
    }
}

fn names(kinds: &[KernelKind]) -> String {
    kinds
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn every_simd_level_of_this_cpu_is_tested() {
    let supported: Vec<KernelKind> = KernelKind::ALL
        .into_iter()
        .filter(|&kind| cpu_supports(kind))
        .collect();
    let mut tested = Vec::new();
    for &kind in &supported {
        // An unavailable kind would panic ("not available on this CPU"); leave it untested, so
        // the assertion below says what is wrong.
        if kind.is_available() {
            compare_with_reference(kind);
            tested.push(kind);
        }
    }
    // Written past libtest's capture (not `println!`), so every `cargo test` run, CI's included,
    // shows which kernels this CPU exercised.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("kernels tested on this CPU: {}\n", names(&tested)).as_bytes(),
    );
    assert_eq!(
        tested,
        supported,
        "this CPU supports {} but only {} ran: detection (`KernelKind::is_available`) or the \
         build lost a kernel, and the other kernel tests skip it",
        names(&supported),
        names(&tested)
    );
    assert_eq!(
        KernelKind::available(),
        supported,
        "the kernel tests loop over `KernelKind::available()`, which must be every level the CPU \
         supports"
    );
}
