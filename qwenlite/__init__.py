"""qwenlite: Qwen2.5-VL rebuilt step by step, checked against transformers on the same checkpoint."""

from . import checkpoint
from .config import QwenLiteConfig, TextConfig, VisionConfig
from .model import QwenLiteVL, VLOutput
from .preprocessing import smart_resize
from .processor import Processor
from .rope_index import get_rope_index

__all__ = [
    "Processor",
    "QwenLiteConfig",
    "QwenLiteVL",
    "TextConfig",
    "VLOutput",
    "VisionConfig",
    "checkpoint",
    "get_rope_index",
    "smart_resize",
]
