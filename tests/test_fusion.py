"""Token fusion: qwenlite's fused inputs_embeds equal transformers' on the same checkpoint and inputs.

transformers' fused embeddings are captured with a forward pre-hook on `ref.model.language_model`
(the kwarg inputs_embeds); the hook then stops the forward, since the decoder is not needed.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from helpers import chat_inputs
from PIL import Image

from qwenlite.fusion import fuse, mm_token_type_ids

SIZES = [(112, 84), (56, 84), (84, 112), (140, 56)]  # (width, height) of the test images


IMG, VID, VS, VE = 151655, 151656, 151652, 151653


class _Stop(Exception):
    pass


def transformers_fused_embeds(ref, inputs: dict) -> torch.Tensor:
    """The inputs_embeds transformers hands to its language model (after both masked_scatter calls)."""
    seen = {}

    def grab(_module, _args, kwargs):
        seen["x"] = kwargs["inputs_embeds"].detach()
        raise _Stop

    handle = ref.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad(), pytest.raises(_Stop):
            ref(**inputs)
    finally:
        handle.remove()
    return seen["x"]


@pytest.fixture(scope="module")
def images(photo_path) -> list[Image.Image]:
    photo = Image.open(photo_path).convert("RGB")
    return [photo.crop((40 * i, 30 * i, 40 * i + 400, 30 * i + 300)).resize(s) for i, s in enumerate(SIZES)]


@pytest.fixture(scope="module")
def clips(video_path) -> list[np.ndarray]:
    """Two short clips of the sample video (real pixels): 8 frames of 84x56 and 4 frames of 56x56."""
    with av.open(str(video_path)) as container:
        frames = [f.to_image() for f in container.decode(video=0)][::4]
    return [np.stack([np.asarray(f.resize(size)) for f in frames[:n]]) for size, n in [((84, 56), 8), ((56, 56), 4)]]


CASES = {
    "one image": ([["image", "text"]], 1, 0),
    "one video": ([["video", "text"]], 0, 1),
    "image and video": ([["image", "text", "video", "text"]], 1, 1),
    "two of each, interleaved": ([["video", "image", "text", "image", "video", "text"]], 2, 2),
    "batch of two, left padded": ([["image", "image", "video", "text"], ["text", "video", "text", "image"]], 3, 2),
}


@pytest.mark.parametrize("case", CASES)
def test_fused_embeddings_equal_transformers(case, ours, ref, hf_processor, images, clips):
    prompts, n_images, n_videos = CASES[case]
    inputs = chat_inputs(hf_processor, prompts, images[:n_images], clips[:n_videos])
    theirs = transformers_fused_embeds(ref, inputs)
    with torch.no_grad():
        mine = ours.embed(
            inputs["input_ids"],
            inputs.get("pixel_values"),
            inputs.get("image_grid_thw"),
            inputs.get("pixel_values_videos"),
            inputs.get("video_grid_thw"),
        )
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() <= 1e-5
    # the fusion really replaced every pad row (a vision feature is not the pad token's embedding)
    for token, grids in [
        (ours.config.image_token_id, inputs.get("image_grid_thw")),
        (ours.config.video_token_id, inputs.get("video_grid_thw")),
    ]:
        pads = inputs["input_ids"] == token
        assert int(pads.sum()) == (0 if grids is None else int(grids.prod(-1).sum()) // 4)
        plain = ours.model.embed_tokens.weight[token]
        assert not torch.isclose(mine[pads], plain).all(-1).any()
    # mm_token_type_ids derived from the ids equal the processor's
    assert torch.equal(mm_token_type_ids(inputs["input_ids"], ours.config), inputs["mm_token_type_ids"].long())


def test_fuse_fills_pads_in_reading_order():
    """Property of masked_scatter: feature rows go to pad positions row by row, left to right; nothing else moves."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ids = torch.randint(0, 3, (3, 9), generator=g)  # token 2 plays the pad token
        x = torch.randn(3, 9, 4, generator=g)
        feats = torch.randn(int((ids == 2).sum()), 4, generator=g)
        fused = fuse(x, ids, feats, token_id=2, modality="image")
        expected, k = x.clone(), 0
        for b in range(3):
            for i in range(9):
                if ids[b, i] == 2:
                    expected[b, i], k = feats[k], k + 1
        assert torch.equal(fused, expected)


