"""Preprocessing arithmetic: frames -> resized, normalised, flattened patches (`pixel_values`) and `grid_thw`.

Pixels mirror transformers' `Qwen2VLImageProcessor` / `Qwen2VLVideoProcessor` (torchvision backend):
`smart_resize`, bicubic resize on uint8, rescale + CLIP normalisation, and their patch order. A video's
per-frame pixel budget mirrors qwen-vl-utils' `fetch_video`. Loading lives in qwenlite.image_io and
qwenlite.video_io, frame choice in qwenlite.sampling.
Shapes: T frames, C=3 channels, H x W pixels, P=14 patch, M=2 merge, Tp=2 temporal patch,
N = grid_t * grid_h * grid_w patches, each a row of C*Tp*P*P = 1176 numbers. No batch axis anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import VisionConfig, finite_number, read_json
from .image_io import ImageSource, load_image
from .video_io import Video

# geometry: the vision tower's (config.py is where these numbers are written)
PATCH_SIZE = VisionConfig.patch_size  # 14 pixels per patch side (the Conv3d kernel of the vision tower)
MERGE_SIZE = VisionConfig.spatial_merge_size  # 2: the merger joins MERGE x MERGE patches into one LLM token
TEMPORAL_PATCH_SIZE = VisionConfig.temporal_patch_size  # 2 frames per patch (the Conv3d's temporal kernel)
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: both sides of a resized image are multiples of this
MIN_PIXELS = 3136  # 56*56 = 4 LLM tokens: the hub preprocessor_config.json
MAX_PIXELS = 12845056  # 16384 tokens * 28*28
MAX_RATIO = 200  # longest side / shortest side allowed
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Per-frame pixel budget of qwen-vl-utils (vision_process.py) for videos.
VIDEO_MIN_PIXELS = 128 * FACTOR * FACTOR  # 100352: at least 128 tokens per frame pair
VIDEO_MAX_PIXELS = 768 * FACTOR * FACTOR  # 602112: at most 768 tokens per frame pair
VIDEO_TOTAL_PIXELS = int(128000 * FACTOR * FACTOR * 0.9)  # whole-video budget: 90% of a 128k context


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PreprocessorConfig:
    """The fields of a checkpoint's preprocessor_config.json that decide the pixels."""

    min_pixels: int = MIN_PIXELS  # smallest resized area
    max_pixels: int = MAX_PIXELS  # largest resized area
    patch_size: int = PATCH_SIZE  # spatial patch side
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE  # frames per patch
    merge_size: int = MERGE_SIZE  # patches per LLM token along each side
    image_mean: tuple[float, ...] = CLIP_MEAN  # per-channel mean after rescaling to [0, 1]
    image_std: tuple[float, ...] = CLIP_STD  # per-channel std
    rescale_factor: float = 1 / 255  # uint8 -> [0, 1]

    def __post_init__(self) -> None:
        """Refuse numbers that would end as NaN pixels (std 0 or non-finite) or a nonsense grid, by field name."""
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(finite_number(v) for v in values):
                raise ValueError(
                    f"preprocessor config: {name} must be 3 finite numbers (one per RGB channel), got {values}"
                )
        if any(v <= 0 for v in self.image_std):
            raise ValueError(
                f"preprocessor config: image_std must be > 0 (pixels are divided by it), got {self.image_std}"
            )
        if not finite_number(self.rescale_factor) or self.rescale_factor <= 0:
            raise ValueError(
                f"preprocessor config: rescale_factor must be a finite number > 0, got {self.rescale_factor}"
            )
        for name in ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"preprocessor config: {name} must be an integer >= 1, got {value!r}")

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PreprocessorConfig:
        """Read preprocessor_config.json; both `min_pixels`/`max_pixels` and the newer `size` dict are accepted."""
        file = Path(path) / "preprocessor_config.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path} has no preprocessor_config.json")
        raw: dict[str, Any] = read_json(file)
        if not isinstance(raw, dict):
            raise ValueError(f"{file} must hold a JSON object, got a {type(raw).__name__}")
        size = raw.get("size") or {}
        try:
            return cls(
                min_pixels=int(raw.get("min_pixels", size.get("shortest_edge", MIN_PIXELS))),
                max_pixels=int(raw.get("max_pixels", size.get("longest_edge", MAX_PIXELS))),
                patch_size=int(raw.get("patch_size", PATCH_SIZE)),
                temporal_patch_size=int(raw.get("temporal_patch_size", TEMPORAL_PATCH_SIZE)),
                merge_size=int(raw.get("merge_size", MERGE_SIZE)),
                image_mean=tuple(raw.get("image_mean", CLIP_MEAN)),
                image_std=tuple(raw.get("image_std", CLIP_STD)),
                rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
            )
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{file}: {err}") from None


