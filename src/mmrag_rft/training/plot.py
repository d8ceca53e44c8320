"""Training curves from a run's log.jsonl: reward components, KL, completion length, zero-variance share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrag_rft.training.run_log import read_log


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and "train_runtime" not in r:
            xs.append(int(r.get("step", 0)))
            ys.append(float(v))
    return xs, ys


def plot_training(run_dir: str | Path, out: str | Path | None = None, title: str | None = None) -> Path:
    """Draw the curves of `run_dir/log.jsonl` to a PNG (default `run_dir/training.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    log = run / "log.jsonl" if run.is_dir() else run
    rows = read_log(log)
    if not rows:
        raise ValueError(f"{log}: no log rows to plot")
    reward_keys = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    for k in reward_keys + ["reward"]:
        xs, ys = _series(rows, k)
        if xs:
            ax.plot(xs, ys, label=k.removeprefix("rewards/").removesuffix("/mean"), lw=2 if k == "reward" else 1)
    ax.set_title("rewards (mean per step)")
    ax.legend(fontsize=8)
    for ax, key, name in ((axes[0][1], "kl", "KL to reference"), (axes[1][0], "completions/mean_length",
                                                                      "completion length (tokens)"),
                          (axes[1][1], "frac_reward_zero_std", "share of groups with zero reward variance")):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys)
        else:
            ax.text(0.5, 0.5, f"no '{key}' logged" + (" (beta = 0)" if key == "kl" else ""), ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_title(name)
    for row in axes:
        for ax in row:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    fig.suptitle(title or str(run))
    fig.tight_layout()
    dest = Path(out) if out else (run if run.is_dir() else run.parent) / "training.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    from mmrag_rft.config import save_png

    save_png(fig, dest, dpi=110)
    return dest
