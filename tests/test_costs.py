"""qwenlite_course.costs: what an input costs, priced without running anything, against what transformers' processor
and window index, qwenlite's video path and the KV cache actually produce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA
from PIL import Image
from transformers.vision_utils import get_vision_window_index

from qwenlite import QwenLiteConfig
from qwenlite.preprocessing import preprocess_video
from qwenlite.video_io import load_video
from qwenlite_course.costs import image_cost, memory, video_cost

SIZES = [(512, 600), (1080, 1920), (37, 900), (3000, 4000), (28, 28)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_an_image_costs_what_transformers_processor_makes_of_it(hf_processor, height, width):
    picture = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    batch = hf_processor.image_processor(images=[picture], return_tensors="pt")
    cost = image_cost(height, width)
    assert cost.grid_thw == tuple(batch["image_grid_thw"][0].tolist())
    assert cost.patches == batch["pixel_values"].shape[0]
    assert cost.tokens == cost.patches // 4 and (cost.height, cost.width) == (
        14 * cost.grid_thw[1],
        14 * cost.grid_thw[2],
    )
    _, cu = get_vision_window_index(batch["image_grid_thw"], spatial_merge_size=2, window_size=112, patch_size=14)
    lengths = torch.unique_consecutive(cu).diff().long()  # transformers drops empty windows the same way
    assert cost.windows == len(lengths) and cost.window_pairs == int((lengths**2).sum())


def test_pixel_limits_are_the_processors(hf_processor):
    picture = Image.fromarray(np.zeros((1080, 1920, 3), dtype=np.uint8))
    limit = 256 * 28 * 28
    batch = hf_processor.image_processor(
        images=[picture], size={"shortest_edge": 56 * 56, "longest_edge": limit}, return_tensors="pt"
    )
    assert image_cost(1080, 1920, max_pixels=limit).grid_thw == tuple(batch["image_grid_thw"][0].tolist())
    assert image_cost(1080, 1920, max_pixels=limit).tokens <= 256


def test_a_video_costs_what_the_video_path_makes_of_it():
    video = load_video(DATA / "sample_video.mp4")  # 4 s at 8 fps, 252 x 336, sampled at 2 fps
    patches = preprocess_video(video)
    cost = video_cost(252, 336, seconds=4.0, video_fps=8)
    assert cost.frames == len(video.frames) and cost.grid_thw == tuple(patches.grid_thw.tolist())
    assert cost.patches == patches.pixel_values.shape[0] and cost.tokens == patches.num_tokens()
    assert video_cost(252, 336, seconds=4.0, video_fps=8, nframes=6).grid_thw[0] == 3


def test_a_long_video_gets_smaller_frames_and_at_most_768_of_them():
    short, long = video_cost(1080, 1920, seconds=10), video_cost(1080, 1920, seconds=3600)
    assert long.frames == 768 and short.frames == 20
    assert long.height * long.width < short.height * short.width  # the whole video's pixel budget is shared


def test_full_attention_pairs_are_per_frame():
    image, video = image_cost(1080, 1920), video_cost(252, 336, seconds=4.0, video_fps=8)
    assert image.full_pairs == image.patches**2  # one frame: every patch sees every patch
    t = video.grid_thw[0]
    assert video.full_pairs == t * (video.patches // t) ** 2 < video.patches**2  # frames never see each other
    assert image.window_pairs < image.full_pairs / 100  # 112-px windows: 64 patches each, a few smaller at the edges


def test_the_kv_cache_is_36_kib_a_token_for_the_3b_in_bfloat16_and_the_twins_is_its_cache(ours, processor):
    config_3b = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json")
    cost = image_cost(1080, 1920)
    bytes_3b = memory(cost, config_3b, torch.bfloat16, new_tokens=1)
    assert bytes_3b["kv_cache"] == bytes_3b["llm_tokens"] * 36 * 2 * 2 * 128 * 2  # layers, k+v, kv heads, Dh, bytes
    assert bytes_3b["peak_floor"] == max(bytes_3b["prefill_floor"], bytes_3b["tower_block"])
    # the twin: the cache a real prefill fills holds exactly what memory() says, for the same prompt length
    from qwenlite.decoder import KVCache

    picture = Image.fromarray(np.zeros((56, 84, 3), dtype=np.uint8))
    chat = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": "What?"}]}]
    inputs = processor.from_messages(chat)
    cache = KVCache()
    with torch.no_grad():
        ours(**inputs, cache=cache, logits_to_keep=1)
    held = cache.nbytes
    text = inputs["input_ids"].shape[1] - image_cost(56, 84).tokens
    assert memory(image_cost(56, 84), ours.config, torch.float32, text_tokens=text, new_tokens=1)["kv_cache"] == held


def test_a_video_without_frames_is_refused_by_name():
    with pytest.raises(ValueError, match="no frames"):
        video_cost(1080, 1920, seconds=0)


def test_eager_scores_are_heads_times_patches_squared_what_filled_the_scan_run():
    config_3b = QwenLiteConfig.from_pretrained(DATA / "configs" / "qwen2_5_vl_3b_instruct.config.json")
    scan = image_cost(2600, 3300)  # QwenLM #891: a CPU run on this scan filled 80 GB
    eager = memory(scan, config_3b, torch.bfloat16)["eager_scores"]
    assert eager == 16 * scan.patches**2 * 2  # 16 heads, one image (one segment), bfloat16
    assert eager > 50 * 2**30 > 50 * memory(scan, config_3b, torch.bfloat16)["peak_floor"]  # 57 GiB vs 0.9 GiB


def test_eager_scores_are_the_largest_scores_transformers_eager_tower_holds(ref, config, monkeypatch):
    """transformers' vision tower with eager attention, on the sample clip: the largest attention-weight tensor
    any of its blocks makes is memory()'s eager_scores (one temporal patch's full attention, not the clip's)."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as tf

    patches = preprocess_video(load_video(DATA / "sample_video.mp4"))
    cost = video_cost(252, 336, seconds=4.0, video_fps=8)
    held = []

    def spy(*args, **kwargs):
        out, weights = original(*args, **kwargs)
        held.append(weights.numel() * weights.element_size())
        return out, weights

    original = tf.eager_attention_forward
    monkeypatch.setattr(tf, "eager_attention_forward", spy)
    before = ref.config._attn_implementation
    ref.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref.model.visual(patches.pixel_values.to(ref.dtype), grid_thw=patches.grid_thw[None])
    finally:
        ref.set_attn_implementation(before)
    assert held and max(held) == memory(cost, config, ref.dtype)["eager_scores"]
    assert max(held) < ref.config.vision_config.num_heads * cost.patches**2 * ref.dtype.itemsize  # not all frames
