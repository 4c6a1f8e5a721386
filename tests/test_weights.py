"""qwenlite.weights: the safetensors reader and from_pretrained, against transformers, and on hostile files and folders:
each refusal names the file or argument and the rule.

Folders, weights (keys, shapes, a tied lm_head, non-finite values), the dtype and device asked for,
generation_config.json, and the special token ids of config.json against the tokenizer's. Each hostile folder is
built in tmp_path from the tiny twin's files (`helpers.hostile_checkpoint`: small files copied, big ones linked);
the `twin` fixture checks that the twin's own folder is never written to. The config.json rules are in
tests/test_config.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import folder_snapshot, hostile_checkpoint, replace
from safetensors.torch import load_file, save_file

from qwenlite import Processor, QwenLiteVL, weights
from qwenlite_course import checkpoint
from qwenlite_course.reference import load_models

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
        ("gpu0", r"device='gpu0' is not a device: use cpu or cuda"),
        (42.5, r"device=42.5 is not a device"),
        ("meta", r"device='meta': qwenlite runs on cpu or cuda \(cuda:N\) only"),
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


# ---------------------------------------------------------------- the safetensors reader: layouts, shards, damage


def _state(model: QwenLiteVL) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_both_key_layouts_load_identical_weights(ckpt, ours, tmp_path):
    if not checkpoint.is_tiny_twin(ckpt):
        pytest.skip("re-saving a real checkpoint is too slow for the suite")
    folder = checkpoint.build_tiny_twin(tmp_path / "memory_layout", save_original_format=False)
    keys = load_file(folder / "model.safetensors").keys()
    assert any(k.startswith("model.language_model.") for k in keys) and any(k.startswith("model.visual.") for k in keys)
    hub_keys = load_file(ckpt / "model.safetensors").keys()
    assert any(k.startswith("visual.") for k in hub_keys) and not any(k.startswith("model.visual") for k in hub_keys)
    other = QwenLiteVL.from_pretrained(folder)
    a, b = _state(QwenLiteVL.from_pretrained(checkpoint.tiny_twin())), _state(other)  # the seeded twin, two layouts
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_equal_transformers(ours, ref):
    theirs = {weights.to_hub_key(k): v for k, v in ref.state_dict().items()}
    mine = _state(ours)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    if ours.config.tie_word_embeddings:
        assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()


def test_sharded_checkpoint_loads(ckpt, ours, tmp_path):
    state = load_file(ckpt / "model.safetensors") if (ckpt / "model.safetensors").is_file() else None
    if state is None:
        pytest.skip("real checkpoint is already sharded")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, tmp_path / name, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: n for n, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    b = _state(QwenLiteVL.from_pretrained(tmp_path))
    a = _state(ours)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_read_tensors_maps_or_converts_once(ckpt, tmp_path):
    """Stored dtype: memory-mapped, no copy. Another dtype: converted tensor by tensor, equal to torch's cast."""
    from safetensors.torch import load_file

    from qwenlite.weights import read_tensors

    stored = load_file(str(ckpt / "model.safetensors"))
    mapped = read_tensors(ckpt)
    cast = read_tensors(ckpt, torch.bfloat16)
    assert set(mapped) == set(cast) == set(stored)
    for k, v in stored.items():
        assert torch.equal(mapped[k], v) and mapped[k].dtype == v.dtype
        assert torch.equal(cast[k], v.to(torch.bfloat16))


