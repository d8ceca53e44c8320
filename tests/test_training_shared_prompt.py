"""The shared-prompt GRPO passes compute what TRL's per-row passes compute: log-probs, entropies, gradients and
generations, on the tiny Llama with left padding and groups of repeated prompts."""

from __future__ import annotations

import pytest
import torch

from mmrag_rft.training.shared_prompt import SharedPromptGRPOTrainer, unique_rows

pytestmark = pytest.mark.slow

PROMPTS = ["Is the passage about the Eiffel Tower relevant to the question of how tall it is? Answer yes or no.",
           "Question: what colour is the station roof? Candidate: a red roof."]


def test_unique_rows_keeps_batch_order():
    rows = torch.tensor([[3, 1], [3, 1], [0, 2], [3, 1], [0, 2], [5, 5]])
    first, inverse = unique_rows(rows)
    assert first.tolist() == [0, 2, 5]
    assert inverse.tolist() == [0, 0, 1, 0, 1, 2]
    assert torch.equal(rows[first][inverse], rows)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig

    from mmrag_rft.models.loading import load_for_training

    model, tok = load_for_training("tiny-lm")
    # no dropout: the shared pass draws LoRA dropout once per group, TRL's once per row
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapter matter for the gradients
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), num_generations=3,
                      per_device_train_batch_size=6, max_completion_length=5, use_cpu=True, report_to="none",
                      beta=0.0, temperature=1.0, gradient_checkpointing=False, bf16=False)
    ds = Dataset.from_list([{"prompt": p} for p in PROMPTS])
    t = SharedPromptGRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                                args=args, train_dataset=ds, processing_class=tok)
    assert t.share_prompt, t.share_prompt_off_reason
    return t


def _batch(tok):
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    width = max(len(x) for x in ids)
    rows, masks = [], []
    for x in ids:  # left padding, each prompt repeated for its group of 3 completions
        for _ in range(3):
            rows.append([tok.pad_token_id] * (width - len(x)) + x)
            masks.append([0] * (width - len(x)) + [1] * len(x))
    g = torch.Generator().manual_seed(0)
    comp = torch.randint(10, 1000, (6, 5), generator=g)
    cmask = torch.ones(6, 5, dtype=torch.long)
    cmask[1, 3:] = 0  # finished early: padded after its end
    cmask[4, 1:] = 0
    return torch.cat([torch.tensor(rows), comp], 1), torch.cat([torch.tensor(masks), cmask], 1), cmask


def _pass(trainer, share, ids, mask, batch_size=None):
    trainer.share_prompt = share
    trainer.model.zero_grad()
    logps, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 5, batch_size=batch_size,
                                                                compute_entropy=True)
    (logps * mask[:, -5:]).sum().backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.share_prompt = True
    return logps.detach(), ent.detach(), grads


def test_logprobs_entropies_and_gradients_match_trl(trainer):
    ids, mask, cmask = _batch(trainer.processing_class)
    assert (mask[:, 0] == 0).any()  # the shorter prompt is left-padded
    before = dict(trainer.shared_prompt_stats)
    lp_s, ent_s, g_s = _pass(trainer, True, ids, mask)
    assert trainer.shared_prompt_stats["logprob_rows"] - before["logprob_rows"] == 6
    assert trainer.shared_prompt_stats["logprob_prompt_rows"] - before["logprob_prompt_rows"] == 2  # 2 prompts, once
    lp_t, ent_t, g_t = _pass(trainer, False, ids, mask)
    m = cmask.bool()
    torch.testing.assert_close(lp_s[m], lp_t[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent_s[m], ent_t[m], atol=1e-5, rtol=1e-5)
    assert g_t and all(g.abs().sum() > 0 for g in g_t.values())
    for n in g_t:
        torch.testing.assert_close(g_s[n], g_t[n], atol=1e-4, rtol=1e-4)
    # in chunks that split a group, too (TRL's batch_size for the no-grad passes)
    lp_c, _, _ = _pass(trainer, True, ids, mask, batch_size=4)
    torch.testing.assert_close(lp_c[m], lp_t[m], atol=1e-5, rtol=1e-5)


def test_generation_matches_trl(trainer):
    tok = trainer.processing_class
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS for _ in range(3)]
    cfg = trainer.generation_config
    saved = cfg.do_sample
    cfg.do_sample = False  # greedy: the two paths must pick the same tokens
    try:
        before = trainer.shared_prompt_stats["generate_prompt_rows"]
        trainer.share_prompt = True
        shared, _ = trainer._generate_single_turn(prompt_ids, None, {}, 3)
        assert trainer.shared_prompt_stats["generate_prompt_rows"] - before == 2
        assert "generate" not in vars(trainer.accelerator.unwrap_model(trainer.model_wrapped))  # wrapper removed
        trainer.share_prompt = False
        plain, _ = trainer._generate_single_turn(prompt_ids, None, {}, 3)
    finally:
        cfg.do_sample = saved
        trainer.share_prompt = True
    assert shared == plain
    assert all(len(c) == 5 for c in plain)  # random weights rarely stop early: all 5 tokens were compared


