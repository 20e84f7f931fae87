//! Converting `tandem.v1` requests to engine queries, and engine results back.

use crate::config::ServeOptions;
use half::f16;
use tandem_engine::approx::ApproxQueryParams;
use tandem_engine::explain::Explanation;
use tandem_engine::filter::{parse, Filter};
use tandem_engine::pipeline::{check_term_weight, FirstStage};
use tandem_engine::{
    Error, Fusion, FusionMethod, Index, Query, QueryVectors, Result, SearchOutput, SearchParams,
};
use tandem_proto::v1::{self, Rerank};

/// A request in engine terms.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The query.
    pub query: Query,
    /// Its knobs, defaults applied.
    pub params: SearchParams,
    /// Token strings the vocabulary does not know.
    pub unknown_tokens: u32,
    /// The client's id, echoed back.
    pub query_id: String,
}

/// Checks and converts a request; errors name the offending field.
pub fn prepare(
    index: &Index,
    options: &ServeOptions,
    request: v1::SearchRequest,
) -> Result<Prepared> {
    let k = request.k.map_or(options.default_k, |k| k as usize);
    let kappa = request
        .kappa
        .map_or(options.default_kappa.max(k), |kappa| kappa as usize);
    let rerank = match Rerank::try_from(request.rerank) {
        Ok(Rerank::Unspecified | Rerank::Maxsim) => true,
        Ok(Rerank::None) => false,
        Err(_) => {
            return Err(Error::invalid(
                "rerank",
                format!("unknown value {}", request.rerank),
            ))
        }
    };
    let first_stage = first_stage(index, &request)?;
    let params = SearchParams {
        first_stage,
        k,
        kappa,
        cp_alpha: request.cp_alpha.or(options.default_cp_alpha),
        ee_beta: match request.ee_beta {
            Some(0) => None,
            Some(beta) => Some(beta as usize),
            None => options.default_ee_beta,
        },
        rerank,
        prefetch: options.prefetch,
        explain: request.explain,
        fusion: fusion(options, &request)?,
    };
    let query = request
        .query
        .ok_or_else(|| Error::invalid("query", "is missing"))?;
    let (terms, unknown_tokens) = sparse_terms(index, options.limits.max_query_terms, &query)?;
    let vectors = match query.vectors {
        Some(vectors) if rerank => Some(token_vectors(vectors)?),
        _ => None,
    };
    let filter = Filter {
        include: request.include_ids.map(|set| set.ids),
        exclude: request.exclude_ids.map(|set| set.ids).unwrap_or_default(),
        expr: match request.filter.trim().is_empty() {
            true => None,
            false => {
                Some(parse(&request.filter).map_err(|e| Error::invalid("filter", e.to_string()))?)
            }
        },
        include_docs: None,
    };
    Ok(Prepared {
        query: Query {
            terms,
            vectors,
            filter,
        },
        params,
        unknown_tokens,
        query_id: request.query_id,
    })
}

/// The requested fusion, with the server's defaults for what the request leaves out.
fn fusion(options: &ServeOptions, request: &v1::SearchRequest) -> Result<Fusion> {
    let defaults = options.default_fusion;
    let rrf_k = request.rrf_k.unwrap_or(options.default_rrf_k);
    let method = match v1::FusionMethod::try_from(request.fusion_method) {
        Ok(v1::FusionMethod::Unspecified) => match defaults.method {
            FusionMethod::Rrf { .. } => FusionMethod::Rrf { k: rrf_k },
            other => other,
        },
        Ok(v1::FusionMethod::Zscore) => FusionMethod::ZScore,
        Ok(v1::FusionMethod::Minmax) => FusionMethod::MinMax,
        Ok(v1::FusionMethod::Rrf) => FusionMethod::Rrf { k: rrf_k },
        Err(_) => {
            return Err(Error::invalid(
                "fusion_method",
                format!("unknown value {}", request.fusion_method),
            ))
        }
    };
    let fusion = Fusion {
        method,
        weight: request.fusion_weight.unwrap_or(defaults.weight),
    };
    fusion.validate()?;
    Ok(fusion)
}

