//! Explanations of hits: which document token each query token matched (and their dot product),
//! and which sparse terms carried the sparse score. The pipeline builds them when
//! [`SearchParams::explain`](crate::pipeline::SearchParams::explain) is on; the MaxSim kernels
//! track the argmax while scoring (see [`crate::kernels::maxsim_matches`]), so nothing is scored
//! twice.

use crate::kernels::TokenMax;
use crate::segment::Segment;

/// One query token's contribution to a MaxSim score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMatch {
    /// Position of the query token (row of the query's vectors).
    pub query_token: u32,
    /// Position of its best-matching token within the document.
    pub doc_token: u32,
    /// Their dot product, as the kernel computed it (for int8 and pq documents, with the
    /// decoded vectors: see [`crate::tokens::DocTokens::decode`]).
    pub score: f32,
}

/// One query term's contribution to a sparse score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TermContribution {
    /// Term id (see [`Segment::term`] for its string).
    pub term: u32,
    /// Its weight in the query.
    pub query_weight: f32,
    /// Its weight in the document.
    pub doc_weight: f32,
    /// `query_weight × doc_weight`.
    pub contribution: f32,
}

/// Why one hit scored what it did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// One per query token, in query order, when the hit was reranked (none for a document
    /// without token vectors): their scores sum to the hit's MaxSim score (in query order, bit
    /// for bit as the pipeline sums them).
    pub token_matches: Vec<TokenMatch>,
    /// The query terms the document holds, largest contribution first: their contributions
    /// sum to the hit's sparse score (up to f32 rounding: the first stage adds them in another
    /// order).
    pub terms: Vec<TermContribution>,
}

impl Explanation {
    /// The explanations of the hits `docs` (in that order): `matches` holds, for each, the
    /// kernel's best document token per query token (empty for a document that was not
    /// reranked, or has no tokens), and `terms` is the query's `(term, weight)` pairs.
    pub(crate) fn for_hits<'a>(
        index: &Segment,
        docs: &[u32],
        matches: impl IntoIterator<Item = &'a [TokenMax]>,
        terms: &[(u32, f32)],
    ) -> Vec<Explanation> {
        let contributions = term_contributions(index, docs, terms);
        let matches = matches.into_iter().chain(std::iter::repeat(&[][..]));
        contributions
            .into_iter()
            .zip(matches)
            .map(|(terms, matches)| Explanation {
                token_matches: matches
                    .iter()
                    .enumerate()
                    .map(|(i, m)| TokenMatch {
                        query_token: i as u32,
                        doc_token: m.token,
                        score: m.score,
                    })
                    .collect(),
                terms,
            })
            .collect()
    }
}

/// For each of `docs`, the contributions of the query `terms` (positive weights only) that it
/// holds, largest first. With the approximate first stage's forward index, each document's
/// row (its terms ascending, a few cache lines) is searched for the query's terms; without
/// it, each query term's posting list (sorted by document) is searched for the documents,
/// in document order so that each search starts where the last one ended.
fn term_contributions(
    index: &Segment,
    docs: &[u32],
    terms: &[(u32, f32)],
) -> Vec<Vec<TermContribution>> {
    let positive: Vec<(u32, f32)> = terms.iter().copied().filter(|&(_, w)| w > 0.0).collect();
    let mut out = vec![Vec::new(); docs.len()];
    let contribution = |term, query_weight: f32, doc_weight: f32| TermContribution {
        term,
        query_weight,
        doc_weight,
        contribution: query_weight * doc_weight,
    };
    match index.approx() {
        Some(approx) => {
            for (found, &doc) in out.iter_mut().zip(docs) {
                let Some((row_terms, row_weights)) = approx.forward_row(doc) else {
                    continue;
                };
                for &(term, query_weight) in &positive {
                    // Terms past u16 cannot be in a forward row (the index refuses to build it).
                    let Ok(key) = u16::try_from(term) else {
                        continue;
                    };
                    if let Ok(at) = row_terms.binary_search(&key) {
                        found.push(contribution(term, query_weight, row_weights[at]));
                    }
                }
            }
        }
        None => {
            let mut order: Vec<usize> = (0..docs.len()).collect();
            order.sort_unstable_by_key(|&i| docs[i]);
            for &(term, query_weight) in &positive {
                let (list, weights) = index.postings().postings(term);
                let mut from = 0;
                for &i in &order {
                    let at = from + list[from..].partition_point(|&d| d < docs[i]);
                    if list.get(at) == Some(&docs[i]) {
                        out[i].push(contribution(term, query_weight, weights[at]));
                    }
                    from = at;
                }
            }
        }
    }
    for found in &mut out {
        found.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.term.cmp(&b.term))
        });
    }
    out
}
