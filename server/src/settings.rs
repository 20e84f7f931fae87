//! The server's configuration: command-line flags, `TANDEM_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//!
//! Every setting is optional at each level; [`Settings::merge`] keeps the first one given, and
//! [`Settings::resolve`] fills in the defaults (those of [`ServeOptions::default`]) and checks
//! the result, naming the bad setting and where its value came from ([`Origin`]). The TOML file
//! uses the flag names as keys, e.g. `default-kappa = 50`, `default-cp-alpha = "off"`, `workers =
//! 2`, `skip-checksums = true` (unknown keys are an error). A boolean setting takes an optional
//! value on the command line (`--skip-checksums`, `--skip-checksums=false`) and `true`/`false`
//! (or `1`/`0`, `yes`/`no`, `on`/`off`) in its environment variable, so a later source can turn
//! off what an earlier one turned on; a flag given twice takes its last value. Tokens are never a flag (command lines are visible to
//! other users): search tokens come from `--auth-tokens-file` or the `TANDEM_AUTH_TOKENS`
//! variable, admin tokens from `--admin-tokens-file` or `TANDEM_ADMIN_TOKENS` ([`EnvTokens`]).

use crate::auth::Tokens;
use crate::config::{Checksums, ServeOptions, TlsFiles, WriteOptions};
use crate::encode::EncoderSettings;
use anyhow::Context;
use clap::parser::ValueSource;
use clap::ValueEnum;
use clap::{CommandFactory, FromArgMatches};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tandem_engine::{Fusion, FusionMethod, Limits};

/// A knob that can be switched off: `off` or a value (on the command line and in TOML, where a
/// number may also be written bare).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch<T> {
    /// Disabled.
    Off,
    /// Enabled with this value.
    On(T),
}

impl<T> Switch<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Switch::Off => None,
            Switch::On(v) => Some(v),
        }
    }
}

impl<T: std::str::FromStr> std::str::FromStr for Switch<T> {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        tandem_engine::pipeline::parse_off(value).map(|v| v.map_or(Switch::Off, Switch::On))
    }
}

