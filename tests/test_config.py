"""qwenlite.config reads both config.json styles into the same frozen dataclasses, and refuses hostile ones by name."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from qwenlite import QwenLiteConfig
from qwenlite_course import checkpoint

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


# ---------------------------------------------------------------- hostile config.json files


def _write(tmp_path: Path, raw: object) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(raw))  # json writes NaN and Infinity, which json reads back
    return tmp_path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.pop("vision_config"), "no 'vision_config' section"),
        (lambda c: c["rope_scaling"].update(mrope_section=[16, 24, 20]), r"mrope_section \(16, 24, 20\) must sum to"),
        (lambda c: c["rope_scaling"].pop("mrope_section"), "no mrope_section in rope_scaling"),
        (lambda c: c.update(num_key_value_heads=3), "16 query heads not divisible by 3 kv heads"),
        (lambda c: c["vision_config"].update(out_hidden_size=100), "vision out_hidden_size 100 != text hidden_size"),
    ],
    ids=["no-vision", "mrope-sum", "no-mrope", "kv-heads", "out-hidden"],
)
def test_bad_hub_configs_name_the_field(edit, message, tmp_path):
    raw = json.loads((CONFIGS / "qwen2_5_vl_3b_instruct.config.json").read_text())
    edit(raw)
    with pytest.raises(ValueError, match=message):
        QwenLiteConfig.from_pretrained(_write(tmp_path, raw))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "config.json is not valid JSON"),
        (b"\xff\xfe{}", r"config.json is not valid JSON: not UTF-8"),
        ("[]", r"config.json: the top level must be a JSON object \(\{...\}\), got list"),
        ('"qwen2_5_vl"', "config.json: the top level must be a JSON object .* got str"),
    ],
    ids=["not-json", "not-utf8", "list", "string"],
)
def test_config_files_that_are_not_a_json_object(text, message, tmp_path):
    file = tmp_path / "config.json"
    file.write_bytes(text) if isinstance(text, bytes) else file.write_text(text)
    with pytest.raises(ValueError, match=message):
        QwenLiteConfig.from_pretrained(tmp_path)


NAN, INF = float("nan"), float("inf")


def _text(**fields):
    return lambda c: c["text_config"].update(fields)


def _vision(**fields):
    return lambda c: c["vision_config"].update(fields)


def _rope(**fields):
    return lambda c: c["text_config"]["rope_parameters"].update(fields)


# Each edit of the twin's config (5.x style) and the rule the message must state. Before these were checked, a
# string size failed in string formatting, 0 heads in a ZeroDivisionError, a NaN rope_theta as NaN logits.
HOSTILE_CONFIGS = {
    # sections that are not JSON objects
    "text-config-list": (lambda c: c.update(text_config=[1, 2]), "text_config must be a JSON object"),
    "vision-config-string": (lambda c: c.update(vision_config="big"), "vision_config must be a JSON object"),
    "rope-list": (_text(rope_parameters=[4, 6, 6]), "rope_scaling / rope_parameters must be a JSON object"),
    "mrope-number": (_rope(mrope_section=16), "mrope_section must be a list of integers, got 16"),
    "fullatt-string": (_vision(fullatt_block_indexes="1,3"), "vision fullatt_block_indexes must be a list"),
    # sizes: positive integers only
    "hidden-string": (_text(hidden_size="128"), r"text hidden_size must be a positive integer, got '128' \(str\)"),
    "hidden-float": (_text(hidden_size=128.0), r"text hidden_size must be a positive integer, got 128.0 \(float\)"),
    "zero-heads": (_text(num_attention_heads=0), r"text num_attention_heads must be a positive integer, got 0"),
    "zero-kv-heads": (_text(num_key_value_heads=0), r"text num_key_value_heads must be a positive integer, got 0"),
    "negative-layers": (_text(num_hidden_layers=-1), r"text num_hidden_layers must be a positive integer, got -1"),
    "negative-mlp": (_text(intermediate_size=-256), "text intermediate_size must be a positive integer, got -256"),
    "bool-vocab": (_text(vocab_size=True), r"text vocab_size must be a positive integer, got True \(bool\)"),
    "zero-positions": (_text(max_position_embeddings=0), "text max_position_embeddings must be a positive integer"),
    "zero-vision-heads": (_vision(num_heads=0), "vision num_heads must be a positive integer, got 0"),
    "zero-depth": (_vision(depth=0), "vision depth must be a positive integer, got 0"),
    "zero-patch": (_vision(patch_size=0), "vision patch_size must be a positive integer, got 0"),
    "zero-merge": (_vision(spatial_merge_size=0), "vision spatial_merge_size must be a positive integer, got 0"),
    "negative-window": (_vision(window_size=-112), "vision window_size must be a positive integer, got -112"),
    "null-vision-width": (_vision(hidden_size=None), r"vision hidden_size must be a positive integer, got None"),
    # floats: finite and > 0
    "rope-theta-zero": (_rope(rope_theta=0), r"text rope_theta must be a finite number > 0, got 0"),
    "rope-theta-nan": (_rope(rope_theta=NAN), r"text rope_theta must be a finite number > 0, got nan"),
    "rope-theta-inf": (_rope(rope_theta=INF), r"text rope_theta must be a finite number > 0, got inf"),
    "rope-theta-negative": (_rope(rope_theta=-1e6), r"text rope_theta must be a finite number > 0, got -1000000.0"),
    "rope-theta-string": (_rope(rope_theta="1e6"), r"text rope_theta must be a finite number > 0, got '1e6'"),
    "eps-nan": (_text(rms_norm_eps=NAN), r"text rms_norm_eps must be a finite number > 0, got nan"),
    "eps-zero": (_text(rms_norm_eps=0.0), r"text rms_norm_eps must be a finite number > 0, got 0.0"),
    "vision-theta-nan": (_vision(rope_parameters={"rope_theta": NAN}), "vision rope_theta must be a finite number"),
    "tokens-per-second-zero": (_vision(tokens_per_second=0), "vision tokens_per_second must be a finite number > 0"),
    "tokens-per-second-nan": (_vision(tokens_per_second=NAN), "vision tokens_per_second must be a finite number"),
    # names, lists and token ids
    "unknown-activation": (_text(hidden_act="relu2"), r"text hidden_act is 'relu2', not one of \['gelu'"),
    "mrope-entry-string": (_rope(mrope_section=["4", 6, 6]), r"an entry of mrope_section .* got '4' \(str\)"),
    "fullatt-beyond-depth": (_vision(fullatt_block_indexes=[1, 9]), r"block numbers in \[0, depth 4\), got 9"),
    "image-id-negative": (lambda c: c.update(image_token_id=-1), r"image_token_id must be a token id in \[0, vocab"),
    "video-id-beyond-vocab": (lambda c: c.update(video_token_id=200000), r"video_token_id .* got 200000"),
    "image-id-string": (lambda c: c.update(image_token_id="151655"), r"image_token_id .* got '151655'"),
    "eos-beyond-vocab": (_text(eos_token_id=[151645, 999999]), r"eos_token_id must be a token id .* got 999999"),
    "tie-string": (lambda c: c.update(tie_word_embeddings="yes"), "tie_word_embeddings must be true or false"),
    # rules that tie numbers together
    "width-vs-heads": (_text(hidden_size=130), "hidden_size 130 not divisible by 4 heads"),
    "heads-vs-kv": (_text(num_key_value_heads=3), "4 query heads not divisible by 3 kv heads"),
    "vision-width-vs-heads": (_vision(hidden_size=66), "vision hidden_size 66 not divisible by 4 heads"),
    "vision-head-dim": (_vision(hidden_size=72), r"vision head_dim 18 \(hidden_size / num_heads\) must be a multiple"),
    "window-vs-patch": (_vision(window_size=100), "window_size 100 is not a multiple of patch"),
}


@pytest.mark.parametrize("edit, message", HOSTILE_CONFIGS.values(), ids=HOSTILE_CONFIGS.keys())
def test_hostile_configs_are_refused_by_field_and_rule(edit, message, tmp_path):
    raw = copy.deepcopy(checkpoint.TWIN_CONFIG)
    edit(raw)
    with pytest.raises(ValueError, match=rf"config.json: .*({message})"):
        QwenLiteConfig.from_pretrained(_write(tmp_path, raw))


def test_the_twin_config_itself_passes_every_rule(tmp_path):
    """The hostile cases above edit this config: it must load, or they would fail for the wrong reason."""
    config = QwenLiteConfig.from_pretrained(_write(tmp_path, checkpoint.TWIN_CONFIG))
    assert config.text_config.hidden_size == 128 and config.vision_config.num_heads == 4
