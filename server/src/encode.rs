//! Text queries: the encoders a server is configured with, and filling in the vectors a
//! request leaves out from its `text`.
//!
//! Encoding runs on the worker pool (inside the query's job), never on the async reactor. The
//! texts of one job (a single query, or a chunk of a SearchBatch) are encoded together: one
//! encoder call per half of the query, padded to the longest text.

use std::path::PathBuf;
use tandem_engine::{Error, Result};
use tandem_proto::v1::{EncoderInfo, EncoderRun, Rerank, SearchRequest};

/// Longest query text accepted, bytes (a query is a few dozen words; 64 KiB leaves room for
/// passages while keeping tokenization cheap — the encoders truncate further).
pub const MAX_TEXT_BYTES: usize = 65_536;

/// Default truncation of query text, wordpieces (special tokens included): what the scifact
/// eval set's queries were encoded with.
pub const DEFAULT_MAX_TOKENS: usize = 128;

/// Where the encoders come from (all paths local; nothing is downloaded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncoderSettings {
    /// A `BertForMaskedLM` directory: the sparse half of text queries, SPLADE-style.
    pub sparse_model: Option<PathBuf>,
    /// A per-token weight table (JSON `{"token": weight}` or a 1-D `.npy`): the sparse half,
    /// inference-free. Excludes `sparse_model`.
    pub sparse_table: Option<PathBuf>,
    /// The tokenizer of `sparse_table` (a `tokenizer.json` or a directory holding one); default:
    /// the token-vector model's.
    pub sparse_tokenizer: Option<PathBuf>,
    /// A BERT directory: the token vectors of text queries.
    pub vector_model: Option<PathBuf>,
    /// The projection of the token vectors: mean (`[hidden]`) and matrix (`[hidden, dim]`)
    /// `.npy` files, both or neither.
    pub vector_projection: Option<(PathBuf, PathBuf)>,
    /// Truncation of query text, wordpieces.
    pub max_tokens: usize,
}

impl EncoderSettings {
    /// No encoders: only pre-encoded queries are answered.
    pub fn none() -> Self {
        EncoderSettings {
            max_tokens: DEFAULT_MAX_TOKENS,
            ..EncoderSettings::default()
        }
    }

    /// Whether any encoder is configured.
    pub fn any(&self) -> bool {
        self.sparse_model.is_some() || self.sparse_table.is_some() || self.vector_model.is_some()
    }
}

/// What encoding did for one request.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The encoder runs, reported in the response.
    pub runs: Vec<EncoderRun>,
    /// The wordpiece behind each query token vector, when the server encoded them and the
    /// request asked for an explanation; else empty.
    pub query_tokens: Vec<String>,
}

/// What one job's texts came out as, per request: what encoding did, or why it failed.
pub type Filled = Vec<Result<Encoded>>;

#[cfg(feature = "encoders")]
mod loaded {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;
    use tandem_engine::encoders::{
        MlmSparseEncoder, Projection, SparseTerms, TableSparseEncoder, TextTokenizer,
        TokenVectorEncoder, TokenVectors,
    };
    use tandem_proto::v1;

    /// The sparse encoder of text queries.
    pub enum SparseEncoder {
        /// A BERT masked-language model (SPLADE-style).
        Mlm(Box<MlmSparseEncoder>),
        /// An inference-free weight table.
        Table(Box<TableSparseEncoder>),
    }

    impl SparseEncoder {
        fn kind(&self) -> &'static str {
            match self {
                SparseEncoder::Mlm(_) => "mlm",
                SparseEncoder::Table(_) => "table",
            }
        }

        fn tokenizer(&self) -> &TextTokenizer {
            match self {
                SparseEncoder::Mlm(e) => e.tokenizer(),
                SparseEncoder::Table(e) => e.tokenizer(),
            }
        }

