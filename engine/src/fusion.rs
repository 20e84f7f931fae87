//! Fusion of the two scores of a reranked candidate: MaxSim and the first-stage sparse score.
//!
//! Both scores carry evidence, on different scales, so each is first normalised over the
//! candidates of one query, then combined as `norm(MaxSim) + w · norm(sparse)`:
//!
//! - [`FusionMethod::ZScore`]: `(x − mean) / std` (population standard deviation);
//! - [`FusionMethod::MinMax`]: `(x − min) / (max − min)`;
//! - [`FusionMethod::Rrf`]: reciprocal rank fusion, `1 / (k + rank)` with 1-based ranks (ties
//!   share the better rank), which ignores the score values altogether.
//!
//! A score that does not vary over the candidates (a single candidate, or all equal) normalises
//! to 0 for every candidate under z-score and min–max. `w = 0` is MaxSim alone: the pipeline then
//! skips fusion entirely, so its results are bit-for-bit those of plain MaxSim reranking.

use crate::error::{Error, Result};

/// How the two scores are normalised before they are added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FusionMethod {
    /// Per-query z-scores.
    ZScore,
    /// Per-query min–max scaling to [0, 1].
    MinMax,
    /// Reciprocal rank fusion with constant `k` (> 0; 60 is customary).
    Rrf {
        /// The rank offset: larger values flatten the difference between top ranks.
        k: f32,
    },
}

impl FusionMethod {
    /// The name used on command lines and in reports (`zscore`, `minmax`, `rrf`).
    pub const fn name(self) -> &'static str {
        match self {
            FusionMethod::ZScore => "zscore",
            FusionMethod::MinMax => "minmax",
            FusionMethod::Rrf { .. } => "rrf",
        }
    }

    /// The method called `name` (see [`FusionMethod::name`]); `rrf_k` is the constant of `rrf`.
    pub fn from_name(name: &str, rrf_k: f32) -> Option<FusionMethod> {
        match name {
            "zscore" => Some(FusionMethod::ZScore),
            "minmax" => Some(FusionMethod::MinMax),
            "rrf" => Some(FusionMethod::Rrf { k: rrf_k }),
            _ => None,
        }
    }
}

/// The customary RRF constant (Cormack, Clarke and Büttcher, SIGIR 2009).
pub const DEFAULT_RRF_K: f32 = 60.0;

/// Largest fusion weight: the sparse term then dwarfs MaxSim already (MaxSim only breaks ties), and
/// fused scores stay finite.
pub const MAX_FUSION_WEIGHT: f32 = 1e6;

/// A fusion method and the weight of the sparse score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// The normalisation.
    pub method: FusionMethod,
    /// Weight of the normalised sparse score, in [0, [`MAX_FUSION_WEIGHT`]]; 0 is MaxSim alone.
    pub weight: f32,
}

impl Fusion {
    /// MaxSim alone (weight 0).
    pub const NONE: Fusion = Fusion {
        method: FusionMethod::ZScore,
        weight: 0.0,
    };

    /// The tuned default: z-scores with weight 0.2, chosen by `tandem-bench fusion` on the
    /// scifact eval set (see the README's "Fusion" section for the sweep and its stability).
    pub const DEFAULT: Fusion = Fusion {
        method: FusionMethod::ZScore,
        weight: 0.2,
    };

    /// Whether this fusion changes anything (weight > 0).
    pub fn is_active(&self) -> bool {
        self.weight > 0.0
    }

    /// Checks the weight and the RRF constant, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if !(self.weight.is_finite() && self.weight >= 0.0) {
            return Err(Error::invalid(
                "fusion_weight",
                format!("{} must be finite and >= 0", self.weight),
            ));
        }
        if self.weight > MAX_FUSION_WEIGHT {
            return Err(Error::invalid(
                "fusion_weight",
                format!(
                    "{:e} exceeds the limit of {MAX_FUSION_WEIGHT:e}",
                    self.weight
                ),
            ));
        }
        if let FusionMethod::Rrf { k } = self.method {
            if !(k.is_finite() && k > 0.0) {
                return Err(Error::invalid(
                    "rrf_k",
                    format!("{k} must be finite and > 0"),
                ));
            }
        }
        Ok(())
    }

    /// The fused score of every candidate: `maxsim[i]` and `sparse[i]` are candidate `i`'s two
    /// scores (the slices have equal lengths).
    pub fn fuse(&self, maxsim: &[f32], sparse: &[f32]) -> Vec<f32> {
        debug_assert_eq!(maxsim.len(), sparse.len());
        let (a, b) = match self.method {
            FusionMethod::ZScore => (zscores(maxsim), zscores(sparse)),
            FusionMethod::MinMax => (minmax(maxsim), minmax(sparse)),
            FusionMethod::Rrf { k } => (reciprocal_ranks(maxsim, k), reciprocal_ranks(sparse, k)),
        };
        a.iter().zip(&b).map(|(a, b)| a + self.weight * b).collect()
    }
}