impl<'de, T: Deserialize<'de> + std::str::FromStr> Deserialize<'de> for Switch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Value(T),
            Text(String),
        }
        match Raw::<T>::deserialize(deserializer)? {
            Raw::Value(v) => Ok(Switch::On(v)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Every setting of `tandem-server` (see the module docs for where each can come from).
#[derive(Debug, Default, clap::Parser, Deserialize)]
#[command(
    name = "tandem-server",
    version,
    about = "Serve a tandem index over gRPC.",
    args_override_self = true
)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Read settings from this TOML file (keys are the flag names; flags and environment
    /// variables override it).
    #[arg(long, env = "TANDEM_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where each setting given came from, by flag (filled by [`Settings::from_args`] and
    /// [`Settings::from_file`], kept by [`Settings::merge`]; a setting missing here is described
    /// as the default).
    #[arg(skip)]
    #[serde(skip)]
    pub origins: BTreeMap<String, Origin>,
    /// The index directory to serve (built by `tandem-index build`).
    #[arg(long, env = "TANDEM_INDEX")]
    pub index: Option<PathBuf>,
    /// gRPC address to listen on [default: 127.0.0.1:50051].
    #[arg(long, env = "TANDEM_LISTEN")]
    pub listen: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given).
    #[arg(long, env = "TANDEM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Serve tandem.v1.Admin (Delete, ReloadIndex), with health, on this address only; --listen
    /// then refuses Admin calls (off unless given: Admin is served on --listen).
    #[arg(long, env = "TANDEM_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Serve a demo index (built on first start under --demo-dir) and run a few queries on it.
    #[arg(long, env = "TANDEM_DEMO", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL", value_parser = boolish())]
    pub demo: Option<bool>,
    /// Where the demo index (and a synthetic corpus, if needed) are kept [default:
    /// target/tandem-demo].
    #[arg(long, env = "TANDEM_DEMO_DIR")]
    pub demo_dir: Option<PathBuf>,
    /// The scifact eval set the demo uses when present [default: ../shared/evalsets/scifact].
    #[arg(long, env = "TANDEM_DEMO_EVALSET")]
    pub demo_evalset: Option<PathBuf>,
    /// When the checksums of every file of a loaded or reloaded index are recomputed: `full`
    /// before serving it (reads every byte first: minutes for a large index), `background`
    /// after serving it (the open checks headers, sizes and invariants; a mismatch found later
    /// takes the index out of service: health NOT_SERVING, searches UNAVAILABLE), or `off`
    /// [default: background].
    #[arg(long, env = "TANDEM_VERIFY", value_enum)]
    pub verify: Option<Checksums>,
    /// Never recompute file checksums (sizes and invariants are still checked): `--verify off`.
    #[arg(long, env = "TANDEM_SKIP_CHECKSUMS", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL", value_parser = boolish())]
    pub skip_checksums: Option<bool>,
    /// k when a request does not set it [default: 10].
    #[arg(long, env = "TANDEM_DEFAULT_K")]
    pub default_k: Option<usize>,
    /// kappa when a request does not set it (at least k) [default: 30].
    #[arg(long, env = "TANDEM_DEFAULT_KAPPA")]
    pub default_kappa: Option<usize>,
    /// CP(α) when a request does not set cp_alpha: a number in [0, 1], or `off` [default: off].
    #[arg(long, env = "TANDEM_DEFAULT_CP_ALPHA")]
    pub default_cp_alpha: Option<Switch<f32>>,
    /// EE(β) when a request does not set ee_beta: a number >= 1, or `off` [default: off].
    #[arg(long, env = "TANDEM_DEFAULT_EE_BETA")]
    pub default_ee_beta: Option<Switch<usize>>,
    /// Fusion method when a request does not set one: zscore, minmax or rrf [default: zscore].
    #[arg(long, env = "TANDEM_DEFAULT_FUSION_METHOD", value_parser = ["zscore", "minmax", "rrf"])]
    pub default_fusion_method: Option<String>,
    /// Weight of the sparse score in the fused score when a request does not set one (0: MaxSim
    /// alone) [default: 0.2, from `tandem-bench fusion` on scifact; see the README].
    #[arg(long, env = "TANDEM_DEFAULT_FUSION_WEIGHT")]
    pub default_fusion_weight: Option<f32>,
    /// RRF constant k when a request uses RRF without one [default: 60].
    #[arg(long, env = "TANDEM_DEFAULT_RRF_K")]
    pub default_rrf_k: Option<f32>,
    /// Largest k a request may ask for [default: 1000].
    #[arg(long, env = "TANDEM_MAX_K")]
    pub max_k: Option<usize>,
    /// Largest kappa a request may ask for [default: 10000].
    #[arg(long, env = "TANDEM_MAX_KAPPA")]
    pub max_kappa: Option<usize>,
    /// Most sparse terms in a query [default: 4096].
    #[arg(long, env = "TANDEM_MAX_QUERY_TERMS")]
    pub max_query_terms: Option<usize>,
    /// Most token vectors in a query [default: 1024].
    #[arg(long, env = "TANDEM_MAX_QUERY_TOKENS")]
    pub max_query_tokens: Option<usize>,
    /// Most queries in one SearchBatch call [default: 1024].
    #[arg(long, env = "TANDEM_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Most ids in one Delete call; more is RESOURCE_EXHAUSTED [default: 100000].
    #[arg(long, env = "TANDEM_MAX_DELETE_IDS")]
    pub max_delete_ids: Option<usize>,
    /// Refuse writes (Upsert, Delete) with FAILED_PRECONDITION, and serve a segmented index's
    /// sealed segments without replaying its write-ahead log (nothing in the directory is
    /// changed).
    #[arg(long, env = "TANDEM_READ_ONLY", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL", value_parser = boolish())]
    pub read_only: Option<bool>,
    /// Seconds between refreshes of a writable index: writes become searchable within it
    /// [default: 1].
    #[arg(long, env = "TANDEM_REFRESH_INTERVAL")]
    pub refresh_interval: Option<f64>,
    /// Seal the refresh segments of a writable index into a sealed segment once they hold this
    /// many documents [default: 100000].
    #[arg(long, env = "TANDEM_SEAL_DOCS")]
    pub seal_docs: Option<u64>,
    /// … or this many bytes of stored token vectors [default: 1073741824].
    #[arg(long, env = "TANDEM_SEAL_BYTES")]
    pub seal_bytes: Option<u64>,
    /// Most documents in one Upsert batch; more is RESOURCE_EXHAUSTED [default: 10000].
    #[arg(long, env = "TANDEM_MAX_UPSERT_DOCS")]
    pub max_upsert_docs: Option<usize>,
    /// Largest gRPC request message, bytes [default: 33554432].
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Do not read each query's candidates' token vectors ahead before reranking. Prefetch is
    /// on by default while some page of the token files is not in memory (checked every 5 s):
    /// ~100× faster reranking of cold candidates; skipped while every page is in memory, where
    /// its system call per candidate would only cost time.
    #[arg(long, env = "TANDEM_NO_PREFETCH", num_args = 0..=1, require_equals = true,
        default_missing_value = "true", value_name = "BOOL", value_parser = boolish())]
    pub no_prefetch: Option<bool>,
    /// Worker threads running queries [default: the number of cores].
    #[arg(long, env = "TANDEM_WORKERS")]
    pub workers: Option<usize>,
    /// Queries that may wait for a worker; beyond it calls get RESOURCE_EXHAUSTED at once
    /// [default: 256].
    #[arg(long, env = "TANDEM_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// SearchStream calls open at once [default: 64].
    #[arg(long, env = "TANDEM_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Queries of one SearchStream in flight at once [default: 16].
    #[arg(long, env = "TANDEM_STREAM_WINDOW")]
    pub stream_window: Option<usize>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "TANDEM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TANDEM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Search tokens: require `authorization: Bearer <token>` with one of the tokens in this
    /// file (one per line) on Search and reflection calls. TANDEM_AUTH_TOKENS (comma-separated)
    /// adds more. With search tokens but no admin token, Admin calls are refused.
    #[arg(long, env = "TANDEM_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Admin tokens: one of the tokens in this file (one per line) grants Admin calls (Delete,
    /// ReloadIndex) and search. TANDEM_ADMIN_TOKENS (comma-separated) adds more. A search token
    /// on an Admin call is PERMISSION_DENIED.
    #[arg(long, env = "TANDEM_ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// ReloadIndex loads only directories under this one, once symlinks are resolved (a relative
    /// path is taken from it); --index must be under it [default: the parent directory of
    /// --index].
    #[arg(long, env = "TANDEM_INDEX_ROOT")]
    pub index_root: Option<PathBuf>,
    /// Encode the sparse half of text queries with this BertForMaskedLM directory
    /// (config.json, model.safetensors, tokenizer.json), SPLADE-style.
    #[arg(long, env = "TANDEM_SPARSE_MODEL", conflicts_with = "sparse_table")]
    pub sparse_model: Option<PathBuf>,
    /// Encode the sparse half of text queries inference-free with this per-token weight table
    /// (JSON {"token": weight}, or a 1-D .npy by token id; e.g. from `tandem-index
    /// weight-table`).
    #[arg(long, env = "TANDEM_SPARSE_TABLE")]
    pub sparse_table: Option<PathBuf>,
    /// The tokenizer of --sparse-table (a tokenizer.json, or a directory holding one)
    /// [default: --vector-model's].
    #[arg(long, env = "TANDEM_SPARSE_TOKENIZER")]
    pub sparse_tokenizer: Option<PathBuf>,
    /// Encode the token vectors of text queries with this BERT directory (config.json,
    /// model.safetensors, tokenizer.json): its last hidden states, L2-normalised.
    #[arg(long, env = "TANDEM_VECTOR_MODEL")]
    pub vector_model: Option<PathBuf>,
    /// Project the token vectors first: subtract this mean (a [hidden] float .npy) ...
    #[arg(
        long,
        env = "TANDEM_VECTOR_PROJECTION_MEAN",
        requires = "vector_projection_matrix"
    )]
    pub vector_projection_mean: Option<PathBuf>,
    /// ... and multiply by this matrix (a [hidden, dim] float .npy).
    #[arg(
        long,
        env = "TANDEM_VECTOR_PROJECTION_MATRIX",
        requires = "vector_projection_mean"
    )]
    pub vector_projection_matrix: Option<PathBuf>,
    /// Truncate query text to this many wordpieces, special tokens included [default: 128].
    #[arg(long, env = "TANDEM_QUERY_MAX_TOKENS")]
    pub query_max_tokens: Option<usize>,
}

