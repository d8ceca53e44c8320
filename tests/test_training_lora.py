"""LoRA placement: only the last N decoder layers carry adapters, the vision tower none, and the backward pass
gives no gradient below the lowest adapted layer."""

from __future__ import annotations

import pytest

from mmrag_rft.training.config import TrainConfig
from mmrag_rft.models.loading import load_model
from mmrag_rft.training.lora import add_lora, text_layer_count


@pytest.mark.parametrize("spec,is_vlm", [("tiny-lm", False), ("tiny-vlm", True)])
def test_top_layers_adapts_only_the_last_layers(spec, is_vlm):
    import torch

    model = load_model(spec)
    n = text_layer_count(model)
    cfg = TrainConfig()
    cfg.lora.top_layers = 1
    peft = add_lora(model, cfg, is_vlm)
    adapted = {name.split(".lora_A")[0] for name, _ in peft.named_parameters() if ".lora_A" in name}
    assert adapted, "no LoRA module was created"
    assert all(f".layers.{n - 1}." in a for a in adapted), adapted
    assert not any("visual" in a for a in adapted)
    assert {a.rsplit(".", 1)[1] for a in adapted} == set(cfg.lora.target_modules)

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    peft(input_ids=ids, labels=ids).loss.backward()
    grads = [n_ for n_, p in peft.named_parameters() if p.grad is not None]
    assert grads and all(".lora_" in g and f".layers.{n - 1}." in g for g in grads)


def test_top_layers_out_of_range_is_a_clear_error():
    model = load_model("tiny-lm")
    cfg = TrainConfig()
    cfg.lora.top_layers = text_layer_count(model) + 1
    with pytest.raises(ValueError, match="lora.top_layers"):
        add_lora(model, cfg, False)


def test_all_layers_by_default():
    model = load_model("tiny-lm")
    n = text_layer_count(model)
    peft = add_lora(model, TrainConfig(), False)
    layers = {int(name.split(".layers.")[1].split(".")[0]) for name, _ in peft.named_parameters() if ".lora_A" in name}
    assert layers == set(range(n))


def test_top_layers_below_one_is_a_config_error():
    from mmrag_rft.config import ConfigError
    from mmrag_rft.training.config import load_train_config

    with pytest.raises(ConfigError, match=r"override lora.top_layers=0: must be >= 1"):
        load_train_config(None, ["lora.top_layers=0"])

