"""Checkpoints: resolve() and the tiny twin, and the strict safetensors loader (both key layouts, shards, errors).

The hostile cases (damaged headers, indexes, shards outside the folder) are built in tmp_path; the big files
they share with the twin are symbolic links that no test writes through (the `twin` fixture checks).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenlite import QwenLiteConfig, QwenLiteVL, checkpoint, weights


def test_twin_has_the_real_architecture(ckpt, config):
    if not checkpoint.is_tiny_twin(ckpt):
        pytest.skip("a real checkpoint is in use")
    t, v = config.text_config, config.vision_config
    assert t.vocab_size == 151936 and (v.patch_size, v.temporal_patch_size, v.spatial_merge_size) == (14, 2, 2)
    assert v.window_size == 112
    windowed = [i for i in range(v.depth) if i not in v.fullatt_block_indexes]
    assert len(windowed) >= 2 and len(v.fullatt_block_indexes) >= 2
    assert t.num_key_value_heads < t.num_attention_heads
    assert sum(t.mrope_section) == t.head_dim // 2
    vectors = {k: v for k, v in load_file(ckpt / "model.safetensors").items() if v.ndim == 1}
    constant = [k for k, v in vectors.items() if v.unique().numel() == 1]
    assert vectors and not constant, f"biases / norm weights that a wrong implementation could ignore: {constant}"


def test_transformers_loads_the_twin_offline(ckpt, ref, hf_processor):
    assert type(ref).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(hf_processor).__name__ == "Qwen2_5_VLProcessor"
    tok = hf_processor.tokenizer
    assert tok.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>", "<|im_end|>"]) == [151655, 151656, 151645]
    # the Qwen2.5-VL chat template, written out by hand: default system prompt, one pad per vision item
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A portrait."}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And this?"}]},
    ]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
        "<|im_start|>assistant\nA portrait.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>And this?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected


def test_resolve_prefers_env(monkeypatch, ckpt):
    monkeypatch.setenv("QWENLITE_CHECKPOINT", str(ckpt))
    assert checkpoint.resolve() == ckpt  # a folder that is no checkpoint: test_qwenlite_checkpoint_pointing_nowhere


def test_resolve_finds_an_hf_cache_snapshot(monkeypatch, ckpt, tmp_path):
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-VL-3B-Instruct" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snap / name).symlink_to(ckpt / name)
    monkeypatch.delenv("QWENLITE_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert checkpoint.resolve() == snap


@pytest.mark.slow
def test_twin_is_rebuilt_when_missing(tmp_path):
    folder = checkpoint.tiny_twin(tmp_path)
    assert checkpoint.is_tiny_twin(folder) and (folder / "model.safetensors").is_file()
    first = load_file(folder / "model.safetensors")
    import shutil

    shutil.rmtree(folder)
    again = load_file(checkpoint.tiny_twin(tmp_path) / "model.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)  # seeded


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


def test_config_roundtrip_of_twin(ckpt):
    assert QwenLiteConfig.from_pretrained(ckpt) == QwenLiteConfig.from_pretrained(ckpt / "config.json")


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


# ---------------------------------------------------------------- a reproducible twin

# sha256 of the tiny twin's weights: for each key of model.safetensors in sorted order, "key|dtype|shape\n" and
# then the tensor's raw bytes (little-endian, as safetensors stores them). The file's own bytes are not hashed:
# another safetensors version may write its JSON header differently. Computed with torch 2.14.1 and transformers
# 5.24 on an AVX2 CPU, and the same with ATEN_CPU_CAPABILITY=default (torch's scalar kernels): the weights come
# from checkpoint.seeded_noise, float64 uniforms of torch's CPU generator (mt19937, a stream torch has kept for
# years), not from torch.randn, whose float32 kernel gives other bits on other CPUs. What can still change it:
# the recipe (then bump TWIN_VERSION and write the new value here), or a transformers whose module tree lists
# its parameters in another order or under other names. Any other change means the twin is no longer the same
# model everywhere, and numbers measured on one machine's twin no longer hold on another's.
TWIN_SHA256 = "7dbb1e18ff6705e87bef9614f39ce5f86ea2327d0ee74ccb77bd5c46acf1e6d1"


def weights_sha256(folder) -> str:
    import hashlib

    state = load_file(folder / "model.safetensors")
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_the_twin_has_the_same_weights_on_every_machine():
    assert weights_sha256(checkpoint.tiny_twin()) == TWIN_SHA256


@pytest.mark.slow
def test_building_the_twin_again_gives_the_same_weights(tmp_path):
    """A second build, in this process, equals the cached one (built by another process, maybe another day)."""
    again = checkpoint.build_tiny_twin(tmp_path / "again")
    assert weights_sha256(again) == weights_sha256(checkpoint.tiny_twin())


def test_seeded_noise_has_the_spread_it_claims():
    generator = torch.Generator().manual_seed(0)
    noise = checkpoint.seeded_noise((200_000,), generator)
    assert noise.dtype == torch.float64 and noise.abs().max() < 3**0.5
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.std()) - 1) < 0.01


@pytest.mark.slow
@torch.no_grad()
def test_the_same_computation_twice_gives_the_same_bits():
    """Two loads of the twin, one prompt with an image: logits and generated tokens exactly equal."""
    import numpy as np

    from qwenlite import Processor

    twin = checkpoint.tiny_twin()
    image = np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    inputs = Processor.from_pretrained(twin)(text="a<|vision_start|><|image_pad|><|vision_end|>b", images=[image])
    first, second = QwenLiteVL.from_pretrained(twin), QwenLiteVL.from_pretrained(twin)
    assert torch.equal(first(**inputs).logits, second(**inputs).logits)
    assert torch.equal(first(**inputs).logits, first(**inputs).logits)
    assert torch.equal(first.generate(**inputs, max_new_tokens=4), second.generate(**inputs, max_new_tokens=4))


# ---------------------------------------------------------------- the trained twin


def test_the_shipped_trained_tensors_match_their_recorded_checksum():
    facts = checkpoint.trained_facts()
    assert checkpoint.file_sha256(checkpoint.TRAINED_TENSORS) == facts["sha256"]
    assert checkpoint.TRAINED_TENSORS.stat().st_size < 4_000_000  # a few MB: everything but the frozen embedding


def test_the_trained_twin_is_the_seeded_twin_with_the_shipped_tensors_in_place():
    trained = load_file(checkpoint.trained_twin() / "model.safetensors")
    seeded = load_file(checkpoint.tiny_twin() / "model.safetensors")
    shipped = load_file(checkpoint.TRAINED_TENSORS)
    assert set(trained) == set(seeded) and set(shipped) < set(trained)
    for key, tensor in trained.items():
        expected = shipped[key] if key in shipped else seeded[key]  # the embedding rebuilds from its seed
        assert torch.equal(tensor, expected.to(tensor.dtype)), key
    assert "model.embed_tokens.weight" not in shipped
    changed = [k for k in shipped if not torch.equal(shipped[k], seeded[k])]
    assert len(changed) == len(shipped), "every shipped tensor was trained"


def test_resolve_gives_the_trained_twin_without_a_real_checkpoint(monkeypatch, tmp_path):
    monkeypatch.delenv("QWENLITE_CHECKPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    path = checkpoint.resolve()
    assert checkpoint.is_trained_twin(path) and "TRAINED TWIN" in checkpoint.describe(path)
    assert "random weights" in checkpoint.describe(checkpoint.tiny_twin())


def test_a_damaged_trained_tensors_file_is_refused_by_name(monkeypatch, tmp_path):
    bad = tmp_path / "trained_twin.safetensors"
    bad.write_bytes(checkpoint.TRAINED_TENSORS.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(checkpoint, "TRAINED_TENSORS", bad)
    with pytest.raises(ValueError, match="trained_twin.safetensors has sha256 .* but trained_twin.json records"):
        checkpoint.trained_twin(tmp_path)


def test_trained_tensors_that_do_not_fit_the_twin_are_refused(tmp_path):
    folder = tmp_path / "twin"
    import shutil

    shutil.copytree(checkpoint.tiny_twin(), folder)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"model.norm.weight": torch.ones(7), "visual.extra": torch.ones(2)}, wrong)
    with pytest.raises(KeyError, match=r"unknown keys \['visual.extra'\], wrong shapes \['model.norm.weight'\]"):
        checkpoint.write_trained_twin(folder, wrong)


# ---------------------------------------------------------------- hostile safetensors files


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


# ---------------------------------------------------------------- hostile shard indexes

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


def test_qwenlite_checkpoint_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("QWENLITE_CHECKPOINT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="QWENLITE_CHECKPOINT points to .*, which has no config.json"):
        checkpoint.resolve()
    monkeypatch.setenv("QWENLITE_CHECKPOINT", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="QWENLITE_CHECKPOINT points to .*absent, which is not a folder"):
        checkpoint.resolve()
