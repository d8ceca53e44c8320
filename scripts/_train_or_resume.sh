# Sourced by the recipes: train_or_resume STAGE RUN ARGS... runs `mmrag train STAGE ARGS --output RUN`, continuing
# the run when it has a checkpoint and starting over when it was killed before its first one.
train_or_resume() {
  local stage=$1 run=$2
  shift 2
  if compgen -G "$run/checkpoint-*" >/dev/null; then
    .venv/bin/mmrag --threads "$THREADS" train "$stage" "$@" --output "$run" --resume
  elif [ -d "$run" ] && [ -n "$(ls -A "$run")" ]; then  # nothing resumable; caches such as stage1_scores.json stay
    .venv/bin/mmrag --threads "$THREADS" train "$stage" "$@" --output "$run" --overwrite
  else
    .venv/bin/mmrag --threads "$THREADS" train "$stage" "$@" --output "$run"
  fi
}
