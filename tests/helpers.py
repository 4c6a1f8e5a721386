"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from qwenlite_course import exercises

DATA = Path(__file__).resolve().parents[1] / "data"  # the repository's data/ folder

QUESTION = {"type": "text", "text": "Describe it in one word."}


def chat_inputs(processor, prompts: list[list[str]], images=(), clips=(), seconds=None) -> dict:
    """transformers' processor on chat prompts whose user turn lists 'image' / 'video' / 'text' items.

    Several prompts are batched with left padding. Each clip is declared to have fps = 2 / seconds,
    so the processor's second_per_grid_ts (temporal_patch_size / fps) equals `seconds`
    (default 0.5, 1.0, 2.0, ... per clip).
    """
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [QUESTION if k == "text" else {"type": k} for k in items]}],
            add_generation_prompt=True,
        )
        for items in prompts
    ]
    kwargs = {}
    if clips:
        seconds = seconds if seconds is not None else [0.5 * 2**i for i in range(len(clips))]
        meta = [{"fps": 2 / s, "total_num_frames": len(c)} for s, c in zip(seconds, clips, strict=True)]
        kwargs = {"videos": list(clips), "video_metadata": meta, "do_sample_frames": False}
    out = processor(
        text=texts, images=list(images) or None, padding=True, padding_side="left", return_tensors="pt", **kwargs
    )
    return dict(out)


def folder_snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under the folder (and the folder itself) -> (size, mtime in ns)."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in paths}


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja", "preprocessor_config.json")


def hostile_checkpoint(twin: Path, folder: Path, weights: bool = True, tokenizer: bool = False) -> Path:
    """A checkpoint folder to damage: the twin's small JSON files copied, its big files linked.

    config.json, generation_config.json and tokenizer_config.json are copies (tests edit them). The weights and
    the big tokenizer files are symbolic links to the twin's: a test that damages one must unlink it first and
    write a new file (`replace`), never write through the link into the twin.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json") + (("tokenizer_config.json",) if tokenizer else ()):
        shutil.copy(twin / name, folder / name)
    linked = (("model.safetensors",) if weights else ()) + (TOKENIZER_FILES if tokenizer else ())
    for name in linked:
        (folder / name).symlink_to(twin / name)
    return folder


def replace(path: Path, data: bytes | str) -> None:
    """Write a file in a hostile checkpoint, first removing a link to the twin's file if that is what is there."""
    path.unlink(missing_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


# ---------------------------------------------------------------- exercises


def fails_without_giving_away(capsys, name: str, answer, correct: int | list[int] | None, hint: str) -> None:
    """check() must refuse the answer and print a hint that holds `hint` and not the correct value
    (correct None: the exercise asks for a function, whose right outputs the hint must not list either).
    An answer of several numbers: none of them may appear in the hint as a number, unless the question
    itself has that number (a hint may repeat the question's data)."""
    assert exercises.check(name, answer) is False
    printed = capsys.readouterr().out
    assert printed.startswith("not yet: ") and hint in printed, printed
    if isinstance(correct, int):
        assert str(correct) not in printed, printed
    elif correct is not None:
        question = exercises.describe(name)
        for number in correct:
            word = rf"(?<![\d.]){number}(?![\d.])"
            assert not re.search(word, printed) or re.search(word, question), (number, printed)


def passes(capsys, name: str, answer) -> None:
    assert exercises.check(name, answer) is True
    assert capsys.readouterr().out == "correct\n"


# ---------------------------------------------------------------- inputs


def random_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """Seeded noise of size (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def random_video(frames: int, size: tuple[int, int]) -> list[Image.Image]:
    return [random_image(100 + i, size) for i in range(frames)]


def hf_chat_inputs(hf_processor, content, images=None, videos=None) -> dict:
    """transformers' processor on one user turn (content: chat items), with the generation prompt."""
    messages = [{"role": "user", "content": content}]
    text = hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    kwargs = {"do_sample_frames": False} if videos else {}
    return dict(hf_processor(text=[text], images=images, videos=videos, return_tensors="pt", **kwargs))