/// `(x − mean) / std` over `values` (in f64, then rounded), all 0 when std is 0.
fn zscores(values: &[f32]) -> Vec<f32> {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = variance.sqrt();
    values
        .iter()
        .map(|&v| {
            if std > 0.0 {
                ((f64::from(v) - mean) / std) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// `(x − min) / (max − min)` over `values`, all 0 when max = min.
fn minmax(values: &[f32]) -> Vec<f32> {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = f64::from(hi) - f64::from(lo);
    values
        .iter()
        .map(|&v| {
            if span > 0.0 {
                ((f64::from(v) - f64::from(lo)) / span) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// `1 / (k + rank)` of every value, rank 1 for the largest; equal values share the better rank.
fn reciprocal_ranks(values: &[f32], k: f32) -> Vec<f32> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut out = vec![0.0; values.len()];
    let mut rank = 0usize;
    for (position, &i) in order.iter().enumerate() {
        if position == 0 || values[i] != values[order[position - 1]] {
            rank = position + 1;
        }
        out[i] = (1.0 / (f64::from(k) + rank as f64)) as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((f64::from(*x) - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn zscore_fusion_matches_the_formula() {
        let maxsim = [10.0, 12.0, 14.0];
        let sparse = [3.0, 1.0, 2.0];
        let fused = Fusion {
            method: FusionMethod::ZScore,
            weight: 0.5,
        }
        .fuse(&maxsim, &sparse);
        // maxsim: mean 12, std sqrt(8/3); sparse: mean 2, std sqrt(2/3).
        let (sm, ss) = ((8.0f64 / 3.0).sqrt(), (2.0f64 / 3.0).sqrt());
        close(
            &fused,
            &[-2.0 / sm + 0.5 * (1.0 / ss), 0.5 * (-1.0 / ss), 2.0 / sm],
        );
    }

    #[test]
    fn minmax_fusion_matches_the_formula() {
        let fused = Fusion {
            method: FusionMethod::MinMax,
            weight: 2.0,
        }
        .fuse(&[1.0, 3.0, 2.0], &[0.0, 10.0, 5.0]);
        close(&fused, &[0.0, 1.0 + 2.0, 0.5 + 2.0 * 0.5]);
    }

    #[test]
    fn rrf_uses_ranks_and_ties_share_the_better_rank() {
        let fused = Fusion {
            method: FusionMethod::Rrf { k: 60.0 },
            weight: 1.0,
        }
        .fuse(&[5.0, 7.0, 5.0], &[1.0, 2.0, 3.0]);
        let r = |rank: f64| 1.0 / (60.0 + rank);
        close(&fused, &[r(2.0) + r(3.0), r(1.0) + r(2.0), r(2.0) + r(1.0)]);
    }

    #[test]
    fn constant_scores_normalise_to_zero() {
        // MaxSim is constant, so only the sparse term remains: z-scores of [1, 3] are [−1, 1],
        // min–max values [0, 1].
        for (method, expected) in [
            (FusionMethod::ZScore, [-1.0, 1.0]),
            (FusionMethod::MinMax, [0.0, 1.0]),
        ] {
            let fusion = Fusion {
                method,
                weight: 1.0,
            };
            assert_eq!(fusion.fuse(&[4.0, 4.0], &[1.0, 3.0]), expected);
            assert_eq!(fusion.fuse(&[4.0], &[1.0]), vec![0.0]);
        }
    }

    #[test]
    fn invalid_weights_and_rrf_constants_are_named() {
        for weight in [-0.1, f32::NAN, f32::INFINITY, 2.0 * MAX_FUSION_WEIGHT] {
            let err = Fusion {
                method: FusionMethod::ZScore,
                weight,
            }
            .validate()
            .unwrap_err();
            assert!(err.to_string().contains("fusion_weight"), "{err}");
        }
        for k in [0.0, -1.0, f32::NAN] {
            let err = Fusion {
                method: FusionMethod::Rrf { k },
                weight: 1.0,
            }
            .validate()
            .unwrap_err();
            assert!(err.to_string().contains("rrf_k"), "{err}");
        }
        assert!(Fusion::NONE.validate().is_ok());
        assert!(!Fusion::NONE.is_active());
    }
}
