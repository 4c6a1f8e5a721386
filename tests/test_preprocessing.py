"""qwenlite.preprocessing (resize, normalise, patchify) against transformers' Qwen2VL processors and qwen-vl-utils.

References: smart_resize and pixel values -> transformers (the checkpoint's AutoProcessor); the per-frame pixel
budget -> qwen-vl-utils' vision_process (its real fetch_video, with a PyAV frame reader
plugged in because this environment has none of its decoders).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

import qwenlite_course
from qwenlite import preprocessing as pp
from qwenlite import sampling, smart_resize
from qwenlite.video_io import Video, load_video

SIZES = [1, 2, 5, 10, 13, 14, 15, 27, 28, 29, 42, 55, 56, 57, 100, 224, 252, 333, 336, 448, 512, 600, 1000,
         1024, 1920, 2000, 4000, 8192, 10000, 20000, 50000]  # fmt: skip
LIMITS = [(3136, 12845056), (100352, 602112), (3136, 12544), (56 * 56, 28 * 28 * 1280), (1000, 1000)]


# ---------------------------------------------------------------- constants: written out here, not read from our code

HUB_PREPROCESSOR = {  # the hub's preprocessor_config.json for Qwen2.5-VL, written out by hand
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def test_preprocessor_asset_and_defaults_hold_the_design_values(ckpt):
    asset = Path(qwenlite_course.__file__).parent / "assets" / "preprocessor_config.json"
    raw = json.loads(asset.read_text())
    for key, value in HUB_PREPROCESSOR.items():
        assert raw[key] == value, (key, raw[key], value)
    for config in [pp.PreprocessorConfig(), pp.PreprocessorConfig.from_pretrained(asset.parent)]:
        for key, value in HUB_PREPROCESSOR.items():
            got = getattr(config, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (key, got, value)
        assert config.rescale_factor == 1 / 255 and config.factor == 28
    assert pp.PreprocessorConfig.from_pretrained(ckpt) == pp.PreprocessorConfig()  # the checkpoint in use agrees


def test_constants_equal_qwen_vl_utils():
    """Every image/video default, recomputed from qwen-vl-utils' own names (vision_process, 0.0.14)."""
    import qwen_vl_utils.vision_process as q

    factor = 14 * q.SPATIAL_MERGE_SIZE  # fetch_image / fetch_video: image_factor = image_patch_size * merge
    assert factor == pp.FACTOR and pp.MERGE_SIZE == q.SPATIAL_MERGE_SIZE
    assert pp.MAX_RATIO == q.MAX_RATIO
    assert q.IMAGE_MIN_TOKEN_NUM * factor * factor == pp.MIN_PIXELS
    assert q.IMAGE_MAX_TOKEN_NUM * factor * factor == pp.MAX_PIXELS
    assert sampling.VIDEO_FPS == q.FPS
    assert sampling.VIDEO_MIN_FRAMES == q.FPS_MIN_FRAMES and sampling.VIDEO_MAX_FRAMES == q.FPS_MAX_FRAMES
    assert pp.TEMPORAL_PATCH_SIZE == sampling.FRAME_FACTOR == q.FRAME_FACTOR  # frame counts: multiples of this
    assert q.VIDEO_MIN_TOKEN_NUM * factor * factor == pp.VIDEO_MIN_PIXELS
    assert q.VIDEO_MAX_TOKEN_NUM * factor * factor == pp.VIDEO_MAX_PIXELS
    assert q.MODEL_SEQ_LEN == 128000, "MODEL_SEQ_LEN is set in the environment: qwen-vl-utils' budget changed"
    assert q.MODEL_SEQ_LEN * factor * factor * 0.9 == pp.VIDEO_TOTAL_PIXELS  # fetch_video's total_pixels default


# ---------------------------------------------------------------- smart_resize


def test_smart_resize_equals_transformers_on_a_sweep():
    checked = 0
    for h in SIZES:
        for w in SIZES:
            if max(h, w) / min(h, w) > 200:
                continue
            for lo, hi in LIMITS:
                assert smart_resize(h, w, 28, lo, hi) == hf_smart_resize(h, w, 28, lo, hi), (h, w, lo, hi)
                checked += 1
    assert checked > 2000