/// Keeps `$a.field` if set, else takes `$b.field`, for each listed option field, and the
/// origins of the fields kept.
macro_rules! first_of {
    ($a:ident, $b:ident; $($field:ident),* $(,)?) => {{
        let mut origins = $b.origins;
        origins.extend($a.origins);
        Settings {
            config: $a.config.or($b.config),
            origins,
            $($field: $a.$field.or($b.$field),)*
        }
    }};
}

/// The parser of boolean settings: `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// This environment variable.
    Env(String),
    /// This TOML file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => write!(f, "given on the command line"),
            Origin::Env(name) => write!(f, "given by the environment variable {name}"),
            Origin::File(path) => write!(f, "given in the config file {}", path.display()),
        }
    }
}

/// Tokens given in the environment (never as flags): `TANDEM_AUTH_TOKENS` (search) and
/// `TANDEM_ADMIN_TOKENS` (admin), comma-separated.
#[derive(Debug, Clone, Default)]
pub struct EnvTokens {
    /// The value of `TANDEM_AUTH_TOKENS`.
    pub search: Option<String>,
    /// The value of `TANDEM_ADMIN_TOKENS`.
    pub admin: Option<String>,
}

impl EnvTokens {
    /// The tokens in this process's environment.
    pub fn from_env() -> EnvTokens {
        EnvTokens {
            search: std::env::var("TANDEM_AUTH_TOKENS").ok(),
            admin: std::env::var("TANDEM_ADMIN_TOKENS").ok(),
        }
    }
}

