"""Stage-2 GRPO advantages over all of a question's orders (`grpo.advantage_group: question`).

TRL normalises a completion's reward within its prompt's group. With `data.balanced_steps` a step shows one question
in each of its `data.permutations` orders; once every completion of a prompt writes the same list, the group's
ranking reward has no variance and the update says nothing about ranking. Normalised over all the question's
completions instead, a list that names a position earns more in the order where that position holds gold than in the
other, so its advantage takes opposite signs in the two orders and only a list that follows the candidates is
reinforced in both. The other orders' rewards do not depend on a completion's tokens, so this baseline leaves the
policy gradient unbiased (a control variate); only which completions count as better than the rest changes.

TRL computes the advantage inside `_generate_and_score_completions` with no hook, so the rewards it gathered are kept
(`_calculate_rewards`) and the advantage is computed again from them, as TRL's `sum_then_normalize` does, but per
question instead of per prompt.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from accelerate.utils import gather_object
from trl.trainer.utils import nanstd

from mmrag_rft.training.shared_prompt import SharedPromptGRPOTrainer

ADVANTAGE_GROUPS = ("prompt", "question")


def grouped_advantages(rewards: torch.Tensor, groups: Sequence[str], scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantage, whether the row's group has zero reward variance) for each row.

    The advantage is the reward minus its group's mean, divided by the group's std (`scale` 'group'), by all rows'
    std ('batch') or by nothing ('none'), each + 1e-4 as TRL does. NaN rewards (unscorable) stay out of the
    mean and std and get advantage 0.
    """
    if len(groups) != rewards.numel():
        raise ValueError(f"{len(groups)} group names for {rewards.numel()} rewards")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale!r}")
    mean = torch.empty_like(rewards)
    std = torch.empty_like(rewards)
    for g in dict.fromkeys(groups):
        rows = torch.tensor([i for i, name in enumerate(groups) if name == g], device=rewards.device)
        r = rewards[rows]
        mean[rows] = torch.nanmean(r)
        std[rows] = nanstd(r) if r.numel() > 1 else 0.0
    zero = torch.isclose(std, torch.zeros_like(std))
    adv = rewards - mean
    if scale == "group":
        adv = adv / (std + 1e-4)
    elif scale == "batch":
        adv = adv / ((nanstd(rewards) if rewards.numel() > 1 else 0.0) + 1e-4)
    return torch.nan_to_num(adv, nan=0.0), zero


class GroupedGRPOTrainer(SharedPromptGRPOTrainer):
    """The trainer both stages use: prompt sharing (`SharedPromptGRPOTrainer`) and, with `advantage_group`
    'question', each completion's advantage taken over every order of its question (`qid` column)."""

    def __init__(self, *args: Any, advantage_group: str = "prompt", **kwargs: Any) -> None:
        if advantage_group not in ADVANTAGE_GROUPS:
            raise ValueError(f"grpo.advantage_group must be one of {ADVANTAGE_GROUPS}, got {advantage_group!r}")
        super().__init__(*args, **kwargs)
        if advantage_group == "question" and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("grpo.advantage_group 'question' recomputes TRL's 'sum_then_normalize' advantage; "
                             f"multi_objective_aggregation is {self.multi_objective_aggregation!r}")
        self.advantage_group = advantage_group
        self._gathered_rewards: torch.Tensor | None = None

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> torch.Tensor:
        self._gathered_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._gathered_rewards

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)
        if self.advantage_group == "prompt":
            return out
        per_func = self._gathered_rewards  # every process's rows, in process order (as TRL normalises them)
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        qids = gather_object([str(x["qid"]) for x in inputs])
        adv, zero = grouped_advantages(rewards, qids, self.scale_rewards)
        n = len(inputs)
        start = self.accelerator.process_index * n
        out["advantages"] = adv[start:start + n].to(out["advantages"].device, out["advantages"].dtype)
        logged = self._logs["advantages"]  # TRL logged every process's per-prompt advantages last: show these instead
        for _ in range(min(len(logged), adv.numel())):
            logged.pop()
        logged.extend(adv.tolist())
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["frac_question_reward_zero_std"].append(zero.float().mean().item())
        return out
