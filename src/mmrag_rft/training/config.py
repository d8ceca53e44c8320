"""Typed training configuration: every GRPO knob is explicit here, so a YAML file is the whole experiment.

Field names of `GRPOSection` follow TRL 1.16's `GRPOConfig` one to one (checked against the installed
package; `max_prompt_length` no longer exists there, so prompts are bounded by `data.max_chars` instead).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from mmrag_rft.config import load as _load
from mmrag_rft.data.schema import Modality
from mmrag_rft.prompts import Stage1Layout
from mmrag_rft.rewards import RewardConfig


@dataclass
class ModelSection:
    # a `models.loading` spec: "base" (untrained SmolLM2-135M-Instruct), "default" (the shipped stage-1 model),
    # "tiny-lm", "tiny-vlm", a model / run / adapter folder, or a hub id in the cache
    path: str = "default"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = None  # e.g. "flash_attention_2" / "sdpa" on GPU
    use_pixels: bool = True  # give image pixels to a vision-language model (captions are always given)
    max_pixels: int | None = None  # Qwen2-VL processors: cap on pixels per image (None = processor default)

    RANGES = {"max_pixels": (1, None)}


@dataclass
class DataSection:
    path: str = ""  # a WebQA/MMQA/our-JSONL file or folder (anything `mmrag_rft.data.loaders.load_samples` reads)
    format: str = "auto"
    limit: int | None = None  # questions read (None = all)
    val_fraction: float = 0.2  # held-out share of *questions* (split by question id, never by candidate)
    split_seed: int = 0
    # stage 1
    balance: float | None = 1.0  # negatives kept per positive (1.0 = 1:1); None keeps every pair
    max_pairs_per_question: int | None = None
    other_negatives: float = 0.0  # share of negatives taken from other questions (off-topic, as in a corpus-wide pool)
    # candidate modalities that make training pairs (None = all). [image] on WebQA (every gold piece an image)
    # makes pairs differ in content only, but the model then never sees a text passage
    modalities: list[Modality] | None = None
    # share of stage-1 training candidates shown under the other modality's label (image caption <-> text), so
    # that the label says nothing about relevance where every gold piece has one modality (0 = as they are)
    label_swap: float = 0.0
    # text candidates cut to their first N words in stage-1 training, as short as a caption, so that length and
    # form do not tell a caption from a passage (None = whole)
    clip_words: int | None = None
    # False = the "no <think>" ablation: the prefill closes an empty think block and the policy writes only the
    # verdict, i.e. RL trains exactly the distribution the coarse filter reads P(yes) from (score mode); in stage 2
    # the prefill also opens `<rank>[`, so the first token written is the first ranked id (what
    # `stage2_ranking: likelihood` reads)
    think: bool = True
    # how the stage-1 user turn is laid out (`prompts.STAGE1_LAYOUTS`); the pipeline must use the same layout
    layout: Stage1Layout = "default"
    # a fixed order (TRL's shuffle turned off) so that every GRPO step is balanced: stage 1, relevant and irrelevant
    # prompts alternate (`examples.interleave_by_label`); stage 2, each question's `permutations` orders are
    # consecutive, so a step shows one question in every order (`examples.group_by_question`). False = TRL's order
    balanced_steps: bool = False
    # stage 2
    num_candidates: int = 5  # K: gold + the hardest negatives
    permutations: int = 1  # shuffled copies of each question (against position bias)
    max_gold: int | None = None  # gold pieces per training row at most (None: up to K); a row all gold teaches no ranking
    negatives: Literal["stage1", "retrieval", "pool"] = "retrieval"  # how "hardest" negatives are ordered
    # stage1 negatives: the model spec whose P(yes) orders them ("": the --init model). One model per stage: the
    # shipped stage-1 model (`default`) ordering the negatives of a stage-2 run on another reader.
    negatives_model: str = ""
    max_chars: int = 600  # per candidate text in the prompt (the prompt-length bound)
    seed: int = 0

    RANGES = {"limit": (1, None), "val_fraction": (0.0, 0.99), "balance": (0.0, None), "max_pairs_per_question": (1, None),
              "other_negatives": (0.0, 1.0), "label_swap": (0.0, 1.0), "clip_words": (1, None),
              "num_candidates": (1, 100), "permutations": (1, 100), "max_gold": (1, 100), "max_chars": (1, None)}


@dataclass
class GRPOSection:
    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    beta: float = 0.0  # KL coefficient; 0 = no reference model (TRL default), paper-scale configs use 0.04
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    num_iterations: int = 1
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    max_completion_length: int = 64
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    # completions per device per step; x gradient_accumulation_steps x processes must hold whole groups of
    # num_generations (checked by `train` and `--dry-run`, which know the process count)
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    generation_batch_size: int | None = None
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int | None = 3
    seed: int = 42
    bf16: bool = False
    gradient_checkpointing: bool = False
    use_vllm: bool = False
    # run each prompt once for its group of completions (generation, reference and loss passes); off = TRL's own
    # per-row passes. Text-only models; see training/shared_prompt.py for when it falls back by itself.
    share_prompt: bool = True
    # what a completion's reward is compared with: its prompt's completions (TRL's GRPO), or every completion of its
    # question in all the step's orders (stage 2 with data.balanced_steps; see training/advantages.py)
    advantage_group: Literal["prompt", "question"] = "prompt"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_enable_sleep_mode: bool = False
    ds3_gather_for_generation: bool = True
    log_completions: bool = False
    report_to: str = "none"

    RANGES = {"num_generations": (2, None), "temperature": (1e-3, 10.0), "top_p": (1e-6, 1.0), "top_k": (0, None),
              "repetition_penalty": (1e-3, None), "beta": (0.0, None), "epsilon": (0.0, 1.0), "epsilon_high": (0.0, 1.0),
              "num_iterations": (1, None), "max_completion_length": (1, None), "learning_rate": (1e-12, 1.0),
              "warmup_steps": (0, None), "weight_decay": (0.0, None), "max_grad_norm": (0.0, None),
              "num_train_epochs": (0.0, None), "max_steps": (-1, None), "per_device_train_batch_size": (1, None),
              "gradient_accumulation_steps": (1, None), "generation_batch_size": (1, None), "logging_steps": (1, None),
              "save_steps": (1, None), "save_total_limit": (1, None), "vllm_gpu_memory_utilization": (0.01, 1.0)}


@dataclass
class LoraSection:
    enabled: bool = True  # False = full fine-tune
    r: int = 16  # LoRA rank
    alpha: int = 32  # LoRA scaling numerator (the update is scaled by alpha / r)
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])  # linear layers adapted
    freeze_vision: bool = True  # no LoRA and no gradient for the vision tower of a VLM
    # LoRA on the last N decoder layers only (None = all): nothing below the lowest adapter records an autograd
    # graph, so forward, backward and generation all get cheaper
    top_layers: int | None = None

    RANGES = {"r": (1, 1024), "alpha": (1, None), "dropout": (0.0, 0.99), "top_layers": (1, None)}


@dataclass
class WarmupSection:
    """Supervised warm-up on the output *format* only (never on gold labels), before RL."""

    enabled: bool = False  # run the format warm-up before RL (saved to OUTPUT/warmup/, reused on resume)
    steps: int = 30  # optimizer steps of the warm-up
    learning_rate: float = 2e-4  # AdamW learning rate of the warm-up's temporary LoRA
    batch_size: int = 4  # rows per warm-up step
    seed: int = 0  # which rows and which random targets the warm-up draws

    RANGES = {"steps": (0, None), "learning_rate": (1e-12, 1.0), "batch_size": (1, None)}


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    lora: LoraSection = field(default_factory=LoraSection)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    warmup: WarmupSection = field(default_factory=WarmupSection)
    output_dir: str = "runs/train"  # the run folder (`--output` sets it)
    # stop once the share of zero-reward-variance groups, averaged over the last this-many logged steps, reaches
    # stop_zero_std_mean (a collapsed policy: the gradient is ~0 without a KL term); null never stops early
    stop_after_zero_std_steps: int | None = 10
    stop_zero_std_mean: float = 0.95

    RANGES = {"stop_after_zero_std_steps": (1, None), "stop_zero_std_mean": (1e-6, 1.0)}

    def __post_init__(self) -> None:
        from mmrag_rft.config import check_ranges

        g = self.grpo
        for section in (self, self.model, self.data, g, self.lora, self.warmup, self.rewards):  # built in Python
            check_ranges(section)
        if g.max_steps == 0 or (g.max_steps < 0 and g.num_train_epochs <= 0):
            raise ValueError("nothing to train: set grpo.max_steps > 0 or grpo.num_train_epochs > 0")


def load_train_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> TrainConfig:
    return _load(TrainConfig, path, overrides)
