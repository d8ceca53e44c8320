"""Why stage-1 GRPO collapses to one verdict, shown on a model small enough to run hundreds of times.

A point-wise judge with balanced labels has a *flat* objective along its yes/no prior: a policy that does not yet
discriminate earns accuracy 0.5 whatever its P(yes), so the expected GRPO gradient on the shared prior is zero
while its sampling noise is not. The prior random-walks until every group of completions is unanimous, where the
group-relative advantage (and with it the whole gradient) is zero: an absorbing state. Cross-entropy (the
supervised reference) is curved along the prior and pulls it back; so is a KL term to the reference policy
(GRPO's `beta`), which is the lever this script measures.

The model is a logistic judge, P(yes | x) = sigmoid(sum(b) + w . x) (b: `--prior-params` weights, because Adam moves
each of the many weights that shift a network's prior by about lr per step), with x = y * signal * e0 + N(0, I) in
`--dims` dimensions (y = +1 relevant, -1 not). Training follows TRL's GRPO for a one-token completion: `--prompts`
prompts per step (relevant and irrelevant alternating, as `data.balanced_steps`), `--generations` sampled verdicts
each, reward 1 when the verdict matches the label, advantage (r - group mean) / (group std + 1e-4), loss -mean(A *
log pi) + beta * k3-KL to the starting policy, Adam. Many seeds per setting; reports the share of runs absorbed
(every group unanimous for `--patience` steps in a row), the final P(yes) and the held-out AUC. No language model is
involved: it isolates the dynamics, it does not predict the LLM's numbers.

    .venv/bin/python benchmarks/grpo_prior_drift.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from mmrag_rft.metrics.ranking import roc_auc  # noqa: E402


def run(*, objective: str, beta: float, lr: float, seed: int, args: argparse.Namespace) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    d, n, k = args.dims, args.prompts, args.generations

    def draw(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tensor([1.0, -1.0]).repeat((m + 1) // 2)[:m]  # balanced steps: alternate labels
        x = torch.randn(m, d, generator=g)
        x[:, 0] += y * args.signal
        return x, (y > 0).float()

    b = torch.zeros(args.prior_params, requires_grad=True)  # the prior lives in many weights, as in a LoRA
    w = torch.zeros(d, requires_grad=True)
    opt = torch.optim.Adam([b, w], lr=lr)
    run_len, absorbed_at, zero_fracs = 0, None, []
    for step in range(1, args.steps + 1):
        x, y = draw(n)
        logit = b.sum() + x @ w
        if objective == "sft":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
            zero = 0.0
        else:
            p = torch.sigmoid(logit).detach()
            verdict = (torch.rand(n, k, generator=g) < p[:, None]).float()  # 1 = "yes"
            reward = (verdict == y[:, None]).float()
            std = reward.std(dim=1, keepdim=True)  # unbiased, as TRL
            adv = (reward - reward.mean(dim=1, keepdim=True)) / (std + 1e-4)
            zero = float((std.squeeze(1) == 0).float().mean())
            logp_yes = torch.nn.functional.logsigmoid(logit)[:, None]
            logp_no = torch.nn.functional.logsigmoid(-logit)[:, None]
            logp = verdict * logp_yes + (1 - verdict) * logp_no
            loss = -(adv * logp).mean()
            if beta:
                # k3 estimator of KL(pi || ref) on the sampled tokens; ref = the starting policy (P(yes) = 0.5)
                delta = torch.log(torch.tensor(0.5)) - logp
                loss = loss + beta * (torch.exp(delta) - delta - 1).mean()
        zero_fracs.append(zero)
        run_len = run_len + 1 if zero == 1.0 else 0
        if absorbed_at is None and run_len >= args.patience:
            absorbed_at = step - args.patience + 1
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y = draw(args.eval_pairs)
        p = torch.sigmoid(b.sum() + x @ w)
    return {"absorbed_at": absorbed_at, "p_yes": float(p.mean()),
            "auc": roc_auc(p.tolist(), [bool(v) for v in y.tolist()]),
            "frac_zero_std_last10": sum(zero_fracs[-10:]) / 10}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=174, help="steps per run (174 x 4 prompts = the 698 stage-1 prompts)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--dims", type=int, default=32)
    ap.add_argument("--prior-params", type=int, default=16,
                    help="weights that move the yes/no prior alike (Adam steps each by about lr)")
    ap.add_argument("--signal", type=float, default=0.25, help="mean shift of the one informative feature")
    ap.add_argument("--lr", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--beta", type=float, nargs="+", default=[0.0, 0.04, 0.3, 1.0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--eval-pairs", type=int, default=400)
    ap.add_argument("--name", default="grpo_prior_drift")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    settings = [("sft", 0.0, lr) for lr in args.lr] + [("grpo", beta, lr) for lr in args.lr for beta in args.beta]
    rows, table = [], []
    with common.progress() as bar:
        task = bar.add_task("settings", total=len(settings) * args.seeds)
        for objective, beta, lr in settings:
            runs = []
            for seed in range(args.seeds):
                runs.append(run(objective=objective, beta=beta, lr=lr, seed=seed, args=args))
                bar.advance(task)
            absorbed = [r["absorbed_at"] for r in runs if r["absorbed_at"] is not None]
            row = {"objective": objective, "beta": beta, "lr": lr, "runs": len(runs),
                   "absorbed_share": len(absorbed) / len(runs),
                   "median_absorbed_at": sorted(absorbed)[len(absorbed) // 2] if absorbed else None,
                   "mean_auc": sum(r["auc"] for r in runs) / len(runs),
                   "mean_abs_p_yes_minus_half": sum(abs(r["p_yes"] - 0.5) for r in runs) / len(runs),
                   "per_seed": runs}
            rows.append(row)
            table.append([objective, beta if objective == "grpo" else "-", lr, f"{row['absorbed_share']:.2f}",
                          row["median_absorbed_at"] or "-", f"{row['mean_auc']:.3f}",
                          f"{row['mean_abs_p_yes_minus_half']:.3f}"])
    common.print_table("GRPO on a logistic judge, balanced labels (no language model)",
                       ["objective", "beta", "lr", "absorbed", "median step", "held-out AUC", "|P(yes) - 0.5|"], table)
    path = common.write_result(args.name, {"settings": {k: v for k, v in vars(args).items() if k != "name"},
                                           "results": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
