//! `tandem upsert`: documents in the batch build's input formats, sent as Upsert batches.

use crate::cli::ServerArgs;
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tandem_data::jsonl::{AttrValue, SparseRecord};
use tandem_data::npy::{row_offsets, NpyArray};
use tandem_proto::v1::{
    attribute_value, AttributeValue, Document, SparseVector, StringList, TokenVectors,
    UpsertRequest, UpsertResponse,
};

/// The inputs of `tandem upsert`: what `tandem-index build` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct UpsertArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Documents JSONL (`{"id": ..., "vector": {"token": weight}, "attrs": {...}}`).
    #[arg(long)]
    pub docs: PathBuf,
    /// Token vectors `.npy`, `[total_tokens, dim]` of float32, float16 or int8.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Tokens per document `.npy`, in document order.
    #[arg(long)]
    pub lens: PathBuf,
    /// For int8 vectors: value = q × scale (a number or a fraction such as 1/127).
    #[arg(long, value_parser = parse_scale)]
    pub int8_scale: Option<f32>,
    /// Document tokens are decimal ids into the index's vocabulary rather than terms.
    #[arg(long)]
    pub token_ids: bool,
    /// Documents per Upsert batch.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Answer only once every document is searchable.
    #[arg(long)]
    pub wait_for_visible: bool,
}

/// Parses a positive scale, as a number or `a/b`.
pub fn parse_scale(value: &str) -> Result<f32, String> {
    let parsed = match value.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f32>()
            .ok()
            .zip(b.trim().parse::<f32>().ok())
            .map(|(a, b)| a / b),
        None => value.trim().parse::<f32>().ok(),
    };
    match parsed {
        Some(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(format!("{value:?} is not a positive number or fraction")),
    }
}

/// The documents of the inputs, checked against each other (counts, rows); errors name the
/// file (and line or row).
struct Inputs {
    records: Vec<SparseRecord>,
    vectors: NpyArray,
    dim: usize,
    rows: Vec<u64>,
}

fn read_inputs(args: &UpsertArgs) -> anyhow::Result<Inputs> {
    let text = std::fs::read_to_string(&args.docs)
        .with_context(|| format!("cannot read {}", args.docs.display()))?;
    let records = tandem_data::jsonl::parse_all(&text, &args.docs.display().to_string())?;
    let vectors = NpyArray::open(&args.vectors)?;
    let (total, dim) = vectors.matrix_shape()?;
    let lens = NpyArray::open(&args.lens)?.to_u64_vec()?;
    anyhow::ensure!(
        lens.len() == records.len(),
        "{}: {} token counts for {} documents in {}",
        args.lens.display(),
        lens.len(),
        records.len(),
        args.docs.display()
    );
    if let Some(i) = lens.iter().position(|&l| l == 0) {
        anyhow::bail!(
            "{}: row {i}: document has 0 token vectors (every document needs at least one)",
            args.lens.display()
        );
    }
    let rows = row_offsets(&lens, &args.lens)?;
    anyhow::ensure!(
        rows.last().copied() == Some(total as u64),
        "{}: token counts sum to {} but {} has {total} rows",
        args.lens.display(),
        rows.last().copied().unwrap_or(0),
        args.vectors.display()
    );
    Ok(Inputs {
        records,
        vectors,
        dim,
        rows,
    })
}

/// Document `i` of the inputs as a proto message (vectors as little-endian float16, as stored).
fn document(inputs: &Inputs, args: &UpsertArgs, i: usize) -> anyhow::Result<Document> {
    let record = &inputs.records[i];
    let mut values = Vec::new();
    let rows = inputs.rows[i] as usize..inputs.rows[i + 1] as usize;
    inputs
        .vectors
        .rows_f32(rows, args.int8_scale, &mut values)?;
    let f16_le = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let mut doc = Document {
        id: record.id.clone(),
        vectors: Some(TokenVectors {
            dim: inputs.dim as u32,
            f16_le,
            ..Default::default()
        }),
        attributes: record
            .attrs
            .iter()
            .map(|(name, value)| (name.clone(), attribute(value)))
            .collect(),
        ..Default::default()
    };
    if args.token_ids {
        let mut sparse = SparseVector::default();
        for (token, weight) in &record.terms {
            let id = token.parse::<u32>().with_context(|| {
                format!(
                    "{}: document {:?}: token {token:?} is not a decimal id (--token-ids)",
                    args.docs.display(),
                    record.id
                )
            })?;
            sparse.indices.push(id);
            sparse.values.push(*weight);
        }
        doc.sparse = Some(sparse);
    } else {
        doc.sparse_tokens = record.terms.iter().cloned().collect::<HashMap<_, _>>();
    }
    Ok(doc)
}

fn attribute(value: &AttrValue) -> AttributeValue {
    AttributeValue {
        value: Some(match value {
            AttrValue::Str(s) => attribute_value::Value::Text(s.clone()),
            AttrValue::Int(v) => attribute_value::Value::Integer(*v),
            AttrValue::List(items) => attribute_value::Value::List(StringList {
                values: items.clone(),
            }),
        }),
    }
}

/// The inputs of `args` as Upsert batches of `--batch-size` documents (vectors as float16),
/// every document converted (and so checked) before any is sent.
pub fn batches(args: &UpsertArgs) -> anyhow::Result<Vec<UpsertRequest>> {
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be >= 1");
    let inputs = read_inputs(args)?;
    anyhow::ensure!(
        !inputs.records.is_empty(),
        "{}: no documents",
        args.docs.display()
    );
    let docs = (0..inputs.records.len())
        .map(|i| document(&inputs, args, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut batches = Vec::with_capacity(docs.len().div_ceil(args.batch_size));
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        batches.push(UpsertRequest {
            documents: docs.by_ref().take(args.batch_size).collect(),
            wait_for_visible: args.wait_for_visible,
        });
    }
    Ok(batches)
}

/// `tandem upsert`: reads and checks the inputs, sends them in batches on one UpsertStream
/// call, returns the server's counts.
pub async fn run(args: UpsertArgs) -> anyhow::Result<UpsertResponse> {
    let batches = batches(&args)?;
    let batch_size = args.batch_size;
    let mut client = args.server.connect().await?;
    client
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "server answered {:?}: {} (batches before the one named are acknowledged; \
                 {batch_size} documents per batch)",
                s.code(),
                s.message()
            )
        })
}

/// The line `tandem upsert` prints.
pub fn summary(reply: &UpsertResponse, docs: &Path) -> String {
    format!(
        "acknowledged {} documents of {} in {} batches ({} replaced an existing id); log \
         sequence {}",
        reply.acknowledged,
        docs.display(),
        reply.batches,
        reply.replaced,
        reply.seq
    )
}
