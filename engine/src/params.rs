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
    /// Postings kept per term (its heaviest), ≥ 1.
    pub n_postings: usize,
}

impl Default for ApproxBuildParams {
    fn default() -> Self {
        ApproxBuildParams { n_postings: 1000 }
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
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ApproxSettings {
    /// How it is built.
    pub build: ApproxBuildParams,
    /// The knobs queries use unless they set their own.
    pub query_defaults: ApproxQueryParams,
}

/// Query-time knobs of the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxQueryParams {
    /// Query terms walked (the heaviest), ≥ 1.
    pub query_cut: usize,
    /// Documents rescored exactly (those with the best partial scores), ≥ 1; at least `kappa`
    /// are rescored whatever this says.
    pub rescore: usize,
}

impl Default for ApproxQueryParams {
    fn default() -> Self {
        ApproxQueryParams {
            query_cut: 20,
            rescore: 200,
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
