"""qwenlite.config reads both config.json styles into the same frozen dataclasses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qwenlite import QwenLiteConfig

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


@pytest.mark.parametrize("name", ["qwen2_5_vl_3b_instruct", "qwen2_5_vl_7b_instruct"])
def test_hub_4x_and_transformers_5x_styles_agree(name, tmp_path):
    from transformers import Qwen2_5_VLConfig

    hub_file = CONFIGS / f"{name}.config.json"
    assert "rope_scaling" in json.loads(hub_file.read_text())  # the hub style: flat text fields
    Qwen2_5_VLConfig.from_pretrained(hub_file).save_pretrained(tmp_path)  # transformers 5.x writes text_config
    assert "text_config" in json.loads((tmp_path / "config.json").read_text())
    assert QwenLiteConfig.from_pretrained(hub_file) == QwenLiteConfig.from_pretrained(tmp_path)


def test_fields_match_transformers(ckpt):
    from transformers import AutoConfig

    ours, hf = QwenLiteConfig.from_pretrained(ckpt), AutoConfig.from_pretrained(ckpt)
    for field in dataclasses.fields(ours.text_config):
        value = getattr(ours.text_config, field.name)
        if field.name in ("rope_theta", "mrope_section"):
            expected = hf.text_config.rope_parameters[field.name]
            assert value == (tuple(expected) if field.name == "mrope_section" else expected), field.name
            continue
        assert value == getattr(hf.text_config, field.name), field.name
    for field in dataclasses.fields(ours.vision_config):
        if field.name == "rope_theta":
            assert ours.vision_config.rope_theta == hf.vision_config.rope_parameters["rope_theta"]
            continue
        expected = getattr(hf.vision_config, field.name)
        assert getattr(ours.vision_config, field.name) == (tuple(expected) if isinstance(expected, list) else expected)
    for name in (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
        "tie_word_embeddings",
    ):
        assert getattr(ours, name) == getattr(hf, name), name


def test_real_token_ids():
    config = QwenLiteConfig.from_pretrained(CONFIGS / "qwen2_5_vl_3b_instruct.config.json")
    ids = (config.vision_start_token_id, config.vision_end_token_id, config.image_token_id, config.video_token_id)
    assert ids == (151652, 151653, 151655, 151656)