        fn encode_batch(&self, texts: &[&str]) -> Result<Vec<SparseTerms>> {
            match self {
                SparseEncoder::Mlm(e) => e.encode_batch(texts),
                SparseEncoder::Table(e) => e.encode_batch(texts),
            }
        }
    }

    /// The loaded encoders of a server.
    #[derive(Default)]
    pub struct Encoders {
        sparse: Option<SparseEncoder>,
        vectors: Option<TokenVectorEncoder>,
        info: Vec<EncoderInfo>,
    }

    impl Encoders {
        /// Loads what `settings` names; an error names the file at fault.
        pub fn load(settings: &EncoderSettings) -> anyhow::Result<Encoders> {
            let max = settings.max_tokens;
            let vectors = match &settings.vector_model {
                None => None,
                Some(dir) => {
                    let projection = match &settings.vector_projection {
                        Some((mean, matrix)) => Some(Projection::load(mean, matrix)?),
                        None => None,
                    };
                    Some(TokenVectorEncoder::load(dir, max, projection)?)
                }
            };
            let sparse = match (&settings.sparse_model, &settings.sparse_table) {
                (Some(_), Some(_)) => {
                    anyhow::bail!("--sparse-model and --sparse-table exclude each other")
                }
                (Some(dir), None) => Some(SparseEncoder::Mlm(Box::new(MlmSparseEncoder::load(
                    dir, max,
                )?))),
                (None, Some(table)) => {
                    let tokenizer = match (&settings.sparse_tokenizer, &settings.vector_model) {
                        (Some(path), _) | (None, Some(path)) => path,
                        (None, None) => anyhow::bail!(
                            "--sparse-table needs a tokenizer: give --sparse-tokenizer (or \
                             --vector-model, whose tokenizer is the default)"
                        ),
                    };
                    let tokenizer = TextTokenizer::load(tokenizer, max)?;
                    Some(SparseEncoder::Table(Box::new(TableSparseEncoder::load(
                        table, tokenizer,
                    )?)))
                }
                (None, None) => None,
            };
            let mut info = Vec::new();
            if let Some(sparse) = &sparse {
                let (source, files) = match sparse {
                    SparseEncoder::Mlm(e) => (e.dir().display().to_string(), Vec::new()),
                    SparseEncoder::Table(e) => (
                        e.table().display().to_string(),
                        vec![e.tokenizer().path().display().to_string()],
                    ),
                };
                info.push(EncoderInfo {
                    role: "sparse".into(),
                    kind: sparse.kind().into(),
                    source,
                    max_tokens: max as u32,
                    dim: 0,
                    files,
                });
            }
            if let Some(e) = &vectors {
                info.push(EncoderInfo {
                    role: "vectors".into(),
                    kind: "bert".into(),
                    source: e.dir().display().to_string(),
                    max_tokens: max as u32,
                    dim: e.dim() as u32,
                    files: e.projection().map_or_else(Vec::new, |p| {
                        let (mean, matrix) = p.files();
                        vec![mean.display().to_string(), matrix.display().to_string()]
                    }),
                });
            }
            Ok(Encoders {
                sparse,
                vectors,
                info,
            })
        }

        /// What GetIndexInfo reports.
        pub fn info(&self) -> &[EncoderInfo] {
            &self.info
        }

        /// Values per token vector of the vector encoder, if there is one.
        pub fn vector_dim(&self) -> Option<usize> {
            self.vectors.as_ref().map(TokenVectorEncoder::dim)
        }

        /// Fills in the halves each request leaves out from its text (see [`super::fill`]).
        pub fn fill(&self, requests: &mut [SearchRequest]) -> Filled {
            let mut runs: Filled = Vec::with_capacity(requests.len());
            let (mut sparse_wanted, mut vectors_wanted) = (Vec::new(), Vec::new());
            for (i, need) in needs(requests).into_iter().enumerate() {
                if let Ok(need) = &need {
                    if need.sparse {
                        sparse_wanted.push(i);
                    }
                    if need.vectors {
                        vectors_wanted.push(i);
                    }
                }
                runs.push(need.map(|_| Encoded::default()));
            }
            match (&self.sparse, sparse_wanted.is_empty()) {
                (_, true) => {}
                (None, false) => {
                    for &i in &sparse_wanted {
                        runs[i] = Err(Error::invalid(
                            "query.text",
                            "this server has no sparse encoder (start it with --sparse-model \
                             or --sparse-table): give the query's `sparse` or `sparse_tokens`",
                        ));
                    }
                }
                (Some(encoder), false) => {
                    let texts = texts(requests, &sparse_wanted);
                    let started = Instant::now();
                    let encoded = encoder.encode_batch(&texts);
                    let micros = started.elapsed().as_micros() as u64;
                    let tokens = token_counts(encoder.tokenizer(), &texts);
                    self.apply(
                        requests,
                        &mut runs,
                        &sparse_wanted,
                        encoded,
                        |request, terms: SparseTerms| {
                            let query = request.query.get_or_insert_default();
                            query.sparse = None;
                            query.sparse_tokens = terms.into_iter().collect::<HashMap<_, _>>();
                        },
                        |i| EncoderRun {
                            role: "sparse".into(),
                            kind: encoder.kind().into(),
                            micros,
                            batch_size: sparse_wanted.len() as u32,
                            tokens: tokens[i],
                        },
                    );
                }
            }
            match (&self.vectors, vectors_wanted.is_empty()) {
                (_, true) => {}
                (None, false) => {
                    for &i in &vectors_wanted {
                        if runs[i].is_ok() {
                            runs[i] = Err(Error::invalid(
                                "query.text",
                                "this server has no token-vector encoder (start it with \
                                 --vector-model): give the query's `vectors`, or set rerank \
                                 to RERANK_NONE",
                            ));
                        }
                    }
                }
                (Some(encoder), false) => {
                    // Queries whose sparse half failed are not encoded further.
                    vectors_wanted.retain(|&i| runs[i].is_ok());
                    let texts = texts(requests, &vectors_wanted);
                    let started = Instant::now();
                    let encoded = encoder.encode_batch(&texts);
                    let micros = started.elapsed().as_micros() as u64;
                    let tokens = token_counts(encoder.tokenizer(), &texts);
                    self.apply(
                        requests,
                        &mut runs,
                        &vectors_wanted,
                        encoded,
                        |request, vectors: TokenVectors| {
                            request.query.get_or_insert_default().vectors =
                                Some(v1::TokenVectors {
                                    dim: vectors.dim as u32,
                                    values: vectors.values,
                                    f16_le: Default::default(),
                                    f32_le: Vec::new(),
                                });
                        },
                        |i| EncoderRun {
                            role: "vectors".into(),
                            kind: "bert".into(),
                            micros,
                            batch_size: vectors_wanted.len() as u32,
                            tokens: tokens[i],
                        },
                    );
                    for &i in &vectors_wanted {
                        if let (Ok(encoded), true) = (&mut runs[i], requests[i].explain) {
                            let text = requests[i].query.as_ref().map_or("", |q| q.text.as_str());
                            let tokenizer = encoder.tokenizer();
                            encoded.query_tokens = tokenizer.wordpieces(text).unwrap_or_default();
                        }
                    }
                }
            }
            runs
        }

        /// Writes each encoded result into its request and records the run, or records the
        /// batch's error against every request of it.
        fn apply<T>(
            &self,
            requests: &mut [SearchRequest],
            runs: &mut Filled,
            wanted: &[usize],
            encoded: Result<Vec<T>>,
            mut set: impl FnMut(&mut SearchRequest, T),
            run: impl Fn(usize) -> EncoderRun,
        ) {
            match encoded {
                Ok(values) => {
                    for (pos, (&i, value)) in wanted.iter().zip(values).enumerate() {
                        if let Ok(encoded) = &mut runs[i] {
                            set(&mut requests[i], value);
                            encoded.runs.push(run(pos));
                        }
                    }
                }
                Err(e) => {
                    for &i in wanted {
                        if runs[i].is_ok() {
                            runs[i] = Err(copy_error(&e));
                        }
                    }
                }
            }
        }
    }

    /// The same failure for another request of the batch.
    fn copy_error(e: &Error) -> Error {
        match e {
            Error::InvalidArgument { field, message } => Error::invalid(field, message),
            Error::Encoder { model, message } => Error::Encoder {
                model: model.clone(),
                message: message.clone(),
            },
            other => Error::Encoder {
                model: PathBuf::new(),
                message: other.to_string(),
            },
        }
    }

    /// The wordpieces the encoder read of each text (0 for one that cannot be tokenized: the
    /// encoder call has failed then).
    fn token_counts(tokenizer: &TextTokenizer, texts: &[&str]) -> Vec<u32> {
        texts
            .iter()
            .map(|t| tokenizer.encode(t).map_or(0, |ids| ids.len() as u32))
            .collect()
    }

    fn texts<'r>(requests: &'r [SearchRequest], wanted: &[usize]) -> Vec<&'r str> {
        wanted
            .iter()
            .map(|&i| requests[i].query.as_ref().map_or("", |q| q.text.as_str()))
            .collect()
    }
}