def _small_file(folder: Path) -> Path:
    """A small, valid model.safetensors: the header cases need the format, not the twin's 80 MB."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"a.weight": torch.ones(4, 4), "model.norm.weight": torch.arange(128.0)}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder / "model.safetensors"


def _with_header(data: bytes, edit) -> bytes:
    """The same file with its JSON header edited (data offsets count from the end of the header, so they stay)."""
    n = int.from_bytes(data[:8], "little")
    text = json.dumps(edit(json.loads(data[8 : 8 + n]))).encode()  # edit returns the new header
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to a multiple of 8
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def _entry(key: str, **fields):
    return lambda h: h | {key: h[key] | fields}


DAMAGED_FILES = {
    "4-bytes": (lambda b: b[:4], "header of .* bytes in a 4-byte file"),
    "huge-header": (lambda b: (10**9).to_bytes(8, "little") + b[8:], "header of 1000000000 bytes"),
    "not-json": (lambda b: b[:8] + b"\xff" * (len(b) - 8), "the header is not JSON"),
    "cut-short": (lambda b: b[:-100], "the header needs .* bytes, the file has"),
    "header-list": (lambda b: _with_header(b, lambda h: [h]), "the header is not a JSON object"),
    "shape-vs-bytes": (
        lambda b: _with_header(b, _entry("model.norm.weight", shape=[64])),
        r"tensor model.norm.weight: shape \[64\] of F32 needs 256 bytes, but data_offsets \[64, 576\] hold 512",
    ),
    "shape-too-big": (
        lambda b: _with_header(b, _entry("a.weight", shape=[4, 400])),
        r"tensor a.weight: shape \[4, 400\] of F32 needs 6400 bytes",
    ),
    "unknown-dtype": (
        lambda b: _with_header(b, _entry("a.weight", dtype="Q4")),
        "tensor a.weight has unknown dtype 'Q4'",
    ),
    "negative-shape": (
        lambda b: _with_header(b, _entry("a.weight", shape=[-4, -4])),
        r"tensor a.weight has shape \[-4, -4\]: not a list of sizes >= 0",
    ),
    "offsets-reversed": (
        lambda b: _with_header(b, _entry("a.weight", data_offsets=[64, 0])),
        r"tensor a.weight has data_offsets \[64, 0\]: not \[begin, end\] with 0 <= begin <= end",
    ),
    "no-dtype": (
        lambda b: _with_header(b, lambda h: h | {"a.weight": {"shape": [4, 4], "data_offsets": [0, 64]}}),
        "tensor a.weight has no dtype, shape and data_offsets in the header",
    ),
}


@pytest.mark.parametrize("damage, message", DAMAGED_FILES.values(), ids=DAMAGED_FILES.keys())
@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["mapped", "converted"])
def test_damaged_safetensors_are_named(tmp_path, damage, message, dtype):
    file = _small_file(tmp_path / "ckpt")
    assert set(weights.read_tensors(file.parent, dtype)) == {"a.weight", "model.norm.weight"}  # whole, it reads
    file.write_bytes(damage(file.read_bytes()))
    with pytest.raises(ValueError, match=f"cannot read .*model.safetensors as safetensors: {message}"):
        weights.read_tensors(file.parent, dtype)


INDEX = "model.safetensors.index.json"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def _sharded(twin: Path, folder: Path, second: dict[str, torch.Tensor], in_second: set[str]) -> dict[str, str]:
    """Shard 1 is the twin's whole file (linked); shard 2 holds `second`; the index puts `in_second` in shard 2."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((twin / "config.json").read_text())
    (folder / SHARD_1).symlink_to(twin / "model.safetensors")
    save_file(second, folder / SHARD_2, metadata={"format": "pt"})
    keys = load_file(twin / "model.safetensors").keys()
    weight_map = {k: SHARD_2 if k in in_second else SHARD_1 for k in keys}
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["mapped", "converted"])
def test_the_index_decides_which_shard_holds_a_key(twin, tmp_path, dtype):
    """A stale copy of model.norm.weight left in shard 2 (read last) must not replace the one the index names."""
    real = load_file(twin / "model.safetensors")
    second = {"visual.merger.ln_q.weight": real["visual.merger.ln_q.weight"], "model.norm.weight": torch.zeros(128)}
    _sharded(twin, tmp_path / "ckpt", second, in_second={"visual.merger.ln_q.weight"})
    state = weights.read_tensors(tmp_path / "ckpt", dtype)
    assert set(state) == set(real)
    assert torch.equal(state["model.norm.weight"], real["model.norm.weight"].to(dtype or torch.float32))
    model = QwenLiteVL.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(model.model.norm.weight, real["model.norm.weight"])


def test_an_index_putting_a_key_in_a_shard_without_it(twin, tmp_path):
    _sharded(twin, tmp_path / "ckpt", {"a.weight": torch.ones(2)}, in_second={"model.norm.weight"})
    with pytest.raises(ValueError, match=rf"{INDEX} puts 1 tensor\(s\) in {SHARD_2}, which does not hold them"):
        weights.read_tensors(tmp_path / "ckpt")


def test_an_index_naming_a_missing_shard(tmp_path, twin):
    (tmp_path / "config.json").write_text((twin / "config.json").read_text())
    (tmp_path / INDEX).write_text(json.dumps({"weight_map": {"model.norm.weight": SHARD_1}}))
    with pytest.raises(FileNotFoundError, match=rf"index.json names shards that are missing: .*{SHARD_1}"):
        QwenLiteVL.from_pretrained(tmp_path)


HOSTILE_INDEXES = {
    "not-json": ("{weight_map: ", r"is not valid JSON"),
    "not-utf8": (b"\xff\xfe", r"is not valid JSON"),
    "a-list": ('[{"weight_map": {}}]', r"has no 'weight_map' .* got list"),
    "no-weight-map": ('{"metadata": {"total_size": 8}}', r"has no 'weight_map' .* got dict with keys \['metadata'\]"),
    "weight-map-list": ('{"weight_map": ["model.safetensors"]}', r"has no 'weight_map' \(a JSON object"),
    "weight-map-empty": ('{"weight_map": {}}', r"has no 'weight_map'"),
    "shard-not-a-name": ('{"weight_map": {"model.norm.weight": 5}}', r"mapped to 5, which is not a file inside"),
}


@pytest.mark.parametrize("text, message", HOSTILE_INDEXES.values(), ids=HOSTILE_INDEXES.keys())
def test_hostile_indexes_are_named(tmp_path, text, message):
    index = tmp_path / INDEX
    index.write_bytes(text) if isinstance(text, bytes) else index.write_text(text)
    with pytest.raises(ValueError, match=rf"{INDEX}.*{message}"):
        weights.read_tensors(tmp_path)


@pytest.mark.parametrize("where", ["parent", "absolute", "climbing"])
def test_shards_outside_the_checkpoint_folder_are_refused(twin, tmp_path, where):
    """A readable safetensors file sits outside the folder; an index naming it must not make the loader read it."""
    outside = tmp_path / "outside.safetensors"
    outside.symlink_to(twin / "model.safetensors")
    shard = {"parent": "../outside.safetensors", "absolute": str(outside), "climbing": "sub/../../outside.safetensors"}
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text((twin / "config.json").read_text())
    keys = load_file(twin / "model.safetensors").keys()
    (folder / INDEX).write_text(json.dumps({"weight_map": {k: shard[where] for k in keys}}))
    message = rf"{INDEX}: tensor .* is mapped to '{re.escape(shard[where])}', which is not a file inside the checkpoint"
    with pytest.raises(ValueError, match=message):
        weights.read_tensors(folder)
    with pytest.raises(ValueError, match=message):
        QwenLiteVL.from_pretrained(folder)
