"""Bad input to every public entry point raises an error that names the input and the rule it breaks.

Each case asserts the error type and a message specific enough that a generic one (a bare torch
RuntimeError, an IndexError, "invalid input") cannot match it. Entry points here: `Processor`, `QwenLiteVL`
(vision inputs, fusion, positions, generate), `get_rope_index`, and `reference` (QWENLITE_DTYPE /
QWENLITE_DEVICE, the tolerance policy). Cases that are part of a larger differential test (both libraries
refuse the same input) stay beside it in their module's test file. The rest live beside the code that handles
them: images and videos in tests/test_image_io.py and tests/test_video_io.py, smart_resize and the
preprocessor config in tests/test_preprocessing.py; loading a checkpoint in tests/test_config.py
(config.json), tests/test_weights.py (safetensors files, the shard index, `QwenLiteVL.from_pretrained`:
folders, weights, dtype and device, generation_config.json, token ids).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from qwenlite import Processor, QwenLiteVL, get_rope_index
from qwenlite import preprocessing as pp
from qwenlite.decoder import KVCache, causal_mask
from qwenlite.fusion import fuse
from qwenlite.reference import run_settings, tolerance

IMG, VID, VS, VE = 151655, 151656, 151652, 151653  # <|image_pad|>, <|video_pad|>, <|vision_start|>, <|vision_end|>


@pytest.fixture(scope="module")
def processor(ckpt) -> Processor:
    return Processor.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (56, 84, 3), dtype=np.uint8)  # grid (1, 4, 6): 6 tokens


@pytest.fixture(scope="module")
def inputs(processor, small) -> dict:
    return processor(text="a<|vision_start|><|image_pad|><|vision_end|>b", images=[small])


# ---------------------------------------------------------------- the processor


def test_processor_pads_and_items_must_agree(processor, small):
    with pytest.raises(ValueError, match=r"the text holds 1 <\|image_pad\|> token\(s\) but 2 image\(s\) were given"):
        processor(text="<|image_pad|>", images=[small, small])
    with pytest.raises(ValueError, match=r"the text holds 0 <\|image_pad\|> token\(s\) but 1 image\(s\)"):
        processor(text="an image but no placeholder", images=[small])
    with pytest.raises(ValueError, match=r"the text holds 1 <\|image_pad\|> token\(s\) but 0 image\(s\)"):
        processor(text="a placeholder <|image_pad|> but no image")
    with pytest.raises(ValueError, match=r"the text holds 0 <\|video_pad\|> token\(s\) but 1 video\(s\)"):
        processor(text="no pads", videos=[[np.zeros((28, 28, 3), np.uint8)] * 2])


def test_processor_refuses_bad_options_and_items(processor, small):
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right', got 'middle'"):
        processor(text="hi", padding_side="middle")
    with pytest.raises(ValueError, match="return_tensors='np': qwenlite returns torch tensors only"):
        processor(text="hi", return_tensors="np")
    with pytest.raises(ValueError, match="image content item .* has no 'image' .* or 'image_url'"):
        processor.from_messages([{"role": "user", "content": [{"type": "image"}]}])
    with pytest.raises(ValueError, match="video content item .* has no 'video'"):
        processor.from_messages([{"role": "user", "content": [{"type": "video"}]}])
    image_patches = pp.preprocess_image(small)  # an image's Patches handed over as a video
    with pytest.raises(ValueError, match="a video's Patches need second_per_grid_t: build them with preprocess_video"):
        processor(text="<|video_pad|>", videos=[image_patches])


def test_processor_folder_without_tokenizer(tmp_path, ckpt):
    shutil.copy(ckpt / "preprocessor_config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files \(tokenizer.json"):
        Processor.from_pretrained(tmp_path)


# ---------------------------------------------------------------- vision inputs to the model


@torch.no_grad()
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda x: {**x, "pixel_values": torch.zeros(24, 100)}, r"pixel_values must be \(num_patches, 1176\), got"),
        (lambda x: {**x, "pixel_values": x["pixel_values"][None]}, r"pixel_values must be \(num_patches, 1176\)"),
        (
            lambda x: {**x, "pixel_values": (x["pixel_values"] * 50 + 128).to(torch.uint8)},
            r"pixel_values must be floating point \(normalised patches from the processor\), got torch.uint8",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([[1, 4, 4]])},
            r"image_grid_thw \[\[1, 4, 4\]\] describes 16 patches \(sum of t \* h \* w\), pixel_values has 24 rows",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([[1, 3, 8]])},
            "image_grid_thw h and w must be multiples of spatial_merge_size 2",
        ),
        (
            lambda x: {**x, "image_grid_thw": torch.tensor([1, 4, 6])},
            r"image_grid_thw must be \(num_items, 3\) rows of \(t, h, w\), got \(3,\)",
        ),
        (lambda x: {**x, "image_grid_thw": x["image_grid_thw"].float()}, "image_grid_thw must hold integers"),
        (lambda x: {**x, "image_grid_thw": torch.tensor([[0, 4, 6]])}, "image_grid_thw entries must be >= 1 patch"),
        (lambda x: {**x, "image_grid_thw": None}, "pixel_values was given without image_grid_thw"),
    ],
    ids=["width", "batch-axis", "uint8", "product", "odd-h", "1-d-grid", "float-grid", "zero-grid", "no-grid"],
)
def test_bad_image_inputs_to_the_model(ours, inputs, edit, message):
    with pytest.raises(ValueError, match=message):
        ours(**edit(inputs))


@torch.no_grad()
def test_bad_video_inputs_are_named_as_videos(ours):
    with pytest.raises(ValueError, match=r"pixel_values_videos must be \(num_patches, 1176\), got \(8, 100\)"):
        ours.get_video_features(torch.zeros(8, 100), torch.tensor([[2, 2, 2]]))
    with pytest.raises(ValueError, match="pixel_values_videos must be floating point"):
        ours.get_video_features(torch.zeros(8, 1176, dtype=torch.int64), torch.tensor([[2, 2, 2]]))
    with pytest.raises(ValueError, match=r"video_grid_thw \[\[1, 2, 2\]\] describes 4 patches .* has 8 rows"):
        ours.get_video_features(torch.zeros(8, 1176), torch.tensor([[1, 2, 2]]))
    ids = torch.tensor([[VS, VID, VID, VE]])
    with pytest.raises(ValueError, match="pixel_values_videos was given without video_grid_thw"):
        ours(ids, pixel_values_videos=torch.zeros(8, 1176))


# ---------------------------------------------------------------- token ids, fusion, positions


@torch.no_grad()
def test_pad_tokens_must_match_the_features(ours, inputs):
    ids = inputs["input_ids"].clone()
    ids[0, int((ids[0] == IMG).nonzero()[0])] = 100  # one <|image_pad|> fewer than the image's 6 tokens
    vision = {k: inputs[k] for k in ("pixel_values", "image_grid_thw")}
    with pytest.raises(ValueError, match=r"image: input_ids hold 5 <\|image_pad\|> tokens .* features have 6 rows"):
        ours.embed(ids, **vision)
    with pytest.raises(ValueError, match=r"input_ids hold 6 <\|image_pad\|> tokens but no image pixels were given"):
        ours(inputs["input_ids"])
    with pytest.raises(ValueError, match="mm_token_type_ids disagree with the pad tokens in input_ids"):
        ours(**{**inputs, "mm_token_type_ids": torch.zeros_like(inputs["input_ids"])})


@pytest.mark.parametrize("modality", ["image", "video"])
def test_fuse_names_counts_widths_and_modality(modality):
    ids = torch.tensor([[5, 9, 9, 9, 6]])  # three pad tokens
    with pytest.raises(ValueError, match=rf"{modality}: input_ids hold 3 <\|{modality}_pad\|> .* have 4 rows"):
        fuse(torch.zeros(1, 5, 8), ids, torch.zeros(4, 8), token_id=9, modality=modality)
    with pytest.raises(ValueError, match=rf"{modality} features must be \(rows, 8\) to fill the text embeddings"):
        fuse(torch.zeros(1, 5, 8), ids, torch.zeros(3, 7), token_id=9, modality=modality)


@torch.no_grad()
def test_bad_token_ids(ours):
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\) integer token ids, got torch.float32"):
        ours(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\) .* of shape \(3,\)"):
        ours(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"input_ids hold token id 200000, outside the vocabulary \[0, 151936\)"):
        ours(torch.tensor([[1, 2, 200000]]))
    with pytest.raises(ValueError, match=r"input_ids hold token id -1, outside the vocabulary"):
        ours(torch.tensor([[1, -1]]))


@torch.no_grad()
def test_prompts_longer_than_the_positions_are_refused(ours):
    text = dataclasses.replace(ours.config.text_config, max_position_embeddings=8)
    short = QwenLiteVL(dataclasses.replace(ours.config, text_config=text))  # the same weights, 8 positions
    short.load_checkpoint(ours.state_dict())
    assert short(torch.arange(1, 9)[None]).logits.shape[1] == 8  # 8 tokens: positions 0..7 fit
    with pytest.raises(ValueError, match="position id 8 is beyond max_position_embeddings = 8: the prompt"):
        short(torch.arange(1, 10)[None])
    with pytest.raises(ValueError, match="position id 8 is beyond max_position_embeddings = 8"):  # while decoding
        cache = KVCache()
        out = short(torch.arange(1, 9)[None], cache=cache)
        short(torch.tensor([[9]]), torch.ones(1, 9), cache=cache, rope_deltas=out.rope_deltas)


@torch.no_grad()
def test_decoding_with_a_cache_takes_tokens_and_rope_deltas(ours, inputs):
    cache = KVCache()
    ours(**inputs, cache=cache)
    with pytest.raises(ValueError, match="decoding with a cache needs the rope_deltas returned by the prefill"):
        ours(inputs["input_ids"][:, :1], cache=cache)
    with pytest.raises(ValueError, match="pixel_values / pixel_values_videos go with the prefill; decoding with a"):
        ours(
            inputs["input_ids"][:, :1], cache=cache, pixel_values=inputs["pixel_values"], rope_deltas=torch.zeros(1, 1)
        )


@torch.no_grad()
def test_decoder_shapes_are_named(ours):
    x = torch.zeros(1, 4, ours.config.text_config.hidden_size)
    with pytest.raises(ValueError, match=r"position_ids must be \(3 axes t/h/w, batch, new tokens\) = \(3, 1, 4\)"):
        ours.model(x, torch.arange(4)[None])  # 1-D text positions instead of (3, B, L)
    with pytest.raises(ValueError, match=r"attention_mask must be \(batch, cached \+ new\) = \(2, 5\), got \(2, 4\)"):
        causal_mask(torch.zeros(2, 3, 4), torch.ones(2, 4), past=2)


@pytest.mark.parametrize(
    ("ids", "grids", "message"),
    [
        ([VS, IMG, IMG, IMG, VE], {"image_grid_thw": [[1, 4, 4]]}, r"has 3 <\|image_pad\|> tokens, .* needs 4"),
        ([VS, IMG, IMG, IMG, IMG, VE], {}, r"more image spans than the 0 rows of image_grid_thw"),
        ([VS, IMG, IMG, IMG, IMG, VE], {"image_grid_thw": [[1, 4, 4], [1, 2, 2]]}, r"has 2 rows but .* 1 image"),
        (
            [VS, VID, VID, VE],
            {"video_grid_thw": [[2, 2, 2]], "second_per_grid_ts": [1.0, 2.0]},
            r"second_per_grid_ts has 2 entries but video_grid_thw has 1 rows",
        ),
        ([1, 2], {"second_per_grid_ts": [0.5]}, r"second_per_grid_ts has 1 entries but video_grid_thw has 0 rows"),
        ([VS, IMG, VE], {"image_grid_thw": [1, 2, 2]}, r"image_grid_thw must be \(num_images, 3\) rows of \(t, h, w\)"),
    ],
    ids=["short-span", "no-grid", "extra-grid", "seconds-length", "seconds-without-video", "1-d-grid"],
)
def test_bad_layouts_for_get_rope_index(ids, grids, message, config):
    kwargs = {k: torch.tensor(v) for k, v in grids.items()}
    with pytest.raises(ValueError, match=message):
        get_rope_index(torch.tensor([ids]), config=config, **kwargs)


def test_get_rope_index_arguments(config):
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'config'"):
        get_rope_index(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r"get_rope_index needs config= \(token ids, merge size"):
        get_rope_index(torch.tensor([[1, 2]]), config=None)
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\), got shape \(2,\)"):
        get_rope_index(torch.tensor([1, 2]), config=config)
    with pytest.raises(ValueError, match=r"attention_mask \(1, 3\) must have the shape of input_ids \(1, 2\)"):
        get_rope_index(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3), config=config)


# ---------------------------------------------------------------- generate


@torch.no_grad()
def test_generate_refuses_what_it_does_not_do(ours, inputs):
    with pytest.raises(TypeError, match="generate.* got an unexpected keyword argument 'do_sample'"):
        ours.generate(**inputs, do_sample=True)
    with pytest.raises(TypeError, match="generate.* got an unexpected keyword argument 'num_beams'"):
        ours.generate(**inputs, num_beams=2)
    for bad in (0, -3, 1.5):
        with pytest.raises(ValueError, match=rf"max_new_tokens must be an integer >= 1 .*got {bad}"):
            ours.generate(**inputs, max_new_tokens=bad)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(
            ValueError, match=rf"repetition_penalty must be a finite number > 0 \(1.0 = off\), got {bad}"
        ):
            ours.generate(**inputs, repetition_penalty=bad)


# ---------------------------------------------------------------- run settings and the tolerance policy


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"QWENLITE_DTYPE": "float16"},
            r"QWENLITE_DTYPE='float16' is not supported: use one of \['bfloat16', 'float32'",
        ),
        ({"QWENLITE_DTYPE": "fp32"}, "QWENLITE_DTYPE='fp32' is not supported"),
        ({"QWENLITE_DEVICE": "gpu0"}, r"QWENLITE_DEVICE='gpu0' is not a device: use cpu or cuda \(cuda:N\)"),
        ({"QWENLITE_DEVICE": "meta"}, r"QWENLITE_DEVICE='meta': qwenlite runs on cpu or cuda"),
        (
            {"QWENLITE_BF16_PRODUCTS": "fp32"},
            r"QWENLITE_BF16_PRODUCTS='fp32' is not supported: use auto, float32 or bfloat16",
        ),
    ],
)
def test_bad_run_settings(environ, message):
    with pytest.raises(ValueError, match=message):
        run_settings(environ)


def test_cuda_asked_for_where_there_is_none(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="QWENLITE_DEVICE='cuda', but torch sees no CUDA device here"):
        run_settings({"QWENLITE_DEVICE": "cuda"})


def test_tolerance_for_a_dtype_without_a_policy():
    with pytest.raises(ValueError, match=r"tolerance: no policy for dtype torch.float16; the policy covers"):
        tolerance(torch.ones(3), torch.float16)