# ---------------------------------------------------------------- smart_resize


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: float = MIN_PIXELS, max_pixels: float = MAX_PIXELS
) -> tuple[int, int]:
    """The size an image is resized to: both sides multiples of `factor`, area in [min_pixels, max_pixels].

    Mirrors transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize step for step:
    1) round each side to the nearest multiple of 28 (Python's round: halves go to even);
    2) if that area is too large, shrink both sides by the same beta and round *down* (at least 28);
    3) if it is too small, grow both sides by the same beta and round *up*.
    500 x 700, default limits -> (504, 700); 10 x 10 -> (56, 56); 4000 x 4000 -> (3584, 3584).
    qwen-vl-utils' copy differs only in degenerate cases: it clamps a side that rounds to 0 up to 28
    before step 3, and in step 2 it can return a side of 0 (no clamp). tests/test_preprocessing.py shows both.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"smart_resize: {name} must be a positive integer number of pixels, got {value!r}")
    for name, limit in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if not finite_number(limit) or limit <= 0:
            raise ValueError(f"smart_resize: {name} must be a finite number of pixels > 0, got {limit!r}")
    if min_pixels > max_pixels:
        raise ValueError(f"smart_resize: min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(
            f"smart_resize: aspect ratio of {height}x{width} (height x width) is "
            f"{max(height, width) / min(height, width):.1f}, above the limit of {MAX_RATIO}"
        )
    h_bar = round(height / factor) * factor  # 1) nearest multiple
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:  # 2) too many pixels: scale down, round down
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:  # 3) too few pixels: scale up, round up
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# ---------------------------------------------------------------- resize, normalise, patchify


def resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., C, H, W) uint8 -> (..., C, height, width) uint8, bicubic with antialiasing.

    parity: transformers' TorchvisionBackend.resize calls exactly this torchvision function on the uint8
    tensor; on CPU torchvision resizes uint8 natively (rounded, clamped to 0..255). Same size = no-op.
    """
    from torchvision.transforms.v2 import functional as tvF  # imported here: it adds ~1 s to `import qwenlite`

    return tvF.resize(frames, [height, width], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)


def normalize(frames: torch.Tensor, config: PreprocessorConfig) -> torch.Tensor:
    """uint8 -> float32 (x / 255 - mean) / std per channel, on (..., C, H, W)."""
    mean = torch.tensor(config.image_mean).view(-1, 1, 1)
    std = torch.tensor(config.image_std).view(-1, 1, 1)
    # parity: transformers fuses this into (x - 255 mean) / (255 std); the two agree to ~1e-7
    return (frames.float() * config.rescale_factor - mean) / std