#[cfg(feature = "encoders")]
pub use loaded::{Encoders, SparseEncoder};

#[cfg(not(feature = "encoders"))]
mod absent {
    use super::*;

    /// No encoders: this server was built without the `encoders` feature.
    #[derive(Default)]
    pub struct Encoders;

    impl Encoders {
        /// Refuses any configured encoder.
        pub fn load(settings: &EncoderSettings) -> anyhow::Result<Encoders> {
            anyhow::ensure!(
                !settings.any(),
                "this tandem-server was built without the `encoders` feature: it cannot load \
                 query encoders (rebuild with default features)"
            );
            Ok(Encoders)
        }

        /// Nothing configured.
        pub fn info(&self) -> &[EncoderInfo] {
            &[]
        }

        /// No vector encoder.
        pub fn vector_dim(&self) -> Option<usize> {
            None
        }

        /// Text queries needing an encoder are refused.
        pub fn fill(&self, requests: &mut [SearchRequest]) -> Filled {
            needs(requests)
                .into_iter()
                .map(|need| {
                    let need = need?;
                    if need.sparse || need.vectors {
                        Err(Error::invalid(
                            "query.text",
                            "this server was built without query encoders: give the query's \
                             vectors",
                        ))
                    } else {
                        Ok(Encoded::default())
                    }
                })
                .collect()
        }
    }
}

