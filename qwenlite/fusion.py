"""Token fusion: vision features replace the embeddings of the <|image_pad|> / <|video_pad|> tokens.

Mirrors the `masked_scatter` path of transformers' `Qwen2_5_VLModel.forward` and its
`get_placeholder_mask`: rows of the feature matrix fill the pad positions in reading order.
Shapes: B batch, L tokens, D text hidden, F feature rows (= number of pad tokens).
"""

from __future__ import annotations

import torch


def fuse(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    features: torch.Tensor | None,
    token_id: int,
    modality: str,
) -> torch.Tensor:
    """inputs_embeds (B, L, D) with rows where input_ids == token_id replaced by features (F, D)."""
    if features is None:
        return inputs_embeds
    mask = input_ids == token_id  # (B, L)
    n_tokens, n_rows = int(mask.sum()), features.shape[0]
    if n_tokens != n_rows:
        raise ValueError(
            f"{modality}: input_ids hold {n_tokens} <|{modality}_pad|> tokens (id {token_id}) "
            f"but the {modality} features have {n_rows} rows; each pad token takes one feature row"
        )
    mask = mask[..., None].expand_as(inputs_embeds)  # (B, L, D)
    return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.dtype))