def test_smart_resize_equals_qwen_vl_utils_except_degenerate_cases():
    """qwen-vl-utils agrees everywhere but two documented corners, and only there."""
    from qwen_vl_utils.vision_process import smart_resize as q_smart_resize

    agree = differ = 0
    for h in SIZES:
        for w in SIZES:
            if max(h, w) / min(h, w) > 200:
                continue
            for lo, hi in LIMITS:
                ours, theirs = smart_resize(h, w, 28, lo, hi), q_smart_resize(h, w, 28, lo, hi)
                # corner 1: a side rounds to 0 (under 14 px, or exactly 14: round(0.5) = 0), which qwen-vl-utils
                # clamps to 28 before testing the minimum; corner 2: shrinking floors a side to 0 px there.
                corner = round(min(h, w) / 28) == 0 or 0 in theirs
                if ours == theirs:
                    agree += 1
                else:
                    assert corner, (h, w, lo, hi, ours, theirs)
                    differ += 1
    assert agree > 2000 and differ > 0


@pytest.mark.parametrize("h, w", [(1, 201), (201, 1), (10, 2500), (3, 1000)])
def test_aspect_ratio_over_200_raises_in_all_three(h, w):
    from qwen_vl_utils.vision_process import smart_resize as q_smart_resize

    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(h, w)
    with pytest.raises(ValueError, match="aspect ratio"):
        hf_smart_resize(h, w)
    with pytest.raises(ValueError, match="aspect ratio"):
        q_smart_resize(h, w, 28)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 100), "height must be a positive integer number of pixels, got 0"),
        ((100, -5), "width must be a positive integer number of pixels, got -5"),
        ((100.5, 100), "height must be a positive integer number of pixels, got 100.5"),
        ((100, 100, 28, 5000, 4000), r"min_pixels \(5000\) must not exceed max_pixels \(4000\)"),
        ((1, 300), r"aspect ratio of 1x300 \(height x width\) is 300.0, above the limit of 200"),
    ],
)
def test_smart_resize_rejects_bad_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        smart_resize(*args)


def test_image_pixel_limits_in_the_wrong_order():
    with pytest.raises(ValueError, match=r"min_pixels \(10000\) must not exceed max_pixels \(5000\)"):
        pp.preprocess_image(np.zeros((20, 20, 3), np.uint8), min_pixels=10000, max_pixels=5000)


@pytest.mark.parametrize(
    "limits, message",
    [
        ((0, 5000), "min_pixels must be a finite number of pixels > 0, got 0"),
        ((3136, math.nan), "max_pixels must be a finite number of pixels > 0, got nan"),
        ((math.inf, math.inf), "min_pixels must be a finite number of pixels > 0, got inf"),
        ((3136, -1), "max_pixels must be a finite number of pixels > 0, got -1"),
    ],
    ids=str,
)
def test_smart_resize_rejects_bad_pixel_limits(limits, message):
    with pytest.raises(ValueError, match=message):
        smart_resize(100, 100, 28, *limits)


def test_smart_resize_properties():
    for h in SIZES:
        for w in SIZES:
            if max(h, w) / min(h, w) > 200:
                continue
            rh, rw = smart_resize(h, w)
            assert rh % 28 == 0 and rw % 28 == 0 and rh >= 28 and rw >= 28
            assert rh * rw >= 3136
            if h % 28 == 0 and w % 28 == 0 and 3136 <= h * w <= 12845056:
                assert (rh, rw) == (h, w)  # exact multiples inside the limits are left alone


# ---------------------------------------------------------------- images


def _images() -> dict[str, object]:
    rng = np.random.default_rng(0)
    images: dict[str, object] = {}
    for h, w in [(37, 51), (224, 224), (300, 1000), (10, 10), (1000, 37), (252, 336)]:
        images[f"rgb {h}x{w}"] = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    images["RGBA PIL"] = Image.fromarray(rng.integers(0, 256, (90, 70, 4), dtype=np.uint8), "RGBA")
    images["grey PIL (L)"] = Image.fromarray(rng.integers(0, 256, (90, 70), dtype=np.uint8), "L")
    images["grey+alpha PIL (LA)"] = Image.fromarray(rng.integers(0, 256, (40, 90, 2), dtype=np.uint8), "LA")
    palette = Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).quantize(16)
    palette.info["transparency"] = 3
    images["palette PIL with transparency"] = palette
    images["RGBA array"] = rng.integers(0, 256, (90, 70, 4), dtype=np.uint8)
    images["grey array (H, W, 1)"] = rng.integers(0, 256, (64, 48, 1), dtype=np.uint8)
    images["RGB array"] = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    return images


