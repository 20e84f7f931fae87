//! Writing TREC run files: `qid Q0 docid rank score tag`.

use std::io::Write;
use tandem_proto::v1::SearchResponse;

/// Writes one line per hit of each response; `qid` comes from the response's `query_id`, ranks
/// start at 1, scores are written with full precision so trec_eval keeps our order.
pub fn write_run(
    out: &mut dyn Write,
    responses: &[SearchResponse],
    tag: &str,
) -> std::io::Result<()> {
    for response in responses {
        for (rank, hit) in response.hits.iter().enumerate() {
            writeln!(
                out,
                "{} Q0 {} {} {} {tag}",
                response.query_id,
                hit.doc_id,
                rank + 1,
                hit.score
            )?;
        }
    }
    Ok(())
}
