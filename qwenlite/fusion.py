"""Token fusion: vision features replace the embeddings of the <|image_pad|> / <|video_pad|> tokens.

Mirrors the `masked_scatter` path of transformers' `Qwen2_5_VLModel.forward` and its
`get_placeholder_mask`: rows of the feature matrix fill the pad positions in reading order
(row by row through the batch, left to right). `mm_token_type_ids` (which token is which modality) lives in
qwenlite.tokens and is re-exported here, beside the fusion it describes.
Shapes: B batch, L tokens, D text hidden, F feature rows (= number of pad tokens of one modality).
"""

from __future__ import annotations

import torch

from .tokens import mm_token_type_ids as mm_token_type_ids  # re-exported: the modality of each token


def fuse(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    features: torch.Tensor | None,
    token_id: int,
    modality: str,
) -> torch.Tensor:
    """inputs_embeds (B, L, D) with rows where input_ids == token_id replaced by features (F, D), in order.

    ids [[a, P, P], [P, b, c]] and features [f0, f1, f2] -> [[a, f0, f1], [f2, b, c]] (P the pad token).
    features None means no pixels of this modality: fine without pads, an error with them (never a
    silent fallback to the pad embedding).
    """
    mask = input_ids == token_id  # (B, L)
    if features is None:
        if n_tokens := int(mask.sum()):
            raise ValueError(f"input_ids hold {n_tokens} <|{modality}_pad|> tokens but no {modality} pixels were given")
        return inputs_embeds
    if input_ids.shape != inputs_embeds.shape[:2]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and inputs_embeds {tuple(inputs_embeds.shape)} disagree on (B, L)"
        )
    if features.ndim != 2 or features.shape[1] != inputs_embeds.shape[-1]:
        raise ValueError(
            f"{modality} features must be (rows, {inputs_embeds.shape[-1]}) to fill the text embeddings, "
            f"got {tuple(features.shape)}"
        )
    n_tokens, n_rows = int(mask.sum()), features.shape[0]
    if n_tokens != n_rows:
        raise ValueError(
            f"{modality}: input_ids hold {n_tokens} <|{modality}_pad|> tokens (id {token_id}) "
            f"but the {modality} features have {n_rows} rows; each pad token takes exactly one feature row"
        )
    mask = mask[..., None].expand_as(inputs_embeds)  # (B, L, D)
    return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))