def patchify(
    frames: torch.Tensor,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(T, C, H, W) float frames -> pixel_values (N, C*Tp*P*P) and (grid_t, grid_h, grid_w).

    T must be a multiple of Tp and H, W multiples of P*M. Rows come in the reference order:
    frame group by frame group; inside one, the M x M patches that become one LLM token are consecutive
    (row-major over the merged grid, then row-major inside each 2x2 block); each row is (C, Tp, P, P) flattened.
    Grid (1, 4, 4): rows 0-3 are patches (0,0) (0,1) (1,0) (1,1), rows 4-7 are (0,2) (0,3) (1,2) (1,3), ...
    Mirrors Qwen2VLVideoProcessor.patchify (the image processor's is the same with T = Tp copies of one image).
    """
    t, c, h, w = frames.shape
    grid_t, grid_h, grid_w = t // temporal_patch_size, h // patch_size, w // patch_size
    if t % temporal_patch_size or grid_h % merge_size or grid_w % merge_size or h % patch_size or w % patch_size:
        raise ValueError(
            f"patchify: frames {tuple(frames.shape)} do not tile into {temporal_patch_size} x "
            f"{patch_size * merge_size} x {patch_size * merge_size} blocks"
        )
    # 1) name every axis: frame group, frame in group, channel, then (block, row in block, pixel) for h and w
    x = frames.reshape(
        grid_t,
        temporal_patch_size,
        c,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # 2) order them: which patch (t, block row, block col, row in block, col in block), then its content
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/M, w/M, M, M, C, Tp, P, P)
    # 3) one row per patch
    pixel_values = x.reshape(grid_t * grid_h * grid_w, c * temporal_patch_size * patch_size * patch_size)  # (N, 1176)
    return pixel_values, (grid_t, grid_h, grid_w)


def unpatchify(
    pixel_values: torch.Tensor,
    grid_thw: Sequence[int],
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> torch.Tensor:
    """The inverse of `patchify`: (N, C*Tp*P*P) -> (T, C, H, W). Used by the notebook to show patches are lossless."""
    grid_t, grid_h, grid_w = (int(v) for v in grid_thw)
    x = pixel_values.reshape(
        grid_t,
        grid_h // merge_size,
        grid_w // merge_size,
        merge_size,
        merge_size,
        -1,
        temporal_patch_size,
        patch_size,
        patch_size,
    )
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, Tp, C, h/M, M, P, w/M, M, P)
    return x.reshape(grid_t * temporal_patch_size, -1, grid_h * patch_size, grid_w * patch_size)


@dataclass
class Patches:
    """One image or video, ready for the vision tower."""

    pixel_values: torch.Tensor  # (N, C*Tp*P*P) float32
    grid_thw: torch.Tensor  # (3,) long: grid_t, grid_h, grid_w in patches
    frames: torch.Tensor  # (T, C, H, W) uint8: the resized frames before normalisation (T = Tp for an image)
    second_per_grid_t: float | None = None  # videos only: seconds covered by one temporal patch

    def num_tokens(self, merge_size: int = MERGE_SIZE) -> int:
        """LLM tokens this input becomes: grid_t * grid_h * grid_w / merge**2."""
        return int(self.grid_thw.prod()) // merge_size**2


def image_size(
    height: int,
    width: int,
    config: PreprocessorConfig | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """(H, W) an H x W image is resized to: smart_resize within the call's limits, else preprocessor_config's."""
    config = config or PreprocessorConfig()
    low = config.min_pixels if min_pixels is None else min_pixels
    high = config.max_pixels if max_pixels is None else max_pixels
    return smart_resize(height, width, config.factor, low, high)


def preprocess_image(
    image: ImageSource,
    config: PreprocessorConfig | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Patches:
    """An image -> Patches with grid_t = 1: the still image is repeated to fill temporal_patch_size frames."""
    config = config or PreprocessorConfig()
    rgb = load_image(image)  # (3, H, W) uint8
    height, width = image_size(rgb.shape[1], rgb.shape[2], config, min_pixels, max_pixels)
    resized = resize(rgb, height, width)  # (3, h, w) uint8
    frames = resized[None].expand(config.temporal_patch_size, -1, -1, -1)  # (Tp, 3, h, w): the repeat
    pixel_values, grid = patchify(
        normalize(frames, config), config.patch_size, config.merge_size, config.temporal_patch_size
    )
    return Patches(pixel_values, torch.tensor(grid), frames)


# ---------------------------------------------------------------- video: the per-frame budget


def video_max_pixels(
    num_frames: int,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
) -> float:
    """Per-frame pixel cap of qwen-vl-utils' fetch_video: a fair share of the whole-video budget.

    max(min(max_pixels, total_pixels / T * Tp), 1.05 * min_pixels): long videos get smaller frames,
    but never below (about) the per-frame minimum. 8 frames -> 602112 (the per-frame maximum wins).
    """
    return max(min(max_pixels, total_pixels / num_frames * temporal_patch_size), int(min_pixels * 1.05))


def video_frame_size(
    height: int,
    width: int,
    num_frames: int,
    config: PreprocessorConfig | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> tuple[int, int]:
    """(H, W) every sampled frame of an H x W video is resized to: qwen-vl-utils' per-frame share of the whole
    video's budget (video_max_pixels, over the frame count padded to a multiple of temporal_patch_size), then
    smart_resize. min_pixels defaults to VIDEO_MIN_PIXELS, max_pixels to VIDEO_MAX_PIXELS."""
    config = config or PreprocessorConfig()
    tp = config.temporal_patch_size
    low = VIDEO_MIN_PIXELS if min_pixels is None else min_pixels
    high = VIDEO_MAX_PIXELS if max_pixels is None else max_pixels
    cap = min(high, video_max_pixels(num_frames + -num_frames % tp, low, VIDEO_MAX_PIXELS, total_pixels, tp))
    return smart_resize(height, width, config.factor, low, cap)


def preprocess_video(
    video: Video,
    config: PreprocessorConfig | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> Patches:
    """Sampled frames -> Patches with grid_t = T / 2 and second_per_grid_t = Tp / sampled_fps.

    The frame size follows qwen-vl-utils' per-frame budget (video_max_pixels) computed with the frame count
    after padding (min_pixels defaults to VIDEO_MIN_PIXELS, max_pixels to VIDEO_MAX_PIXELS); resizing and
    normalising follow transformers' video processor. An odd frame count is padded by repeating the last frame
    (both references do this). Frames from a list or folder (video.frame_list) are sized as qwen-vl-utils 0.0.14
    sizes a list: each frame first goes through its fetch_image sizing (called with 28 as the patch size, so
    multiples of 56, image limits unless min_pixels / max_pixels are given), then the video budget; qwenlite
    resizes once, from the original frames to that final size.
    """
    config = config or PreprocessorConfig()
    tp = config.temporal_patch_size
    frames = video.frames  # (T, 3, H, W) uint8
    if frames.shape[0] == 0:
        raise ValueError(f"video {video.source}: no frames to process")
    if not finite_number(total_pixels) or total_pixels <= 0:
        raise ValueError(f"preprocess_video: total_pixels must be a finite number of pixels > 0, got {total_pixels!r}")
    if pad := -frames.shape[0] % tp:  # 1) odd count: repeat the last frame
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    height, width = frames.shape[2], frames.shape[3]
    if video.frame_list:  # 2a) qwen-vl-utils 0.0.14: fetch_image(frame, image_patch_size=28) on each frame first
        list_factor = 2 * config.factor
        height, width = smart_resize(
            height,
            width,
            list_factor,
            4 * list_factor**2 if min_pixels is None else min_pixels,
            16384 * list_factor**2 if max_pixels is None else max_pixels,
        )
    height, width = video_frame_size(height, width, frames.shape[0], config, min_pixels, max_pixels, total_pixels)  # 2)
    resized = resize(frames, height, width)  # 3) (T, 3, h, w) uint8
    pixel_values, grid = patchify(normalize(resized, config), config.patch_size, config.merge_size, tp)  # 4)
    return Patches(pixel_values, torch.tensor(grid), resized, second_per_grid_t=tp / video.sampled_fps)