def test_fuse_without_features_is_identity_only_without_pads():
    x = torch.randn(1, 3, 4)
    assert fuse(x, torch.tensor([[1, 4, 3]]), None, token_id=2, modality="image") is x
    with pytest.raises(ValueError, match=r"hold 1 <\|image_pad\|> tokens but no image pixels"):  # the other half
        fuse(x, torch.tensor([[1, 2, 3]]), None, token_id=2, modality="image")


def test_model_embed_reports_a_missing_pad_token(ours, ref, hf_processor, images, clips):
    """Drop one <|image_pad|> (or <|video_pad|>) from real processor output: both libraries refuse, ours says which."""
    inputs = chat_inputs(hf_processor, [["image", "video", "text"]], images[:1], clips[:1])
    for token, modality, n in [
        (ours.config.image_token_id, "image", int(inputs["image_grid_thw"].prod(-1).sum()) // 4),
        (ours.config.video_token_id, "video", int(inputs["video_grid_thw"].prod(-1).sum()) // 4),
    ]:
        ids = inputs["input_ids"]
        first = int((ids[0] == token).nonzero()[0])
        broken = torch.cat([ids[:, :first], ids[:, first + 1 :]], dim=1)
        with pytest.raises(ValueError, match=rf"{modality}: input_ids hold {n - 1} .* features have {n} rows"):
            ours.embed(
                broken,
                inputs["pixel_values"],
                inputs["image_grid_thw"],
                inputs["pixel_values_videos"],
                inputs["video_grid_thw"],
            )
        vision = {k: inputs[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")}
        with pytest.raises(ValueError, match=rf"(?i){modality} features and {modality} tokens do not match"):
            ref(input_ids=broken, **vision)


# ---------------------------------------------------------------- bad input: refused by name


@torch.no_grad()
def test_pad_tokens_must_match_the_features(ours, array_inputs):
    ids = array_inputs["input_ids"].clone()
    ids[0, int((ids[0] == IMG).nonzero()[0])] = 100  # one <|image_pad|> fewer than the image's 6 tokens
    vision = {k: array_inputs[k] for k in ("pixel_values", "image_grid_thw")}
    with pytest.raises(ValueError, match=r"image: input_ids hold 5 <\|image_pad\|> tokens .* features have 6 rows"):
        ours.embed(ids, **vision)
    with pytest.raises(ValueError, match=r"input_ids hold 6 <\|image_pad\|> tokens but no image pixels were given"):
        ours(array_inputs["input_ids"])
    with pytest.raises(ValueError, match="mm_token_type_ids disagree with the pad tokens in input_ids"):
        ours(**{**array_inputs, "mm_token_type_ids": torch.zeros_like(array_inputs["input_ids"])})


@pytest.mark.parametrize("modality", ["image", "video"])
def test_fuse_names_counts_widths_and_modality(modality):
    ids = torch.tensor([[5, 9, 9, 9, 6]])  # three pad tokens
    with pytest.raises(ValueError, match=rf"{modality}: input_ids hold 3 <\|{modality}_pad\|> .* have 4 rows"):
        fuse(torch.zeros(1, 5, 8), ids, torch.zeros(4, 8), token_id=9, modality=modality)
    with pytest.raises(ValueError, match=rf"{modality} features must be \(rows, 8\) to fill the text embeddings"):
        fuse(torch.zeros(1, 5, 8), ids, torch.zeros(3, 7), token_id=9, modality=modality)
