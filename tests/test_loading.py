"""QwenLiteVL.from_pretrained on hostile checkpoint folders: each refusal names the file or argument and the rule.

Folders, weights (keys, shapes, a tied lm_head, non-finite values), the dtype and device asked for,
generation_config.json, and the special token ids of config.json against the tokenizer's. Each hostile folder is
built in tmp_path from the tiny twin's files (`helpers.hostile_checkpoint`: small files copied, big ones linked);
the `twin` fixture checks that the twin's own folder is never written to. The config.json rules are in
tests/test_config.py, the safetensors and shard-index rules in tests/test_checkpoint.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import folder_snapshot, hostile_checkpoint, replace
from safetensors.torch import load_file, save_file

from qwenlite import Processor, QwenLiteVL
from qwenlite.reference import load_models

LOADERS = {"qwenlite": QwenLiteVL.from_pretrained, "load_models": load_models}

# ---------------------------------------------------------------- folders


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_folder_that_does_not_exist(loader, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config.json at .*nowhere.*: expected a Qwen2.5-VL checkpoint"):
        loader(tmp_path / "nowhere")


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_folder_without_config(loader, tmp_path, twin):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no config.json at .*ckpt.*: expected a Qwen2.5-VL checkpoint"):
        loader(folder)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_folder_without_weights(loader, tmp_path, twin):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", weights=False)
    with pytest.raises(FileNotFoundError, match="no model.safetensors or model.safetensors.index.json in .*ckpt"):
        loader(folder)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_foreign_architecture(loader, tmp_path, twin):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt")
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "vocab_size": 100}
    (folder / "config.json").write_text(json.dumps(llama))
    with pytest.raises(ValueError, match=r"model_type is 'llama' \(architectures \['LlamaForCausalLM'\]\), expected"):
        loader(folder)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_pickle_weights_are_refused(loader, tmp_path, twin):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", weights=False)
    torch.save({"model.norm.weight": torch.ones(3)}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"found \['pytorch_model.bin'\]: only safetensors are loaded"):
        loader(folder)


@pytest.mark.slow
def test_loading_never_writes_into_the_checkpoint_folder(ckpt):
    before = folder_snapshot(ckpt)
    QwenLiteVL.from_pretrained(ckpt)
    load_models(ckpt)  # qwenlite and the transformers reference on one read
    Processor.from_pretrained(ckpt)
    after = folder_snapshot(ckpt)
    assert after == before, {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }


# ---------------------------------------------------------------- weights


def _rewrite(tmp_path: Path, twin: Path, edit) -> Path:
    """A checkpoint whose single model.safetensors is the twin's with `edit` applied to its tensors."""
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", weights=False)
    state = load_file(twin / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("visual.blocks.0.attn.qkv.bias"), r"missing keys \(1\): \['visual.blocks.0.attn.qkv.bias'\]"),
        (
            lambda s: s.update({"visual.blocks.0.extra.weight": torch.zeros(2)}),
            r"unexpected keys \(1\): \['visual.blocks.0.extra.weight'\]",
        ),
        (
            lambda s: s.update({"model.norm.weight": torch.ones(3)}),
            r"wrong shapes \(1\): \['model.norm.weight: checkpoint \(3,\) vs model \(128,\)'\]",
        ),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_bad_keys_are_named(tmp_path, twin, edit, message):
    with pytest.raises(KeyError, match=message):
        QwenLiteVL.from_pretrained(_rewrite(tmp_path, twin, edit))


def test_untied_lm_head_in_a_tied_checkpoint(tmp_path, twin):
    folder = _rewrite(tmp_path, twin, lambda s: s.update({"lm_head.weight": s["model.embed_tokens.weight"] + 1}))
    with pytest.raises(ValueError, match="config ties lm_head to embed_tokens, but lm_head.weight differs"):
        QwenLiteVL.from_pretrained(folder)


