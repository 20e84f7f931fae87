//! Tests of the nearest-centroid search: every kernel available on the running CPU returns the
//! index the portable loop returns (bit-identical scores), which is the brute-force nearest up to
//! f32 rounding, with ties to the lowest index.

use super::tests::Rng;
use super::*;

fn packed(rows: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut values, mut norms) = (Vec::new(), Vec::new());
    pack_centroids(rows, width, &mut values, &mut norms);
    (values, norms)
}

fn distance2(x: &[f32], c: &[f32]) -> f64 {
    x.iter()
        .zip(c)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

#[test]
fn pack_centroids_layout_and_padding() {
    let rows: Vec<f32> = (0..17 * 3).map(|v| v as f32).collect();
    let (values, norms) = packed(&rows, 3);
    assert_eq!((values.len(), norms.len()), (32 * 3, 32));
    for c in 0..17 {
        for d in 0..3 {
            assert_eq!(values[packed_index(c, d, 3)], rows[c * 3 + d]);
        }
        let row = &rows[c * 3..c * 3 + 3];
        assert_eq!(norms[c], row.iter().map(|v| v * v).sum::<f32>() / 2.0);
    }
    assert!(norms[17..].iter().all(|&n| n == f32::INFINITY));
    for c in 17..32 {
        assert!((0..3).all(|d| values[packed_index(c, d, 3)] == 0.0));
    }
}

#[test]
fn every_kernel_finds_the_same_nearest_centroid() {
    let mut rng = Rng(21);
    for width in [1, 2, 3, 4, 5, 7, 8, 9, 16] {
        for k in [1, 2, 15, 16, 17, 100, 256] {
            let rows = rng.values(k * width, -1.0, 1.0);
            let (values, norms) = packed(&rows, width);
            for _ in 0..50 {
                let x = rng.values(width, -1.5, 1.5);
                let expected = nearest(KernelKind::Scalar, &x, &values, &norms);
                assert!(expected < k);
                let best = (0..k)
                    .map(|c| distance2(&x, &rows[c * width..(c + 1) * width]))
                    .fold(f64::INFINITY, f64::min);
                let got = distance2(&x, &rows[expected * width..(expected + 1) * width]);
                assert!(got <= best + 1e-5, "width {width} k {k}: {got} vs {best}");
                for kind in KernelKind::available() {
                    assert_eq!(
                        nearest(kind, &x, &values, &norms),
                        expected,
                        "{kind} width {width} k {k}"
                    );
                }
            }
        }
    }
}

#[test]
fn ties_and_unusable_queries_go_to_the_lowest_index() {
    // Centroid 3 repeats centroid 1, and 20 repeats it again in the second group.
    let mut rows = vec![5.0f32; 40 * 2];
    for c in [1, 3, 20] {
        rows[c * 2..c * 2 + 2].copy_from_slice(&[0.5, -0.5]);
    }
    let (values, norms) = packed(&rows, 2);
    for kind in KernelKind::available() {
        assert_eq!(nearest(kind, &[0.5, -0.4], &values, &norms), 1, "{kind}");
        assert_eq!(
            nearest(kind, &[f32::NAN, 0.0], &values, &norms),
            0,
            "{kind}"
        );
    }
}

#[test]
#[should_panic(expected = "whole groups")]
fn nearest_checks_shapes() {
    let (values, norms) = packed(&[1.0, 2.0, 3.0, 4.0], 2);
    nearest(KernelKind::Scalar, &[1.0, 2.0, 3.0], &values, &norms);
}
