# Sourced by the recipes: train_or_resume STAGE RUN ARGS... runs `mmrag train STAGE ARGS --output RUN`, continuing
# the run when it has a checkpoint and starting over when it was killed before its first one.
train_or_resume() {
  local stage=$1 run=$2 rc=0 mode=()
  shift 2
  if compgen -G "$run/checkpoint-*" >/dev/null; then
    mode=(--resume)
  elif [ -d "$run" ] && [ -n "$(ls -A "$run")" ]; then  # nothing resumable; caches such as stage1_scores.json stay
    mode=(--overwrite)
  fi
  .venv/bin/mmrag --threads "$THREADS" train "$stage" "$@" --output "$run" "${mode[@]}" || rc=$?
  if [ "$rc" = 137 ]; then  # SIGKILL: the process had no chance to say why
    echo "[train] $run: killed by the system (SIGKILL), most likely for memory. The last rows of $run/log.jsonl" \
         "carry peak_memory_gb. Lower grpo.per_device_train_batch_size (raise gradient_accumulation_steps to keep" \
         "the step's size), then run the same command again: it resumes." >&2
  fi
  return "$rc"
}