def _one_tensor_replaced(twin: Path, folder: Path, key: str, tensor: torch.Tensor) -> Path:
    """The twin's weights (linked) with one tensor taken from a second shard instead: no 80 MB rewrite."""
    hostile_checkpoint(twin, folder, weights=False)
    (folder / "model-00001-of-00002.safetensors").symlink_to(twin / "model.safetensors")
    save_file({key: tensor}, folder / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    keys = load_file(twin / "model.safetensors").keys()
    weight_map = {
        k: "model-00002-of-00002.safetensors" if k == key else "model-00001-of-00002.safetensors" for k in keys
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("key", ["model.norm.weight", "visual.blocks.1.mlp.down_proj.bias"])
def test_one_non_finite_weight_is_refused_by_key(tmp_path, twin, value, dtype, key):
    """Before: loaded, then every logit NaN and generate emitting token 0 forever."""
    tensor = load_file(twin / "model.safetensors")[key].clone()
    tensor[3] = value
    folder = _one_tensor_replaced(twin, tmp_path / "ckpt", key, tensor)
    message = rf"checkpoint .*ckpt: tensor {re.escape(key)} holds 1 non-finite value\(s\) \(NaN or inf\)"
    with pytest.raises(ValueError, match=message):
        QwenLiteVL.from_pretrained(folder, dtype=dtype)


def test_the_second_shard_route_loads_when_the_tensor_is_finite(tmp_path, twin):
    """The non-finite cases above change one value: the same folder with the value intact must load."""
    tensor = load_file(twin / "model.safetensors")["model.norm.weight"]
    model = QwenLiteVL.from_pretrained(_one_tensor_replaced(twin, tmp_path / "ckpt", "model.norm.weight", tensor))
    assert torch.equal(model.model.norm.weight, tensor)


# ---------------------------------------------------------------- dtype and device


@pytest.mark.parametrize(
    "dtype, expected",
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16)],
)
def test_dtype_by_name_is_accepted(twin, dtype, expected):
    """transformers takes dtype="bfloat16" as well as torch.bfloat16; so does qwenlite, for these two names."""
    model = QwenLiteVL.from_pretrained(twin, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {expected}


@pytest.mark.parametrize(
    "dtype, why",
    [
        (torch.float16, "the real 3B's vision tower overflows float16"),
        ("float16", "the real 3B's vision tower overflows float16"),
        (torch.int8, "qwenlite runs in float32 or bfloat16 only"),
        (torch.float64, "qwenlite runs in float32 or bfloat16 only"),
        ("fp32", "qwenlite runs in float32 or bfloat16 only"),
        ("auto", "qwenlite runs in float32 or bfloat16 only"),
        (None, "qwenlite runs in float32 or bfloat16 only"),
    ],
    ids=["float16", "float16-name", "int8", "float64", "fp32", "auto", "none"],
)
def test_unsupported_dtypes_are_refused_with_the_reason(twin, dtype, why):
    message = rf"dtype={re.escape(repr(dtype))} is not supported: use torch.float32 or torch.bfloat16 .*: {why}"
    with pytest.raises(ValueError, match=message):
        QwenLiteVL.from_pretrained(twin, dtype=dtype)


def test_cuda_without_a_gpu_is_refused(twin, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda', but torch sees no CUDA device here"):
        QwenLiteVL.from_pretrained(twin, device="cuda")


def test_a_gpu_index_beyond_the_gpus_is_refused(twin, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device='cuda:3', but torch sees 1 CUDA device\(s\)"):
        QwenLiteVL.from_pretrained(twin, device="cuda:3")


@pytest.mark.parametrize(
    "device, message",
    [
        ("gpu0", r"device='gpu0' is not a device: use 'cpu' or 'cuda'"),
        (42.5, r"device=42.5 is not a device"),
        ("meta", r"device='meta': qwenlite loads weights onto cpu or cuda only"),
    ],
    ids=["gpu0", "float", "meta"],
)
def test_other_devices_are_refused(twin, device, message):
    with pytest.raises(ValueError, match=message):
        QwenLiteVL.from_pretrained(twin, device=device)


# ---------------------------------------------------------------- generation_config.json

HOSTILE_GENERATION_CONFIGS = {  # the file's text -> the rule its refusal must state after the file's name
    "not-json": ("{eos_token_id: 1", r" is not valid JSON"),
    "not-utf8": (b"\xff\xfe", r" is not valid JSON"),
    "a-list": ("[151645]", r" must be a JSON object, got list"),
    "penalty-nan": ('{"repetition_penalty": NaN}', r": repetition_penalty must be a finite number > 0 .* got nan"),
    "penalty-zero": ('{"repetition_penalty": 0}', r": repetition_penalty must be a finite number > 0 .* got 0"),
    "penalty-string": ('{"repetition_penalty": "1.05"}', r": repetition_penalty must be a finite number .* '1.05'"),
    "eos-beyond-vocab": ('{"eos_token_id": [151645, 900000]}', r": eos_token_id must be token ids in \[0, vocab_size"),
    "eos-string": ('{"eos_token_id": "<|im_end|>"}', r": eos_token_id must be token ids .* got '<\|im_end\|>'"),
    "pad-list": ('{"pad_token_id": [1, 2]}', r": pad_token_id must be one token id, got \[1, 2\]"),
}


@pytest.mark.parametrize("text, rule", HOSTILE_GENERATION_CONFIGS.values(), ids=HOSTILE_GENERATION_CONFIGS.keys())
def test_hostile_generation_configs_are_named(tmp_path, twin, text, rule):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt")
    replace(folder / "generation_config.json", text)
    with pytest.raises(ValueError, match=rf"ckpt/generation_config\.json{rule}"):
        QwenLiteVL.from_pretrained(folder)


# ---------------------------------------------------------------- config token ids against the tokenizer's

TOKEN_ID_EDITS = {  # config field -> a wrong id that is still inside the vocabulary
    "image_token_id": (151654, "<|image_pad|>", 151655),
    "video_token_id": (151655, "<|video_pad|>", 151656),
    "vision_start_token_id": (151644, "<|vision_start|>", 151652),
    "vision_end_token_id": (151645, "<|vision_end|>", 151653),
}


def _wrong_id_checkpoint(twin: Path, tmp_path: Path, field: str, wrong: int) -> Path:
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", tokenizer=True)
    config = json.loads((folder / "config.json").read_text())
    config[field] = wrong
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("field, edit", TOKEN_ID_EDITS.items(), ids=TOKEN_ID_EDITS.keys())
def test_config_token_ids_that_disagree_with_the_tokenizer_stop_the_model(twin, tmp_path, field, edit):
    """Before: loaded, then 'mm_token_type_ids disagree' (or wrong positions) at the first call."""
    wrong, token, right = edit
    folder = _wrong_id_checkpoint(twin, tmp_path, field, wrong)
    message = rf"config.json has {field} = {wrong}, but the tokenizer .* gives {re.escape(token)} the id {right}"
    with pytest.raises(ValueError, match=message):
        QwenLiteVL.from_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("field, edit", TOKEN_ID_EDITS.items(), ids=TOKEN_ID_EDITS.keys())
def test_config_token_ids_that_disagree_with_the_tokenizer_stop_the_processor(twin, tmp_path, field, edit):
    wrong, token, right = edit
    folder = _wrong_id_checkpoint(twin, tmp_path, field, wrong)
    message = rf"config.json has {field} = {wrong}, but the tokenizer .* gives {re.escape(token)} the id {right}"
    with pytest.raises(ValueError, match=message):
        Processor.from_pretrained(folder)


@pytest.mark.slow
def test_the_tokenizer_copy_itself_loads(twin, tmp_path):
    """The cases above change one id: with the ids intact, the same folder gives a model and a processor."""
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", tokenizer=True)
    assert Processor.from_pretrained(folder).image_token_id == QwenLiteVL.from_pretrained(folder).config.image_token_id


@pytest.mark.parametrize(
    "loader, message",
    [
        (QwenLiteVL.from_pretrained, r"ckpt/tokenizer_config\.json is not valid JSON"),
        (Processor.from_pretrained, r"cannot read the tokenizer files in .*ckpt: JSONDecodeError"),
    ],
    ids=["model", "processor"],
)
def test_a_tokenizer_config_that_is_not_json(twin, tmp_path, loader, message):
    folder = hostile_checkpoint(twin, tmp_path / "ckpt", tokenizer=True)
    replace(folder / "tokenizer_config.json", "{not json")
    with pytest.raises(ValueError, match=message):
        loader(folder)