/// The requested first stage, with the index's defaults for what the request leaves out.
fn first_stage(index: &Index, request: &v1::SearchRequest) -> Result<FirstStage> {
    let defaults = index
        .primary()
        .manifest()
        .approx
        .as_ref()
        .map(|a| a.query_defaults);
    let knobs = |defaults: ApproxQueryParams| ApproxQueryParams {
        query_cut: request.query_cut.map_or(defaults.query_cut, |c| c as usize),
        rescore: request.rescore.map_or(defaults.rescore, |r| r as usize),
        expand: request.expand.map_or(defaults.expand, |e| e as usize),
        depth: request.depth.map_or(defaults.depth, |d| d as usize),
    };
    // An index whose calibration found no accurate enough setting defaults to exact.
    let approx_by_default = matches!(index.default_first_stage(), FirstStage::Approx(_));
    match (v1::FirstStage::try_from(request.first_stage), defaults) {
        (Ok(v1::FirstStage::Exact), _) | (Ok(v1::FirstStage::Unspecified), None) => {
            Ok(FirstStage::Exact)
        }
        (Ok(v1::FirstStage::Unspecified), Some(_)) if !approx_by_default => Ok(FirstStage::Exact),
        (Ok(v1::FirstStage::Unspecified | v1::FirstStage::Approximate), Some(defaults)) => {
            let knobs = knobs(defaults);
            knobs.validate()?;
            Ok(FirstStage::Approx(knobs))
        }
        (Ok(v1::FirstStage::Approximate), None) => Err(Error::invalid(
            "first_stage",
            "this index has no approximate first stage (it was built with --first-stage exact)",
        )),
        (Err(_), _) => Err(Error::invalid(
            "first_stage",
            format!("unknown value {}", request.first_stage),
        )),
    }
}

/// The query's sparse terms as `(id, weight)` and the number of unknown token strings. More than
/// `max_terms` entries are refused before any work, whichever form they come in (the engine
/// checks the resolved terms again).
fn sparse_terms(
    index: &Index,
    max_terms: usize,
    query: &v1::Query,
) -> Result<(Vec<(u32, f32)>, u32)> {
    let too_many = |field: &str, given: usize| {
        Error::invalid(
            field,
            format!("{given} terms exceed the server limit max_query_terms = {max_terms}"),
        )
    };
    let by_id = query
        .sparse
        .as_ref()
        .filter(|s| !(s.indices.is_empty() && s.values.is_empty()));
    match (by_id, query.sparse_tokens.is_empty()) {
        (Some(_), false) => Err(Error::invalid(
            "query",
            "set either `sparse` (ids) or `sparse_tokens` (strings), not both",
        )),
        (None, true) => Err(Error::invalid(
            "query.sparse",
            "the query is empty: give `sparse` (ids and values) or `sparse_tokens`",
        )),
        (Some(sparse), true) => {
            if sparse.indices.len() > max_terms {
                return Err(too_many("query.sparse", sparse.indices.len()));
            }
            if sparse.indices.len() != sparse.values.len() {
                return Err(Error::invalid(
                    "query.sparse.values",
                    format!(
                        "{} values for {} indices",
                        sparse.values.len(),
                        sparse.indices.len()
                    ),
                ));
            }
            Ok((
                sparse
                    .indices
                    .iter()
                    .copied()
                    .zip(sparse.values.iter().copied())
                    .collect(),
                0,
            ))
        }
        (None, false) => {
            if query.sparse_tokens.len() > max_terms {
                return Err(too_many("query.sparse_tokens", query.sparse_tokens.len()));
            }
            for (token, &weight) in &query.sparse_tokens {
                check_term_weight(weight).map_err(|message| {
                    Error::invalid(format!("query.sparse_tokens[{token:?}]"), message)
                })?;
            }
            let tokens = query.sparse_tokens.iter().map(|(t, &w)| (t.as_str(), w));
            let (terms, unknown) = index.resolve_terms(tokens);
            Ok((terms, unknown as u32))
        }
    }
}

fn token_vectors(vectors: v1::TokenVectors) -> Result<QueryVectors> {
    vector_values(vectors, "query.vectors")
}