/// Where the server listens and what it serves, besides the query options.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The index directory (`None` with `demo`).
    pub index: Option<PathBuf>,
    /// Serve the demo index instead.
    pub demo: bool,
    /// The demo's working directory.
    pub demo_dir: PathBuf,
    /// The eval set the demo uses when present.
    pub demo_evalset: PathBuf,
    /// gRPC address.
    pub listen: String,
    /// Metrics address.
    pub metrics_listen: Option<String>,
    /// The address serving Admin (and health) alone, when Admin has its own listener.
    pub admin_listen: Option<String>,
    /// Query defaults, limits and transport options.
    pub options: ServeOptions,
}

impl Settings {
    /// The settings of the command line `args` (the program name first) and of the `TANDEM_*`
    /// environment variables, with their origins.
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Settings::command();
        let matches = command.clone().try_get_matches_from(args)?;
        let mut settings = Settings::from_arg_matches(&matches)?;
        for arg in command.get_arguments() {
            let (Some(long), Some(source)) =
                (arg.get_long(), matches.value_source(arg.get_id().as_str()))
            else {
                continue;
            };
            let origin = match source {
                ValueSource::CommandLine => Origin::Flag,
                ValueSource::EnvVariable => Origin::Env(
                    arg.get_env()
                        .map(|name| name.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => continue,
            };
            settings.origins.insert(format!("--{long}"), origin);
        }
        Ok(settings)
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let context = || format!("config file {}", path.display());
        let mut settings: Settings = toml::from_str(&text).with_context(context)?;
        let table: toml::Table = text.parse().with_context(context)?;
        settings.origins = table
            .keys()
            .map(|key| (format!("--{key}"), Origin::File(path.to_path_buf())))
            .collect();
        Ok(settings)
    }

    /// Each setting from `self` when given there, else from `other`.
    pub fn merge(self, other: Settings) -> Settings {
        first_of!(self, other;
            index, listen, metrics_listen, admin_listen, demo, demo_dir, demo_evalset,
            verify, skip_checksums, default_k, default_kappa, default_cp_alpha, default_ee_beta,
            default_fusion_method, default_fusion_weight, default_rrf_k, max_k, max_kappa,
            max_query_terms, max_query_tokens, max_batch, max_delete_ids, max_message_bytes,
            read_only, refresh_interval, seal_docs, seal_bytes, max_upsert_docs,
            no_prefetch, workers, max_queue, max_streams, stream_window, tls_cert, tls_key,
            auth_tokens_file, admin_tokens_file, index_root, sparse_model, sparse_table,
            sparse_tokenizer, vector_model, vector_projection_mean, vector_projection_matrix,
            query_max_tokens)
    }

    /// Fills in the defaults, loads the tokens (the files given and `tokens`, from the
    /// environment) and checks everything, naming the first bad setting and its origin.
    pub fn resolve(mut self, tokens: &EnvTokens) -> anyhow::Result<Resolved> {
        let d = ServeOptions::default();
        let origins = std::mem::take(&mut self.origins);
        let demo = self.demo.unwrap_or(false);
        anyhow::ensure!(
            demo || self.index.is_some(),
            "--index DIR is required (or --demo)"
        );
        anyhow::ensure!(
            !(demo && self.index.is_some()),
            "--index and --demo exclude each other"
        );
        let verify = match (self.skip_checksums, self.verify) {
            (Some(true), Some(v)) if v != Checksums::Off => anyhow::bail!(
                "--skip-checksums and --verify {} contradict each other",
                v.to_possible_value()
                    .map_or_else(String::new, |p| p.get_name().to_string())
            ),
            (Some(true), _) => Checksums::Off,
            (_, Some(v)) => v,
            _ => d.verify,
        };
        let rrf_k = self.default_rrf_k.unwrap_or(d.default_rrf_k);
        let method = match self.default_fusion_method.as_deref() {
            None => d.default_fusion.method,
            Some(name) => FusionMethod::from_name(name, rrf_k).with_context(|| {
                format!("--default-fusion-method: unknown method {name:?} (zscore, minmax, rrf)")
            })?,
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        anyhow::ensure!(
            !(self.sparse_model.is_some() && self.sparse_table.is_some()),
            "--sparse-model and --sparse-table exclude each other (one sparse encoder per server)"
        );
        let vector_projection = match (self.vector_projection_mean, self.vector_projection_matrix) {
            (Some(mean), Some(matrix)) => Some((mean, matrix)),
            (None, None) => None,
            _ => {
                anyhow::bail!("--vector-projection-mean and --vector-projection-matrix go together")
            }
        };
        anyhow::ensure!(
            vector_projection.is_none() || self.vector_model.is_some(),
            "--vector-projection-mean/-matrix need --vector-model"
        );
        anyhow::ensure!(
            self.sparse_tokenizer.is_none() || self.sparse_table.is_some(),
            "--sparse-tokenizer is the tokenizer of --sparse-table, which is not given"
        );
        let encoders = EncoderSettings {
            sparse_model: self.sparse_model,
            sparse_table: self.sparse_table,
            sparse_tokenizer: self.sparse_tokenizer,
            vector_model: self.vector_model,
            vector_projection,
            max_tokens: self.query_max_tokens.unwrap_or(d.encoders.max_tokens),
        };
        let options = ServeOptions {
            default_k: self.default_k.unwrap_or(d.default_k),
            default_kappa: self.default_kappa.unwrap_or(d.default_kappa),
            default_cp_alpha: self
                .default_cp_alpha
                .map_or(d.default_cp_alpha, Switch::into_option),
            default_ee_beta: self
                .default_ee_beta
                .map_or(d.default_ee_beta, Switch::into_option),
            default_fusion: Fusion {
                method,
                weight: self
                    .default_fusion_weight
                    .unwrap_or(d.default_fusion.weight),
            },
            default_rrf_k: rrf_k,
            limits: Limits {
                max_k: self.max_k.unwrap_or(d.limits.max_k),
                max_kappa: self.max_kappa.unwrap_or(d.limits.max_kappa),
                max_query_terms: self.max_query_terms.unwrap_or(d.limits.max_query_terms),
                max_query_tokens: self.max_query_tokens.unwrap_or(d.limits.max_query_tokens),
            },
            max_batch: self.max_batch.unwrap_or(d.max_batch),
            max_message_bytes: self.max_message_bytes.unwrap_or(d.max_message_bytes),
            prefetch: !self.no_prefetch.unwrap_or(false),
            workers: self.workers.unwrap_or(d.workers),
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            max_streams: self.max_streams.unwrap_or(d.max_streams),
            stream_window: self.stream_window.unwrap_or(d.stream_window),
            verify,
            auth: Tokens::load(
                self.auth_tokens_file.as_deref(),
                tokens.search.as_deref(),
                "auth tokens",
            )?,
            admin_auth: Tokens::load(
                self.admin_tokens_file.as_deref(),
                tokens.admin.as_deref(),
                "admin tokens",
            )?,
            index_root: self.index_root,
            max_delete_ids: self.max_delete_ids.unwrap_or(d.max_delete_ids),
            writes: WriteOptions {
                read_only: self.read_only.unwrap_or(d.writes.read_only),
                refresh_interval_s: self.refresh_interval.unwrap_or(d.writes.refresh_interval_s),
                seal_docs: self.seal_docs.unwrap_or(d.writes.seal_docs),
                seal_bytes: self.seal_bytes.unwrap_or(d.writes.seal_bytes),
                max_upsert_docs: self.max_upsert_docs.unwrap_or(d.writes.max_upsert_docs),
            },
            tls,
            encoders,
        };
        options.validate().map_err(|e| {
            let described = std::iter::once(e.setting)
                .chain(e.other)
                .map(|setting| match origins.get(setting) {
                    Some(origin) => format!("{setting} {origin}"),
                    None => format!("{setting} is the default"),
                })
                .collect::<Vec<_>>()
                .join("; ");
            anyhow::anyhow!("invalid configuration: {e} ({described})")
        })?;
        Ok(Resolved {
            index: self.index,
            demo,
            demo_dir: self
                .demo_dir
                .unwrap_or_else(|| PathBuf::from("target/tandem-demo")),
            demo_evalset: self
                .demo_evalset
                .unwrap_or_else(|| PathBuf::from("../shared/evalsets/scifact")),
            listen: self.listen.unwrap_or_else(|| "127.0.0.1:50051".to_string()),
            metrics_listen: self.metrics_listen,
            admin_listen: self.admin_listen,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Settings {
        Settings::from_args(std::iter::once("tandem-server").chain(args.iter().copied())).unwrap()
    }

    fn no_tokens() -> EnvTokens {
        EnvTokens::default()
    }

    #[test]
    fn no_settings_give_the_library_defaults() {
        let resolved = parse(&["--index", "idx"]).resolve(&no_tokens()).unwrap();
        assert_eq!(
            format!("{:?}", resolved.options),
            format!("{:?}", ServeOptions::default())
        );
        assert_eq!(resolved.listen, "127.0.0.1:50051");
        assert!(resolved.metrics_listen.is_none());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: Settings = toml::from_str(
            r#"
            index = "from-file"
            default-kappa = 50
            default-cp-alpha = 0.1
            default-ee-beta = "off"
            default-fusion-method = "rrf"
            workers = 3
            max-queue = 7
            "#,
        )
        .unwrap();
        let flags = parse(&["--default-kappa", "40", "--default-rrf-k", "20"]);
        let tokens = EnvTokens {
            search: Some("t1,t2".into()),
            admin: None,
        };
        let r = flags.merge(file).resolve(&tokens).unwrap();
        assert_eq!(r.index, Some(PathBuf::from("from-file")));
        let o = &r.options;
        assert_eq!(o.default_kappa, 40);
        assert_eq!(o.default_cp_alpha, Some(0.1));
        assert_eq!(o.default_ee_beta, None);
        assert_eq!(o.default_fusion.method, FusionMethod::Rrf { k: 20.0 });
        assert_eq!((o.workers, o.max_queue), (3, 7));
        assert!(o.auth.is_some() && o.admin_auth.is_none());
        assert!(!format!("{o:?}").contains("t1"), "tokens are masked");
    }

    #[test]
    fn encoder_settings_come_from_flags_and_file() {
        let file: Settings = toml::from_str(
            r#"
            index = "i"
            vector-model = "models/minilm"
            vector-projection-mean = "mean.npy"
            vector-projection-matrix = "w.npy"
            sparse-table = "idf.json"
            query-max-tokens = 64
            "#,
        )
        .unwrap();
        let flags = parse(&["--query-max-tokens", "100"]);
        let e = flags
            .merge(file)
            .resolve(&no_tokens())
            .unwrap()
            .options
            .encoders;
        assert_eq!(e.vector_model, Some(PathBuf::from("models/minilm")));
        assert_eq!(
            e.vector_projection,
            Some((PathBuf::from("mean.npy"), PathBuf::from("w.npy")))
        );
        assert_eq!(e.sparse_table, Some(PathBuf::from("idf.json")));
        assert_eq!((e.sparse_model, e.max_tokens), (None, 100));
        let none = parse(&["--index", "i"]).resolve(&no_tokens()).unwrap();
        assert!(!none.options.encoders.any());

        let err = |s: Settings| format!("{:#}", s.resolve(&no_tokens()).unwrap_err());
        let both: Settings =
            toml::from_str("index = \"i\"\nsparse-model = \"m\"\nsparse-table = \"t.json\"")
                .unwrap();
        assert!(err(both).contains("--sparse-model and --sparse-table"));
        let half: Settings =
            toml::from_str("index = \"i\"\nvector-model = \"m\"\nvector-projection-mean = \"a\"")
                .unwrap();
        assert!(err(half).contains("go together"));
        assert!(err(parse(&["--index", "i", "--query-max-tokens", "1"])).contains("max-tokens"));
        assert!(Settings::try_parse_from([
            "tandem-server",
            "--sparse-model",
            "m",
            "--sparse-table",
            "t"
        ])
        .is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let err = |s: Settings| format!("{:#}", s.resolve(&no_tokens()).unwrap_err());
        assert!(err(parse(&[])).contains("--index"));
        assert!(err(parse(&["--index", "i", "--workers", "0"])).contains("--workers = 0"));
        assert!(err(parse(&["--index", "i", "--default-cp-alpha", "2"])).contains("cp-alpha"));
        assert!(Settings::try_parse_from(["tandem-server", "--default-ee-beta", "x"]).is_err());
        let unknown = toml::from_str::<Settings>("wokers = 2").unwrap_err();
        assert!(unknown.to_string().contains("wokers"), "{unknown}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "max-k = \"many\"\n").unwrap();
        let bad = format!("{:#}", Settings::from_file(&path).unwrap_err());
        assert!(
            bad.contains("server.toml") && bad.contains("max-k"),
            "{bad}"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_where_it_came_from() {
        let err = |s: Settings| format!("{:#}", s.resolve(&no_tokens()).unwrap_err());
        let message = err(parse(&["--index", "i", "--stream-window", "0"]));
        assert_eq!(
            message,
            "invalid configuration: --stream-window = 0: must be >= 1 (--stream-window given on \
             the command line)"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(&path, "index = \"i\"\ndefault-k = 50\nmax-delete-ids = 0\n").unwrap();
        let file = Settings::from_file(&path).unwrap();
        let message = err(parse(&["--max-k", "20"]).merge(file));
        assert!(
            message.contains("--default-k = 50 must be <= --max-k = 20")
                && message.contains(&format!(
                    "--default-k given in the config file {}",
                    path.display()
                ))
                && message.contains("--max-k given on the command line"),
            "{message}"
        );
        let file = Settings::from_file(&path).unwrap();
        let message = err(parse(&["--default-k", "5"]).merge(file));
        assert!(
            message.contains("--max-delete-ids = 0: must be >= 1")
                && message.contains("--max-delete-ids given in the config file"),
            "{message}"
        );
        let message = err(parse(&["--index", "i", "--default-k", "2000"]));
        assert!(message.contains("--max-k is the default"), "{message}");
    }

    #[test]
    fn verify_takes_full_background_or_off_and_skip_checksums_is_off() {
        let resolve = |args: &[&str]| parse(args).resolve(&no_tokens()).map(|r| r.options.verify);
        assert_eq!(resolve(&["--index", "i"]).unwrap(), Checksums::Background);
        for (name, mode) in [
            ("full", Checksums::Full),
            ("background", Checksums::Background),
            ("off", Checksums::Off),
        ] {
            assert_eq!(resolve(&["--index", "i", "--verify", name]).unwrap(), mode);
        }
        assert_eq!(
            resolve(&["--index", "i", "--skip-checksums"]).unwrap(),
            Checksums::Off
        );
        let file: Settings = toml::from_str("index = \"i\"\nverify = \"full\"\n").unwrap();
        let from_file = parse(&[]).merge(file).resolve(&no_tokens()).unwrap();
        assert_eq!(from_file.options.verify, Checksums::Full);
        let message = resolve(&["--index", "i", "--skip-checksums", "--verify", "full"])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("--skip-checksums and --verify full"),
            "{message}"
        );
        assert!(Settings::from_args(["tandem-server", "--verify", "sometimes"]).is_err());
    }

    #[test]
    fn booleans_can_be_turned_off_by_a_later_source() {
        let file: Settings =
            toml::from_str("index = \"i\"\nskip-checksums = true\nno-prefetch = true\n").unwrap();
        let on = parse(&[]).merge(file).resolve(&no_tokens()).unwrap();
        assert_eq!(on.options.verify, Checksums::Off);
        assert!(!on.options.prefetch);

        let file: Settings =
            toml::from_str("index = \"i\"\nskip-checksums = true\nno-prefetch = true\n").unwrap();
        let flags = parse(&["--skip-checksums=false", "--no-prefetch=no"]);
        let off = flags.merge(file).resolve(&no_tokens()).unwrap();
        assert_eq!(off.options.verify, Checksums::Background);
        assert!(off.options.prefetch);

        // A bare flag is `true`; the value must be attached with `=`.
        let bare = parse(&["--index", "i", "--skip-checksums", "--no-prefetch"]);
        assert_eq!(
            (bare.skip_checksums, bare.no_prefetch),
            (Some(true), Some(true))
        );
        let later = parse(&["--index", "i", "--skip-checksums", "--skip-checksums=0"]);
        assert_eq!(later.skip_checksums, Some(false));
        assert!(Settings::from_args(["tandem-server", "--demo=maybe"]).is_err());
        let demo: Settings = toml::from_str("demo = true").unwrap();
        let resolved = parse(&["--demo=false", "--index", "i"])
            .merge(demo)
            .resolve(&no_tokens())
            .unwrap();
        assert!(!resolved.demo);
        // The `parse_from` of clap alone reads the same flags.
        assert_eq!(
            Settings::parse_from(["tandem-server", "--demo"]).demo,
            Some(true)
        );
    }

    #[test]
    fn admin_settings_come_from_flags_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let admin_file = dir.path().join("admin.txt");
        std::fs::write(&admin_file, "w1\n").unwrap();
        let file: Settings = toml::from_str(&format!(
            "index = \"i\"\nadmin-listen = \"127.0.0.1:9\"\nindex-root = \"/srv\"\n\
             max-delete-ids = 10\nadmin-tokens-file = {:?}\n",
            admin_file.display().to_string()
        ))
        .unwrap();
        let tokens = EnvTokens {
            search: None,
            admin: Some("w2".into()),
        };
        let r = parse(&["--max-delete-ids", "7"])
            .merge(file)
            .resolve(&tokens)
            .unwrap();
        assert_eq!(r.admin_listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(r.options.index_root, Some(PathBuf::from("/srv")));
        assert_eq!(r.options.max_delete_ids, 7);
        assert!(r.options.auth.is_none() && r.options.admin_auth.is_some());
        let defaults = parse(&["--index", "i"]).resolve(&no_tokens()).unwrap();
        assert_eq!(defaults.options.max_delete_ids, 100_000);
        assert!(defaults.admin_listen.is_none() && defaults.options.index_root.is_none());
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nobody\n").unwrap();
        let flags = parse(&[
            "--index",
            "i",
            "--admin-tokens-file",
            empty.to_str().unwrap(),
        ]);
        let message = format!("{:#}", flags.resolve(&no_tokens()).unwrap_err());
        assert!(
            message.contains("no token in the admin tokens file"),
            "{message}"
        );
    }
}
