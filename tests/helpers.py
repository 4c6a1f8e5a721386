"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

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
