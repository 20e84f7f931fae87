#!/usr/bin/env bash
# Compare tandem's first stage (exact, or approximate with a swept grid) with Seismic (pyseismic-lsr)
# at matched accuracy@10.
#
# Usage (from anywhere; paths are resolved from the current directory):
#   benches/compare-seismic.sh --docs D.jsonl --queries Q.jsonl --vectors V.npy --lens L.npy \
#       [--vocab vocab.txt] [--int8-scale 1/127] [--index DIR] [--out report.json] \
#       [-- <more arguments for benches/compare_seismic.py>]
#
# Example (scifact):
#   S=../shared/evalsets/scifact
#   benches/compare-seismic.sh --docs $S/docs.jsonl --queries $S/queries.jsonl \
#       --vectors $S/doc_vectors.npy --lens $S/doc_lens.npy --vocab $S/vocab.txt --int8-scale 1/127 \
#       --out target/seismic-compare/scifact.json -- --targets 0.90,0.95,0.97
#
# What it does:
#   1. creates a Python venv under target/seismic-venv with pyseismic-lsr==$SEISMIC_VERSION and numpy
#      (once; PyPI only);
#   2. cargo build --release -p tandem-bench -p tandem-index-tools;
#   3. builds the tandem index with tandem-index if --index (default
#      target/seismic-compare/tandem-index-<name of the docs file's folder>) does not exist yet — the
#      first stage only uses the documents, but the build needs token vectors and their counts;
#   4. runs benches/compare_seismic.py (see its header for what is measured and how), which builds and
#      caches the Seismic index and the exact ground truth under target/seismic-work, sweeps both
#      systems' query knobs single-threaded, prints a table per target and writes the JSON report.
#
# Both systems run on one thread and are NOT pinned to a core; pass `-- --pin-cpu N` to pin both.
# Run it on an otherwise idle machine: on 2 cores a concurrent build doubles latencies.
set -euo pipefail

SEISMIC_VERSION=0.5.4
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

DOCS="" QUERIES="" VECTORS="" LENS="" VOCAB="" SCALE="" INDEX="" OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --docs) DOCS="$(abs "$2")"; shift 2 ;;
    --queries) QUERIES="$(abs "$2")"; shift 2 ;;
    --vectors) VECTORS="$(abs "$2")"; shift 2 ;;
    --lens) LENS="$(abs "$2")"; shift 2 ;;
    --vocab) VOCAB="$(abs "$2")"; shift 2 ;;
    --int8-scale) SCALE="$2"; shift 2 ;;
    --index) INDEX="$(abs "$2")"; shift 2 ;;
    --out) OUT="$(abs "$2")"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$DOCS" ] && [ -n "$QUERIES" ] || { echo "--docs and --queries are required" >&2; usage; }

cd "$ROOT"
name="$(basename "$(dirname "$DOCS")")"
INDEX="${INDEX:-$ROOT/target/seismic-compare/tandem-index-$name}"
OUT="${OUT:-$ROOT/target/seismic-compare/report-$name.json}"
mkdir -p "$(dirname "$OUT")" "$(dirname "$INDEX")"

# 1. Python side.
VENV="$ROOT/target/seismic-venv"
if ! "$VENV/bin/python" -c "import seismic, numpy" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "pyseismic-lsr==$SEISMIC_VERSION" numpy
fi

# 2. tandem side.
cargo build --release -p tandem-bench -p tandem-index-tools

# 3. tandem index.
if [ ! -d "$INDEX" ]; then
  [ -n "$VECTORS" ] && [ -n "$LENS" ] || {
    echo "index $INDEX does not exist: --vectors and --lens are needed to build it" >&2; exit 2; }
  build=(target/release/tandem-index build --docs "$DOCS" --vectors "$VECTORS" --lens "$LENS" --first-stage approx --out "$INDEX")
  [ -n "$VOCAB" ] && build+=(--vocab "$VOCAB")
  [ -n "$SCALE" ] && build+=(--int8-scale "$SCALE")
  echo "+ ${build[*]}" >&2
  "${build[@]}"
fi

# 4. The comparison.
exec "$VENV/bin/python" benches/compare_seismic.py \
  --docs "$DOCS" --queries "$QUERIES" \
  --tandem-index "$INDEX" --tandem-bench "$ROOT/target/release/tandem-bench" \
  --work-dir "$ROOT/target/seismic-work" --out "$OUT" "$@"
