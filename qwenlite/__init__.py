"""qwenlite: Qwen2.5-VL rebuilt step by step, checked against transformers on the same checkpoint.

The model package: it imports torch, torchvision (the resize), safetensors, numpy, Pillow, PyAV, Jinja and
transformers' tokenizer, never transformers' models and never the course beside it (`qwenlite_course`: reference
checks, figures, exercises, the twin builder), which tests/test_repo.py checks.
"""

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
    "get_rope_index",
    "smart_resize",
]
