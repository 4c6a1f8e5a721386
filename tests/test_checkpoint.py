"""Checkpoints: resolve() and the tiny twin, and the strict safetensors loader (both key layouts, shards, errors).

The hostile cases (damaged headers, indexes, shards outside the folder) are built in tmp_path; the big files
they share with the twin are symbolic links that no test writes through (the `twin` fixture checks).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwenlite import QwenLiteConfig, QwenLiteVL
from qwenlite_course import checkpoint


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


def test_config_roundtrip_of_twin(ckpt):
    assert QwenLiteConfig.from_pretrained(ckpt) == QwenLiteConfig.from_pretrained(ckpt / "config.json")


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


# ---------------------------------------------------------------- hostile shard indexes


def test_qwenlite_checkpoint_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("QWENLITE_CHECKPOINT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="QWENLITE_CHECKPOINT points to .*, which has no config.json"):
        checkpoint.resolve()
    monkeypatch.setenv("QWENLITE_CHECKPOINT", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="QWENLITE_CHECKPOINT points to .*absent, which is not a folder"):
        checkpoint.resolve()
