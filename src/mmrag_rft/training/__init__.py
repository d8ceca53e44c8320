"""Two-stage reinforcement fine-tuning on TRL: example builders, typed config, format warm-up, GRPO runs.

Heavy imports (torch, transformers, TRL) happen inside the functions that need them.
"""

from mmrag_rft.training.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config"]
