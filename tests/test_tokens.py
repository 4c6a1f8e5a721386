"""qwenlite.tokens: the special-token ids against the checkpoint's own tokenizer and the hub config.

These ids are written once, in qwenlite/tokens.py; the config's defaults, the processor, fusion,
get_rope_index and the pictures read them from there, so a wrong id would be wrong everywhere at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwenlite import QwenLiteConfig, tokens

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
SPECIAL = {
    "<|endoftext|>": tokens.ENDOFTEXT_ID,
    "<|im_start|>": tokens.IM_START_ID,
    "<|im_end|>": tokens.IM_END_ID,
    tokens.VISION_START: tokens.VISION_START_ID,
    tokens.VISION_END: tokens.VISION_END_ID,
    "<|vision_pad|>": tokens.VISION_PAD_ID,
    tokens.IMAGE_PAD: tokens.IMAGE_PAD_ID,
    tokens.VIDEO_PAD: tokens.VIDEO_PAD_ID,
}


def test_special_token_ids_equal_the_tokenizer(ckpt):
    """Each string's id in the real Qwen2 tokenizer (catches a swapped or mistyped id, e.g. vision_pad for
    image_pad), and each string is one token (catches a misspelt string)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    for text, token_id in SPECIAL.items():
        assert tokenizer.convert_tokens_to_ids(text) == token_id, text
        assert tokenizer(text)["input_ids"] == [token_id], text


@pytest.mark.parametrize("name", ["qwen2_5_vl_3b_instruct", "qwen2_5_vl_7b_instruct"])
def test_config_defaults_equal_the_hub_configs(name):
    """QwenLiteConfig's token-id defaults (read from qwenlite.tokens) are the hub config.json's values."""
    raw = json.loads((CONFIGS / f"{name}.config.json").read_text())
    defaults = QwenLiteConfig(text_config=None, vision_config=None)  # only the token fields are read here
    for field in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert getattr(defaults, field) == raw[field], field


def test_mm_token_type_ids_and_token_kinds_docstring_examples(config):
    ids = [tokens.VISION_START_ID, tokens.IMAGE_PAD_ID, tokens.IMAGE_PAD_ID, tokens.VISION_END_ID, 64]
    assert tokens.mm_token_type_ids(torch.tensor([ids]), config).tolist() == [[0, 1, 1, 0, 0]]
    assert tokens.mm_token_type_ids(torch.tensor([[tokens.VIDEO_PAD_ID, 64]]), config).tolist() == [[2, 0]]
    prompt = [tokens.IM_START_ID, 64, tokens.VISION_START_ID, tokens.IMAGE_PAD_ID, tokens.VISION_END_ID]
    assert tokens.token_kinds(prompt, config) == ["chat", "text", "vision", "image", "vision"]
    assert tokens.token_kinds(prompt, config, attention_mask=[0, 1, 1, 1, 1])[0] == "padding"
