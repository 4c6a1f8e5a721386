"""Loading an image: any file, PIL image, array or tensor -> a (3, H, W) uint8 RGB tensor.

Mirrors transformers' `image_utils.load_image` and `convert_to_rgb` (EXIF orientation applied, grey repeated to
three channels, transparency composited over white). qwen-vl-utils' `fetch_image` reads the raw pixel order
(exif_transpose=False). Shapes: H x W pixels, 3 channels, no batch axis.
PIL modes wider than 8 bits are converted by their range, not clipped: 16-bit ("I;16*", and "I" holding
0..65535, as a 16-bit PNG or TIFF may open) -> round(x / 257); float ("F") must hold [0, 1] -> round(x * 255).
qwenlite never downloads: a URL is refused up front.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

ImageSource = str | Path | Image.Image | np.ndarray | torch.Tensor
URL = re.compile(r"^(https?|ftps?):/|^data:", re.IGNORECASE)  # refused: qwenlite reads local files only


def load_image(source: ImageSource, exif_transpose: bool = True) -> torch.Tensor:
    """Any image -> (3, H, W) uint8 RGB tensor.

    `source`: a file path, a PIL image, a numpy array (H, W), (H, W, 1|3|4) uint8, or a tensor (C, H, W) uint8.
    RGB conversion follows transformers' `convert_to_rgb`: grey is repeated to 3 channels; an alpha channel is
    removed by compositing over white (PIL's integer `alpha_composite` for PIL images, the float formula of
    transformers' torchvision backend for arrays), so transparent pixels become white, not black.
    EXIF: for a file path or a PIL image, the orientation tag is applied (as transformers' `load_image` does for
    both), so the pixels are upright; pass exif_transpose=False to read the raw pixel order (what qwen-vl-utils'
    `fetch_image` does). A caller's PIL image is never modified.
    A URL (http, https, ftp, data:) is refused: qwenlite never downloads; save the file and pass its path.
    """
    if isinstance(source, (str, Path)):
        return _pil_to_tensor(_open_image(_local_path(source), exif_transpose), str(source))
    if isinstance(source, Image.Image):
        return _pil_to_tensor(ImageOps.exif_transpose(source) if exif_transpose else source, "the PIL image")
    if isinstance(source, np.ndarray):
        return _array_to_tensor(torch.from_numpy(np.ascontiguousarray(source)), channels_last=True, what="array")
    if isinstance(source, torch.Tensor):
        return _array_to_tensor(source, channels_last=False, what="tensor")
    raise TypeError(f"load_image: expected a path, PIL image, numpy array or tensor, got {type(source).__name__}")


def _local_path(source: str | Path) -> Path:
    """A path to a local file; a URL is refused by name (Path() would fold "https://x" into "https:/x")."""
    text = str(source)
    if URL.match(text):  # also a Path that already folded "//" into "/"
        shown = text if len(text) <= 100 else text[:100] + "..."
        raise ValueError(
            f"image {shown!r} is a URL: qwenlite never downloads; save the file first and pass its local path"
        )
    if isinstance(source, str) and text.startswith("file://"):  # qwen-vl-utils' local-file form
        return Path(text[len("file://") :])
    return Path(source)


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


def _pil_to_tensor(image: Image.Image, name: str) -> torch.Tensor:
    image = _to_8_bit(image, name)
    # parity: transformers' image_transforms.convert_to_rgb (PIL branch)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    array = np.array(image.convert("RGB"))  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (3, H, W)


def _to_8_bit(image: Image.Image, name: str) -> Image.Image:
    """16-bit and float PIL images -> mode "L" by their real range (PIL's own convert clips them at 255)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image).astype(np.int64)  # (H, W)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"{name}: mode {image.mode!r} holds values {low}..{high}; qwenlite reads integer images as 16-bit "
                "(0..65535, divided by 257): convert it to 'L' or 'I;16' yourself, stating its range"
            )
        return Image.fromarray(((values + 128) // 257).astype(np.uint8), "L")  # round(x / 257): 65535 -> 255
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = bool(np.isfinite(values).all())
        lowest, highest = (float(values.min()), float(values.max())) if values.size and finite else (math.nan, math.nan)
        if not finite or lowest < 0 or highest > 1:
            found = "NaN or infinite values" if not finite else f"values {lowest:g}..{highest:g}"
            raise ValueError(
                f"{name}: a float (mode 'F') image must hold finite values in [0, 1] (scaled by 255), "
                f"found {found}; scale it to [0, 1] or convert it to 'L' yourself"
            )
        return Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    return image


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
