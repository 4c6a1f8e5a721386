"""Preprocessing: an image or a video, from file to `pixel_values` (flattened patches) and `grid_thw`.

Pixels mirror transformers' `Qwen2VLImageProcessor` / `Qwen2VLVideoProcessor` (torchvision backend):
`smart_resize`, bicubic resize on uint8, rescale + CLIP normalisation, and their patch order.
Video frame choice and the per-frame pixel budget mirror qwen-vl-utils (`vision_process.smart_nframes`,
`fetch_video`), the helper Qwen's model card uses before calling the transformers processor.
Shapes: T frames, C=3 channels, H x W pixels, P=14 patch, M=2 merge, Tp=2 temporal patch,
N = grid_t * grid_h * grid_w patches, each a row of C*Tp*P*P = 1176 numbers. No batch axis anywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

PATCH_SIZE = 14  # pixels per patch side (the Conv3d kernel of the vision tower)
MERGE_SIZE = 2  # the merger joins MERGE x MERGE patches into one LLM token
TEMPORAL_PATCH_SIZE = 2  # frames per patch (the Conv3d's temporal kernel)
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: both sides of a resized image are multiples of this
MIN_PIXELS = 3136  # 56*56 = 4 LLM tokens: the hub preprocessor_config.json
MAX_PIXELS = 12845056  # 16384 tokens * 28*28
MAX_RATIO = 200  # longest side / shortest side allowed
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Video rules of qwen-vl-utils (vision_process.py), in frames and pixels.
VIDEO_FPS = 2.0  # frames sampled per second of video
VIDEO_MIN_FRAMES = 4
VIDEO_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * FACTOR * FACTOR  # 100352: at least 128 tokens per frame pair
VIDEO_MAX_PIXELS = 768 * FACTOR * FACTOR  # 602112: at most 768 tokens per frame pair
VIDEO_TOTAL_PIXELS = int(128000 * FACTOR * FACTOR * 0.9)  # whole-video budget: 90% of a 128k context

ImageSource = str | Path | Image.Image | np.ndarray | torch.Tensor


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
        raw: dict[str, Any] = json.loads(file.read_text())
        size = raw.get("size") or {}
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


# ---------------------------------------------------------------- smart_resize


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
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


# ---------------------------------------------------------------- loading images


def load_image(source: ImageSource, exif_transpose: bool = True) -> torch.Tensor:
    """Any image -> (3, H, W) uint8 RGB tensor.

    `source`: a file path, a PIL image, a numpy array (H, W), (H, W, 1|3|4) uint8, or a tensor (C, H, W) uint8.
    RGB conversion follows transformers' `convert_to_rgb`: grey is repeated to 3 channels; an alpha channel is
    removed by compositing over white (PIL's integer `alpha_composite` for PIL images, the float formula of
    transformers' torchvision backend for arrays), so transparent pixels become white, not black.
    EXIF: for a file path, the orientation tag is applied and then discarded (as transformers' `load_image` does),
    so the pixels are upright and carry no metadata; pass exif_transpose=False to read the raw pixel order
    (what qwen-vl-utils' `fetch_image` does).
    """
    if isinstance(source, (str, Path)):
        return _pil_to_tensor(_open_image(Path(source), exif_transpose))
    if isinstance(source, Image.Image):
        return _pil_to_tensor(source)
    if isinstance(source, np.ndarray):
        return _array_to_tensor(torch.from_numpy(np.ascontiguousarray(source)), channels_last=True, what="array")
    if isinstance(source, torch.Tensor):
        return _array_to_tensor(source, channels_last=False, what="tensor")
    raise TypeError(f"load_image: expected a path, PIL image, numpy array or tensor, got {type(source).__name__}")


def _open_image(path: Path, exif_transpose: bool) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"image file {path} is empty (0 bytes)")
    try:
        image = Image.open(path)
        image.load()  # PIL opens lazily: decode now so a truncated file fails here, with its name
    except UnidentifiedImageError as err:
        raise ValueError(f"{path} is not an image file PIL can read ({err})") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: the file is truncated or corrupt ({err})") from err
    return ImageOps.exif_transpose(image) if exif_transpose else image


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    # parity: transformers' image_transforms.convert_to_rgb (PIL branch)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    array = np.array(image.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


def _array_to_tensor(x: torch.Tensor, channels_last: bool, what: str) -> torch.Tensor:
    if x.dtype != torch.uint8:
        raise ValueError(f"load_image: expected a uint8 {what} (values 0..255), got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]  # (1, H, W) grey
    elif x.ndim == 3 and channels_last:
        x = x.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        layout = "(H, W) or (H, W, C)" if channels_last else "(H, W) or (C, H, W)"
        raise ValueError(f"load_image: a {what} image must be {layout} with C in 1, 3, 4; got shape {tuple(x.shape)}")
    if min(x.shape[1:]) == 0:
        raise ValueError(f"load_image: the {what} image is empty, shape {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)  # grey -> RGB
    elif x.shape[0] == 4:
        from torchvision.transforms.v2 import functional as tvF

        # parity: transformers' TorchvisionBackend.convert_to_rgb: rgb * alpha + (1 - alpha) in float, back to uint8
        rgba = tvF.to_dtype(x.movedim(0, -1), torch.float32, scale=True)  # (H, W, 4) in [0, 1]
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        x = tvF.to_dtype(rgb, torch.uint8, scale=True).movedim(-1, 0)
    return x.contiguous()


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


def preprocess_image(
    image: ImageSource,
    config: PreprocessorConfig | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Patches:
    """An image -> Patches with grid_t = 1: the still image is repeated to fill temporal_patch_size frames."""
    config = config or PreprocessorConfig()
    rgb = load_image(image)  # (3, H, W) uint8
    height, width = smart_resize(
        rgb.shape[1],
        rgb.shape[2],
        config.factor,
        config.min_pixels if min_pixels is None else min_pixels,
        config.max_pixels if max_pixels is None else max_pixels,
    )
    resized = resize(rgb, height, width)  # (3, h, w) uint8
    frames = resized[None].expand(config.temporal_patch_size, -1, -1, -1)  # (Tp, 3, h, w): the repeat
    pixel_values, grid = patchify(
        normalize(frames, config), config.patch_size, config.merge_size, config.temporal_patch_size
    )
    return Patches(pixel_values, torch.tensor(grid), frames)


# ---------------------------------------------------------------- video: loading and frame sampling


@dataclass
class Video:
    """Frames chosen from a video, at their original size (uint8), with where and when they came from."""

    frames: torch.Tensor  # (T, 3, H, W) uint8, the sampled frames
    indices: list[int]  # frame number of each sampled frame in the source
    video_fps: float  # frame rate of the source
    total_frames: int  # frames in the source
    source: str = ""  # where the frames came from, for error messages

    @property
    def sampled_fps(self) -> float:
        """Frames per second after sampling (qwen-vl-utils' `sample_fps`): T / total_frames * video_fps."""
        return len(self.indices) / self.total_frames * self.video_fps

    @property
    def timestamps(self) -> list[float]:
        """When each sampled frame is shown, in seconds: index / video_fps."""
        return [i / self.video_fps for i in self.indices]


def smart_nframes(
    total_frames: int,
    video_fps: float,
    fps: float | None = VIDEO_FPS,
    nframes: int | None = None,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int | None = None,
    frame_factor: int = TEMPORAL_PATCH_SIZE,
) -> int:
    """How many frames to sample: mirrors qwen_vl_utils.vision_process.smart_nframes.

    A fixed `nframes` is rounded to a multiple of 2 (Python's round: 5 -> 4, 7 -> 8). Otherwise
    nframes = duration * fps, clamped to [min_frames, max_frames] (min rounded up, max rounded down to a
    multiple of 2; max_frames defaults to min(768, total_frames)), capped by total_frames, rounded down to a
    multiple of 2. 32 frames at 8 fps, fps 2 -> 8 frames; 10 frames at 30 fps -> 4 (the minimum).
    """
    if total_frames <= 0:
        raise ValueError(f"the video has no frames (total_frames = {total_frames})")
    if total_frames < frame_factor:
        raise ValueError(
            f"the video has {total_frames} frame(s), fewer than the {frame_factor} that one temporal patch "
            "(temporal_patch_size) needs"
        )
    if nframes is not None:
        n = round(nframes / frame_factor) * frame_factor
    else:
        if fps is None or fps <= 0 or video_fps <= 0:
            raise ValueError(f"sampling at fps needs positive fps and video_fps, got fps={fps}, video_fps={video_fps}")
        lo = math.ceil(min_frames / frame_factor) * frame_factor
        hi = max_frames if max_frames is not None else min(VIDEO_MAX_FRAMES, total_frames)
        hi = math.floor(hi / frame_factor) * frame_factor
        n = min(max(total_frames / video_fps * fps, lo), hi, total_frames)
        n = math.floor(n / frame_factor) * frame_factor
    if not frame_factor <= n <= total_frames:
        raise ValueError(
            f"cannot sample {n} frames from a video of {total_frames} frames: the count must lie in "
            f"[{frame_factor}, {total_frames}] (asked for nframes={nframes}, fps={fps}, min_frames={min_frames}, "
            f"max_frames={max_frames})"
        )
    return n


def sample_frame_indices(total_frames: int, nframes: int) -> list[int]:
    """nframes evenly spread frame numbers from first to last: round(linspace(0, total - 1, nframes)).

    As qwen-vl-utils' readers do (torch.linspace(...).round(): halves go to even).
    32 frames -> 8: [0, 4, 9, 13, 18, 22, 27, 31].
    """
    return torch.linspace(0, total_frames - 1, nframes).round().long().tolist()


def load_video(
    source: str | Path | Sequence[ImageSource],
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int | None = None,
    video_fps: float | None = None,
) -> Video:
    """Read a video and choose its frames (either `fps` or `nframes`, as in qwen-vl-utils).

    `fps` defaults to 2.0 when `nframes` is not given.
    `source`: a video file (decoded with PyAV), a folder of image files (sorted by name), or a list of frames
    (anything `load_image` takes). A file knows its own frame rate. For a folder or a list, pass `video_fps`
    (the rate the frames were captured at) to sample them like a file; without it the frames are taken as
    already sampled, all of them, at `fps` frames per second (qwen-vl-utils' rule for frame lists).
    """
    if nframes is not None and fps is not None:
        raise ValueError(f"load_video: give either fps ({fps}) or nframes ({nframes}), not both")
    if nframes is None and fps is None:
        fps = VIDEO_FPS
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        folder = Path(source)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"video folder {folder} holds no frame files")
        return _video_from_frames(
            [load_image(p) for p in files], str(folder), fps, nframes, min_frames, max_frames, video_fps
        )
    if isinstance(source, (str, Path)):
        return _read_video_file(Path(source), fps, nframes, min_frames, max_frames)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if len(source) == 0:
            raise ValueError("load_video: the list of frames is empty")
        return _video_from_frames(
            [load_image(f) for f in source], "<frames>", fps, nframes, min_frames, max_frames, video_fps
        )
    raise TypeError(f"load_video: expected a file, a folder or a list of frames, got {type(source).__name__}")


def _video_from_frames(
    frames: list[torch.Tensor],
    name: str,
    fps: float | None,
    nframes: int | None,
    min_frames: int,
    max_frames: int | None,
    video_fps: float | None,
) -> Video:
    sizes = {tuple(f.shape) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"video {name}: all frames must have one size, found {sorted(sizes)}")
    if video_fps is None:  # already sampled: keep every frame (qwen-vl-utils' list-of-frames rule)
        rate = fps if fps is not None else VIDEO_FPS
        return Video(torch.stack(frames), list(range(len(frames))), rate, len(frames), name)
    n = smart_nframes(len(frames), video_fps, fps, nframes, min_frames, max_frames)
    idx = sample_frame_indices(len(frames), n)
    return Video(torch.stack([frames[i] for i in idx]), idx, video_fps, len(frames), name)


def _read_video_file(
    path: Path, fps: float | None, nframes: int | None, min_frames: int, max_frames: int | None
) -> Video:
    import av  # PyAV: FFmpeg in a wheel

    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"video file {path} is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"video {path} is empty: it holds no video stream, so no frames")
            stream = container.streams.video[0]
            # 1) count the frames without decoding them (the container's count, else count packets)
            total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            if total == 0:
                raise ValueError(f"video {path} is empty: its video stream has no frames")
            rate = float(stream.average_rate) if stream.average_rate else total / float(container.duration / 1e6)
            # 2) choose the frames, then decode once and keep only those
            try:
                n = smart_nframes(total, rate, fps, nframes, min_frames, max_frames)
            except ValueError as err:
                raise ValueError(f"video {path}: {err}") from None
            idx = sample_frame_indices(total, n)
            wanted, kept = set(idx), {}
            container.seek(0)
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    kept[i] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (3, H, W)
                if i >= idx[-1]:
                    break
    except av.error.EOFError as err:
        raise ValueError(f"video {path} ends before its first frame: empty or truncated ({err})") from err
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: not a video file, or truncated/corrupt ({err})") from err
    missing = [i for i in idx if i not in kept]
    if missing:
        raise ValueError(
            f"video {path}: decoding stopped before frames {missing} (the file says {total} frames; "
            "it may be truncated)"
        )
    return Video(torch.stack([kept[i] for i in idx]), idx, rate, total, str(path))


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


def preprocess_video(
    video: Video,
    config: PreprocessorConfig | None = None,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> Patches:
    """Sampled frames -> Patches with grid_t = T / 2 and second_per_grid_t = Tp / sampled_fps.

    The frame size follows qwen-vl-utils' per-frame budget (video_max_pixels) computed with the frame count
    after padding; resizing and normalising follow transformers' video processor. An odd frame count is padded
    by repeating the last frame (both references do this).
    """
    config = config or PreprocessorConfig()
    tp = config.temporal_patch_size
    frames = video.frames  # (T, 3, H, W) uint8
    if frames.shape[0] == 0:
        raise ValueError(f"video {video.source}: no frames to process")
    if pad := -frames.shape[0] % tp:  # 1) odd count: repeat the last frame
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    cap = min(max_pixels, video_max_pixels(frames.shape[0], min_pixels, VIDEO_MAX_PIXELS, total_pixels, tp))
    height, width = smart_resize(frames.shape[2], frames.shape[3], config.factor, min_pixels, cap)  # 2) size
    resized = resize(frames, height, width)  # 3) (T, 3, h, w) uint8
    pixel_values, grid = patchify(normalize(resized, config), config.patch_size, config.merge_size, tp)  # 4)
    return Patches(pixel_values, torch.tensor(grid), resized, second_per_grid_t=tp / video.sampled_fps)
