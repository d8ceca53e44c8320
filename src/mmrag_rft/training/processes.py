"""Where this process stands among those launched (accelerate launch, torchrun): one place, for training and its
trainer subclass alike."""

from __future__ import annotations

from typing import Any


def process_state() -> Any:
    """This process's place among those launched, set up as TRL's Trainer will set it up (`use_cpu` where there is
    no GPU: CPU processes then talk over gloo)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_zero3(accelerator: Any) -> bool:
    """DeepSpeed ZeRO-3: each process holds only a shard of the model's large weights."""
    ds = getattr(accelerator.state, "deepspeed_plugin", None)
    return ds is not None and getattr(ds, "zero_stage", 0) == 3
