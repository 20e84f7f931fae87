//! Parameters shared across the engine's layers: how the approximate first stage is built (kept in
//! the manifest), the knobs its queries use, and which first stage a query runs.
//!
//! A leaf of the engine's layering (see ARCHITECTURE.md, "Engine modules"): the on-disk format
//! records these values, the index reports its defaults in them and the pipeline takes them, so
//! they sit below all of them. [`crate::approx`] and [`crate::pipeline`] re-export them.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Build-time parameters of the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxBuildParams {
    /// Postings kept per term (its heaviest), ≥ 1: the deepest a query can walk.
    pub n_postings: usize,
    /// Documents per cluster at most, for cluster expansion; 0: no clusters (indexes built
    /// before clusters existed read as 0).
    #[serde(default)]
    pub cluster_size: usize,
    /// The pruned lists are in tiers by weight (`approx::build::tier_end`), so a query can walk
    /// a term's heaviest postings only; false for indexes built before tiers, whose queries
    /// walk whole lists. Every build writes tiers.
    #[serde(default)]
    pub tiers: bool,
}

impl Default for ApproxBuildParams {
    fn default() -> Self {
        ApproxBuildParams {
            n_postings: 16_000,
            cluster_size: 64,
            tiers: true,
        }
    }
}

impl ApproxBuildParams {
    /// Checks the parameters, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.n_postings == 0 {
            return Err(Error::bad_input("--n-postings", "must be >= 1"));
        }
        Ok(())
    }
}

/// Everything chosen at build time about the approximate first stage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApproxSettings {
    /// How it is built.
    pub build: ApproxBuildParams,
    /// The knobs queries use unless they set their own (replaced by the calibration's choice
    /// when it chooses).
    pub query_defaults: ApproxQueryParams,
    /// How the build measures the first stage and chooses its defaults.
    pub calibration: CalibrationParams,
    /// Queries (JSONL, the query format of `tandem-bench`) to calibrate with instead of
    /// pseudo-queries made from the documents: a sample of the real queries the index will
    /// serve, kept apart from any set it is evaluated on.
    pub calibration_queries: Option<std::path::PathBuf>,
}

/// The build-time calibration of the approximate first stage (see `build::calibrate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationParams {
    /// Documents used as pseudo-queries; 0 skips the calibration.
    pub queries: usize,
    /// The accuracy@10 the chosen defaults must reach, in (0, 1].
    pub target_accuracy: f32,
    /// Choose the query defaults (else only measure the given ones).
    pub choose_defaults: bool,
}

impl Default for CalibrationParams {
    fn default() -> Self {
        CalibrationParams {
            queries: 300,
            target_accuracy: 0.97,
            choose_defaults: true,
        }
    }
}

impl CalibrationParams {
    /// Checks the parameters, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if !(self.target_accuracy > 0.0 && self.target_accuracy <= 1.0) {
            return Err(Error::bad_input(
                "--target-accuracy",
                format!("must be in (0, 1], got {}", self.target_accuracy),
            ));
        }
        Ok(())
    }
}

/// Query-time knobs of the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxQueryParams {
    /// Query terms walked (the heaviest), ≥ 1.
    pub query_cut: usize,
    /// Postings walked per query term: its heaviest, in whole tiers (1,000, 2,000, 4,000, …,
    /// up to the `n_postings` kept); 0 walks every kept posting (the meaning in indexes built
    /// before tiers, which ignore this knob).
    #[serde(default)]
    pub depth: usize,
    /// Documents rescored exactly (those with the best partial scores), ≥ 1; at least `kappa`
    /// are rescored whatever this says.
    pub rescore: usize,
    /// Clusters expanded: each time, the cluster of the best document found so far whose
    /// cluster was not expanded yet has all its documents scored exactly; 0 turns expansion off
    /// (and an index without clusters ignores it).
    #[serde(default)]
    pub expand: usize,
}

impl Default for ApproxQueryParams {
    fn default() -> Self {
        ApproxQueryParams {
            query_cut: 20,
            depth: 1000,
            rescore: 200,
            expand: 0,
        }
    }
}

impl ApproxQueryParams {
    /// Checks the knobs, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.query_cut == 0 {
            return Err(Error::invalid("query_cut", "must be >= 1"));
        }
        if self.rescore == 0 {
            return Err(Error::invalid("rescore", "must be >= 1"));
        }
        Ok(())
    }
}

/// Which first stage a query runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FirstStage {
    /// Every posting of every query term scored: the reference.
    Exact,
    /// The approximate first stage with these knobs (the index must have one).
    Approx(ApproxQueryParams),
}