DDP_SCRIPT = '''
import hashlib, os, sys, tempfile
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import GRPOConfig
from mmrag_rft.models.loading import load_for_training
from mmrag_rft.training.shared_prompt import SharedPromptGRPOTrainer

model, tok = load_for_training("tiny-lm")
model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                         task_type="CAUSAL_LM"))
args = GRPOConfig(output_dir=tempfile.mkdtemp(), num_generations=2, per_device_train_batch_size=4,
                  max_completion_length=4, use_cpu=True, report_to="none", bf16=False, gradient_checkpointing=False,
                  max_steps=2, learning_rate=1e-2, save_strategy="no", beta=0.1, seed=0)
ds = Dataset.from_list([{"prompt": f"Question {i}: is passage {i} about the tower relevant? yes or no"}
                        for i in range(16)])
t = SharedPromptGRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                            reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]])
t.train()
m = t.accelerator.unwrap_model(t.model)
h = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in m.parameters() if p.requires_grad)).hexdigest()
st = t.shared_prompt_stats
print(f"\\nRANK {t.accelerator.process_index} share={t.share_prompt} prompts={st['logprob_prompt_rows']}"
      f" rows={st['logprob_rows']} weights={h}", flush=True)
# tear the gloo group down, then skip interpreter finalisation: gloo's worker threads can abort it (SIGABRT)
t.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()
sys.stdout.flush()
os._exit(0)
'''


def test_two_process_ddp_keeps_ranks_in_sync(tmp_path):
    """torchrun, 2 CPU processes (gloo): the prompt pass runs outside DDP's forward, so check that the gradients
    were still all-reduced: both ranks end with the same LoRA weights."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", str(script)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two ranks print concurrently with the trainer's own logging: read the fields, not whole lines
    found = re.findall(r"RANK (\d) share=(\w+) prompts=(\d+) rows=(\d+) weights=([0-9a-f]{40})", proc.stdout)
    ranks = {r: (share, int(p), int(n), h) for r, share, p, n, h in found}
    assert set(ranks) == {"0", "1"}, proc.stdout
    for share, prompts, rows, _ in ranks.values():
        assert share == "True"
        assert 0 < prompts < rows  # the shared pass ran: fewer prompt rows than completion rows
    assert ranks["0"][3] == ranks["1"][3]


def test_question_wide_advantage_is_what_the_loss_and_the_completion_log_use(tmp_path):
    """`advantage_group: question`: the advantages handed to the loss, and the ones TRL logs with the completions,
    are the rewards normalised over each question's rows (both orders), not over each prompt's."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig

    from mmrag_rft.models.loading import load_for_training
    from mmrag_rft.training.advantages import GroupedGRPOTrainer, grouped_advantages

    model, tok = load_for_training("tiny-lm")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"],
                                             task_type="CAUSAL_LM"))
    args = GRPOConfig(output_dir=str(tmp_path), num_generations=3, per_device_train_batch_size=6,
                      max_completion_length=6, use_cpu=True, report_to="none", beta=0.0, temperature=1.0,
                      gradient_checkpointing=False, bf16=False, seed=0)
    rows = [{"prompt": PROMPTS[0], "qid": "q"}, {"prompt": PROMPTS[1], "qid": "q"}]
    t = GroupedGRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                           reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]],
                           advantage_group="question")
    inputs = [r for r in rows for _ in range(3)]
    out = t._generate_and_score_completions(inputs)
    rewards = t._gathered_rewards.nansum(dim=1)
    assert rewards.std() > 0, "the sampled completions all had one length; the check below would prove nothing"
    expected, _ = grouped_advantages(rewards, ["q"] * 6, "group")
    per_prompt, _ = grouped_advantages(rewards, ["a"] * 3 + ["b"] * 3, "group")
    assert not torch.allclose(expected, per_prompt)
    assert torch.allclose(out["advantages"], expected)
    assert list(t._logs["advantages"]) == pytest.approx(expected.tolist())