/// The values of token vectors given in any of their three forms, and their declared dim;
/// errors name `field` (e.g. `query.vectors`).
pub fn vector_values(vectors: v1::TokenVectors, field: &str) -> Result<QueryVectors> {
    let given = [
        !vectors.values.is_empty(),
        !vectors.f16_le.is_empty(),
        !vectors.f32_le.is_empty(),
    ];
    let values = match given {
        [true, false, false] => vectors.values,
        [false, true, false] => le_values(
            &vectors.f16_le,
            &format!("{field}.f16_le"),
            "float16",
            |b: &[u8; 2]| f16::from_le_bytes(*b).to_f32(),
        )?,
        [false, false, true] => le_values(
            &vectors.f32_le,
            &format!("{field}.f32_le"),
            "float32",
            |b: &[u8; 4]| f32::from_le_bytes(*b),
        )?,
        [false, false, false] => return Err(Error::invalid(field, "no values given")),
        _ => {
            return Err(Error::invalid(
                field,
                "set exactly one of `values` (float32), `f16_le` and `f32_le`",
            ))
        }
    };
    if vectors.dim == 0 {
        return Err(Error::invalid(format!("{field}.dim"), "must be > 0"));
    }
    Ok(QueryVectors {
        values,
        dim: vectors.dim as usize,
    })
}

/// An explanation in API terms, with the strings the index and the encoder know.
fn explanation(
    index: &Index,
    doc: u32,
    explanation: Explanation,
    query_tokens: &[String],
) -> v1::Explanation {
    let token_matches = explanation
        .token_matches
        .iter()
        .map(|m| v1::TokenMatch {
            query_token: m.query_token,
            doc_token: m.doc_token,
            score: m.score,
            query_text: query_tokens
                .get(m.query_token as usize)
                .cloned()
                .unwrap_or_default(),
            doc_text: index
                .doc_token_text(doc, m.doc_token)
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    let terms = explanation
        .terms
        .iter()
        .map(|t| v1::TermContribution {
            term: index.term(t.term).unwrap_or_default().to_string(),
            term_id: t.term,
            query_weight: t.query_weight,
            doc_weight: t.doc_weight,
            contribution: t.contribution,
        })
        .collect();
    v1::Explanation {
        token_matches,
        terms,
    }
}

/// The little-endian values of `N` bytes each in `bytes` (a whole number of them, else an
/// error naming `field`).
fn le_values<const N: usize>(
    bytes: &[u8],
    field: &str,
    kind: &str,
    value: impl Fn(&[u8; N]) -> f32,
) -> Result<Vec<f32>> {
    let (chunks, rest) = bytes.as_chunks::<N>();
    if !rest.is_empty() {
        return Err(Error::invalid(
            field,
            format!(
                "{} bytes is not a whole number of {kind} values",
                bytes.len()
            ),
        ));
    }
    Ok(chunks.iter().map(value).collect())
}

/// Converts engine output to the response, with external ids (and, for explanations, term
/// strings, the query's wordpieces `query_tokens` when known, and document token strings when
/// the index has them).
pub fn response(
    index: &Index,
    prepared: &Prepared,
    output: SearchOutput,
    query_tokens: &[String],
) -> v1::SearchResponse {
    let mut explanations = output.explanations.into_iter();
    let hits = output
        .hits
        .iter()
        .map(|hit| v1::Hit {
            doc_id: index.external_id(hit.doc).unwrap_or_default().to_string(),
            score: hit.score,
            sparse_score: hit.sparse_score,
            maxsim_score: hit.maxsim,
            fused_score: hit.fused,
            explanation: explanations
                .next()
                .map(|e| explanation(index, hit.doc, e, query_tokens)),
        })
        .collect();
    let s = output.stats;
    v1::SearchResponse {
        hits,
        unknown_tokens: prepared.unknown_tokens,
        stats: Some(v1::SearchStats {
            candidates: s.candidates as u32,
            pruned: s.pruned as u32,
            reranked: s.reranked as u32,
            first_stage_us: s.first_stage_us,
            rerank_us: s.rerank_us,
        }),
        query_id: prepared.query_id.clone(),
        encoders: Vec::new(),
    }
}
