#!/usr/bin/env bash
# What scripts/gpu_proof.sh needs on a GPU machine that has no package registry but whose Python already holds CUDA
# torch and the common scientific stack (numpy, pandas, pyarrow, tokenizers, safetensors, rich, pillow, ...):
# the project's other dependencies as wheels, at the versions installed in .venv here, built for that machine's
# Python, DeepSpeed (built here from its sdist: it publishes no wheel) with its dependencies, and SmolLM2's tokenizer
# files (the random Qwen2.5-VL uses its vocabulary). About 27 MB in all.
#
#   scripts/gpu_proof_wheels.sh OUT_DIR [PYTHON_VERSION]        (default 3.12)
#   XZ=1 scripts/gpu_proof_wheels.sh OUT_DIR   also OUT_DIR/wheels.tar.xz: the wheels re-zipped uncompressed, then xz
#                                              (about 12 MB, for a copy with a size limit; untar it to get wheels/)
#   then, there: GPU_PROOF_WHEELS=OUT_DIR/wheels GPU_PROOF_TOKENIZER=OUT_DIR/tokenizer scripts/gpu_proof.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_proof_wheels.sh OUT_DIR [PYTHON_VERSION]}
PYV=${2:-3.12}
PY=.venv/bin/python
[ -x "$PY" ] || { echo "run ./run.sh setup first" >&2; exit 1; }
# transformers and its hub client, TRL and what it adds, retrieval's BM25, the CLI (typer needs pydantic)
PKGS=(transformers huggingface_hub httpx2 httpcore2 truststore kernels tomlkit regex trl datasets dill multiprocess
      peft bm25s typer pydantic pydantic_core annotated-types typing-inspection typing_extensions annotated-doc)
DEEPSPEED=(einops hjson msgpack ninja py-cpuinfo psutil nvidia-ml-py)  # its runtime requirements; no version in .venv
mkdir -p "$OUT/wheels" "$OUT/tokenizer"
PINS=$("$PY" - "${PKGS[@]}" <<'EOF'
import importlib.metadata as md, sys
print(" ".join(f"{p}=={md.version(p)}" for p in sys.argv[1:]))
EOF
)
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT/wheels" $PINS "${DEEPSPEED[@]}"
# DS_BUILD_OPS=0 (its default): a pure-Python wheel, ops compiled on first use where they are needed
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "deepspeed>=0.18.6"
"$PY" - "$OUT/tokenizer" <<'EOF'
import sys
from transformers import AutoTokenizer
from mmrag_rft.models.default import ensure_default_model
AutoTokenizer.from_pretrained(str(ensure_default_model())).save_pretrained(sys.argv[1])
EOF
if [ -n "${XZ:-}" ]; then
  TMP=$(mktemp -d)
  mkdir "$TMP/wheels"
  for w in "$OUT"/wheels/*.whl; do
    mkdir "$TMP/x" && (cd "$TMP/x" && unzip -q "$(realpath "$w")" && zip -q -0 -r -X "$TMP/wheels/$(basename "$w")" .)
    rm -rf "$TMP/x"
  done
  tar -C "$TMP" -cf - wheels | xz -9 > "$OUT/wheels.tar.xz"
  rm -rf "$TMP"
fi
du -sh "$OUT"/*