@pytest.mark.parametrize("name", ["photo", *_images()])
def test_pixel_values_equal_transformers(name, hf_processor, photo_path):
    image = Image.open(photo_path) if name == "photo" else _images()[name]
    ref = hf_processor.image_processor(images=[image], return_tensors="pt")
    ours = pp.preprocess_image(image, pp.PreprocessorConfig())
    assert torch.equal(ours.grid_thw[None], ref["image_grid_thw"])
    assert ours.pixel_values.shape == ref["pixel_values"].shape
    assert (ours.pixel_values - ref["pixel_values"]).abs().max() <= 1e-5


def test_several_images_with_config_from_checkpoint(hf_processor, photo_path, ckpt):
    config = pp.PreprocessorConfig.from_pretrained(ckpt)
    images = [Image.open(photo_path), *list(_images().values())[:3]]
    ref = hf_processor.image_processor(images=images, return_tensors="pt")
    ours = [pp.preprocess_image(im, config) for im in images]
    assert torch.equal(torch.stack([p.grid_thw for p in ours]), ref["image_grid_thw"])
    assert (torch.cat([p.pixel_values for p in ours]) - ref["pixel_values"]).abs().max() <= 1e-5


def test_min_max_pixels_override_equals_transformers(hf_processor, photo_path):
    image = Image.open(photo_path)
    size = {"shortest_edge": 20000, "longest_edge": 50000}
    ref = hf_processor.image_processor(images=[image], size=size, return_tensors="pt")
    ours = pp.preprocess_image(image, min_pixels=20000, max_pixels=50000)
    assert torch.equal(ours.grid_thw[None], ref["image_grid_thw"])
    assert (ours.pixel_values - ref["pixel_values"]).abs().max() <= 1e-5


def test_a_still_image_fills_both_temporal_slots(photo_path):
    out = pp.preprocess_image(photo_path)
    t, h, w = out.grid_thw.tolist()
    assert t == 1 and out.pixel_values.shape == (h * w, 3 * 2 * 14 * 14)
    patches = out.pixel_values.view(-1, 3, 2, 14, 14)  # (N, C, Tp, P, P)
    assert torch.equal(patches[:, :, 0], patches[:, :, 1])


def test_patch_order_is_merge_blocks_first():
    """Rows 0..3 are the 2x2 block at the top-left, read row-major; unpatchify inverts patchify."""
    frames = torch.randn(4, 3, 56, 84)  # grid (2, 4, 6)
    pv, grid = pp.patchify(frames)
    assert grid == (2, 4, 6) and pv.shape == (48, 1176)
    rows = pv.view(48, 3, 2, 14, 14)
    expected_order = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    for k, (i, j) in enumerate(expected_order):
        patch = frames[0:2, :, 14 * i : 14 * i + 14, 14 * j : 14 * j + 14].transpose(0, 1)  # (C, Tp, P, P)
        assert torch.equal(rows[k], patch)
    assert torch.equal(pp.unpatchify(pv, grid), frames)


# ---------------------------------------------------------------- video


@pytest.fixture
def qwen_fetch_video():
    """qwen-vl-utils' real fetch_video with PyAV frames (qwenlite_course.reference.qwen_vl_utils_fetch_video)."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    return qwen_vl_utils_fetch_video


def test_pixel_budget_options_equal_qwen_vl_utils(video_path, qwen_fetch_video):
    for options in [{"min_pixels": 3136, "max_pixels": 50000}, {"total_pixels": 20 * 28 * 28 * 8}]:
        video, _, _ = qwen_fetch_video(video_path, fps=2.0, **options)
        patches = pp.preprocess_video(load_video(video_path), **options)
        assert tuple(patches.frames.shape) == tuple(video.shape), options


def _hf_video(hf_processor, video: Video, min_pixels=pp.VIDEO_MIN_PIXELS, max_pixels=pp.VIDEO_MAX_PIXELS):
    """transformers' video processor on the same chosen frames, told the same per-frame pixel budget."""
    padded = len(video.indices) + len(video.indices) % 2
    cap = min(max_pixels, pp.video_max_pixels(padded, min_pixels))
    meta = {"fps": video.video_fps, "frames_indices": video.indices, "total_num_frames": video.total_frames}
    return hf_processor.video_processor(
        videos=[video.frames],
        video_metadata=[meta],
        size={"shortest_edge": min_pixels, "longest_edge": cap},
        do_sample_frames=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )


@pytest.mark.parametrize("options", [{"fps": 2.0}, {"nframes": 6}, {"fps": 4.0}], ids=str)
def test_video_pixels_equal_transformers(options, video_path, hf_processor):
    video = load_video(video_path, **options)
    ours = pp.preprocess_video(video)
    ref = _hf_video(hf_processor, video)
    assert torch.equal(ours.grid_thw[None], ref["video_grid_thw"])
    assert (ours.pixel_values - ref["pixel_values_videos"]).abs().max() <= 1e-5
    assert ours.second_per_grid_t == pytest.approx(2 / video.sampled_fps)


def test_qwen_vl_utils_pixels_differ_only_by_its_resize_kernel(video_path, qwen_fetch_video):
    """qwen-vl-utils resizes with torchvision's v1 float path; transformers (and we) with the v2 uint8 kernel.

    Same frames, same size; the values differ by a few levels on some pixels. Pin down that this is the only cause.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tv1

    theirs, _, _ = qwen_fetch_video(video_path, fps=2.0)
    ours = pp.preprocess_video(load_video(video_path))
    h, w = ours.frames.shape[-2:]
    v1 = tv1.resize(load_video(video_path).frames, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(theirs, v1.float())
    levels = (theirs - ours.frames.float()).abs()
    assert levels.mean() < 1 and levels.max() > 0  # a real, small, documented difference


def test_odd_frame_count_is_padded_by_repeating_the_last_frame(video_path, hf_processor):
    with av.open(str(video_path)) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)][:5]
    video = Video(torch.stack(frames).permute(0, 3, 1, 2), list(range(5)), 2.0, 5, "five frames")  # sized as a file
    ours = pp.preprocess_video(video)
    assert ours.grid_thw.tolist()[0] == 3
    assert torch.equal(ours.frames[-1], ours.frames[-2])
    ref = _hf_video(hf_processor, video)
    assert torch.equal(ours.grid_thw[None], ref["video_grid_thw"])
    assert (ours.pixel_values - ref["pixel_values_videos"]).abs().max() <= 1e-5


# ---------------------------------------------------------------- preprocessor configs that would give NaN pixels


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "image_std",
            (0.26, 0.0, 0.27),
            r"image_std must be > 0 \(pixels are divided by it\), got \(0.26, 0.0, 0.27\)",
        ),
        ("image_std", (0.26, -0.1, 0.27), "image_std must be > 0"),
        ("image_std", (0.26, math.nan, 0.27), "image_std must be 3 finite numbers"),
        ("image_std", (0.26, math.inf, 0.27), "image_std must be 3 finite numbers"),
        ("image_mean", (0.48, math.nan, 0.41), "image_mean must be 3 finite numbers"),
        ("image_mean", (0.48, -math.inf, 0.41), "image_mean must be 3 finite numbers"),
        (
            "image_mean",
            (0.48, 0.46),
            r"image_mean must be 3 finite numbers \(one per RGB channel\), got \(0.48, 0.46\)",
        ),
        ("rescale_factor", math.nan, "rescale_factor must be a finite number > 0, got nan"),
        ("rescale_factor", 0.0, "rescale_factor must be a finite number > 0, got 0.0"),
        ("patch_size", 0, "patch_size must be an integer >= 1, got 0"),
    ],
    ids=str,
)
def test_preprocessor_config_refuses_numbers_that_give_nan_pixels(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=f"preprocessor config: {message}"):
        pp.PreprocessorConfig(**{field: value})
    raw = {**HUB_PREPROCESSOR, field: list(value) if isinstance(value, tuple) else value}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(raw))  # NaN and inf as JSON's NaN / Infinity
    with pytest.raises(ValueError, match=rf"preprocessor_config.json: preprocessor config: {message}"):
        pp.PreprocessorConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"preprocessor_config.json is not valid JSON"),
        ("[1, 2]", r"preprocessor_config.json must hold a JSON object, got a list"),
        ('{"min_pixels": "many"}', r"preprocessor_config.json: invalid literal for int\(\)"),
    ],
    ids=["not-json", "a-list", "a-string-number"],
)
def test_unreadable_preprocessor_config_is_named(text, message, tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        pp.PreprocessorConfig.from_pretrained(tmp_path)