#[cfg(not(feature = "encoders"))]
pub use absent::Encoders;

/// Which halves of a request must come from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Need {
    sparse: bool,
    vectors: bool,
}

/// For each request, the halves to encode: none without text; else the sparse half when it
/// gives neither `sparse` nor `sparse_tokens`, and the token vectors when it reranks without
/// giving them. A text over [`MAX_TEXT_BYTES`] is an error.
fn needs(requests: &[SearchRequest]) -> Vec<Result<Need>> {
    requests
        .iter()
        .map(|request| {
            let Some(query) = request.query.as_ref().filter(|q| !q.text.is_empty()) else {
                return Ok(Need {
                    sparse: false,
                    vectors: false,
                });
            };
            if query.text.len() > MAX_TEXT_BYTES {
                return Err(Error::invalid(
                    "query.text",
                    format!(
                        "{} bytes exceed the limit of {MAX_TEXT_BYTES}",
                        query.text.len()
                    ),
                ));
            }
            let has_sparse = query
                .sparse
                .as_ref()
                .is_some_and(|s| !(s.indices.is_empty() && s.values.is_empty()))
                || !query.sparse_tokens.is_empty();
            let reranks = !matches!(Rerank::try_from(request.rerank), Ok(Rerank::None));
            Ok(Need {
                sparse: !has_sparse,
                vectors: reranks && query.vectors.is_none(),
            })
        })
        .collect()
}
