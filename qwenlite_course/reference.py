"""The reference side of every check: transformers' Qwen2.5-VL on the same weights, and the tolerance policy.

- `run_settings()` reads QWENLITE_DTYPE and QWENLITE_DEVICE, which every notebook uses for both models (and
  QWENLITE_BF16_PRODUCTS: whether bfloat16 products run through float32 on a CPU without bfloat16 units).
- `load_models(path, settings)` reads the checkpoint's files once and hands the same tensors to qwenlite
  (through qwenlite's key map) and to transformers (through transformers' own loader), so a notebook holds
  one copy of the weights, and each library still decides by itself which file tensor goes where.
- `capture(...)` records module outputs with forward hooks.
- `check_table(...)` prints tensor / shape / max |diff| / tolerance rows under the policy in `TOLERANCES`
  and raises when a row is outside it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qwenlite.weights import LOAD_DTYPES, load_device


@dataclass(frozen=True)
class RunSettings:
    """The dtype and device both models run in (qwenlite and the transformers reference alike)."""

    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    float32_products: bool = False  # bfloat16 matrix products done by float32's kernel (qwenlite_course.cpu_bfloat16)

    def __str__(self) -> str:
        return f"dtype {str(self.dtype).removeprefix('torch.')}, device {self.device}"

    def put(self, batch: Any) -> Any:
        """A tensor, or a dict of them, moved to the device; dtypes stay (the models cast pixels themselves)."""
        if isinstance(batch, Mapping):
            return {k: self.put(v) for k, v in batch.items()}
        return batch.to(self.device) if isinstance(batch, torch.Tensor) else batch

    def cast(self, tensor: torch.Tensor) -> torch.Tensor:
        """A float tensor on the device in the run's dtype (for cells that multiply it with the weights)."""
        return tensor.to(self.device, self.dtype if tensor.is_floating_point() else tensor.dtype)


def run_settings(environ: Mapping[str, str] = os.environ) -> RunSettings:
    """QWENLITE_DTYPE (float32, the default, or bfloat16) and QWENLITE_DEVICE (cpu, the default, or cuda[:N]).

    float16 is refused on purpose: the real 3B's vision tower overflows it (vLLM issues #13968, #13817).
    QWENLITE_BF16_PRODUCTS (auto, the default, float32 or bfloat16): in bfloat16 on the CPU, whether matrix
    products go through float32's kernel (`cpu_bfloat16`). auto: when the CPU has no bfloat16 unit.
    """
    name = environ.get("QWENLITE_DTYPE", "float32").strip() or "float32"
    if name not in LOAD_DTYPES:
        raise ValueError(f"QWENLITE_DTYPE={name!r} is not supported: use one of {sorted(LOAD_DTYPES)}")
    device = load_device(environ.get("QWENLITE_DEVICE", "cpu").strip() or "cpu", what="QWENLITE_DEVICE")
    products = environ.get("QWENLITE_BF16_PRODUCTS", "auto").strip() or "auto"
    if products not in ("auto", "float32", "bfloat16"):
        raise ValueError(f"QWENLITE_BF16_PRODUCTS={products!r} is not supported: use auto, float32 or bfloat16")
    dtype = LOAD_DTYPES[name]
    float32_products = dtype == torch.bfloat16 and device.type == "cpu" and products != "bfloat16"
    if products == "auto":
        from .cpu_bfloat16 import has_bfloat16_unit

        float32_products = float32_products and not has_bfloat16_unit()
    return RunSettings(dtype, device, float32_products)


def load_models(
    path: str | Path, settings: RunSettings = RunSettings(), reference: bool = True
) -> tuple[nn.Module, nn.Module | None]:
    """qwenlite's model and (if reference) transformers' on one read of the checkpoint's files.

    The files are read once, at the settings' dtype and device (`weights.read_tensors`, file keys).
    qwenlite maps those keys with its own `to_hub_key`; transformers gets them as `state_dict=` and maps
    them with its own conversion rules. Both models then point at the same storage: one copy in memory,
    yet a bug in either key map still shows up as a difference.
    With settings.float32_products it also enters `cpu_bfloat16.Float32Products` for the rest of the process.
    """
    from qwenlite import weights
    from qwenlite.config import QwenLiteConfig
    from qwenlite.model import QwenLiteVL

    QwenLiteConfig.from_pretrained(path)  # a folder that is no Qwen2.5-VL checkpoint fails here, before any read
    if settings.float32_products:
        from . import cpu_bfloat16

        cpu_bfloat16.enable()  # for the rest of this process: both models' products, and every cell's
    tensors = weights.read_tensors(path, settings.dtype, settings.device)
    ours = QwenLiteVL.from_pretrained(path, settings.dtype, settings.device, tensors=tensors)
    ref = reference_model(path, settings.dtype, settings.device, tensors=tensors) if reference else None
    return ours, ref


def reference_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    tensors: dict[str, torch.Tensor] | None = None,
    attn_implementation: str | None = None,
) -> nn.Module:
    """transformers' model on the same checkpoint folder, loaded offline, in eval mode.

    tensors: the checkpoint's tensors under their file keys (`weights.read_tensors`), handed to
    transformers' own loader as `state_dict=` instead of letting it read the files a second time.
    attn_implementation: transformers' choice of attention kernel (None: its default, SDPA); "eager" is the
    one that can return attention probabilities (`output_attentions=True`).
    """
    from transformers import AutoConfig, GenerationConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging

    logging.disable_progress_bar()  # the "Loading weights" bar would clutter every notebook
    device = torch.device(device)
    options = {"device_map": {"": device}} if device.type != "cpu" else {}
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    if tensors is None:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True, **options)
        return model.eval()
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        None, config=config, state_dict=tensors, dtype=dtype, **options
    )
    if (Path(path) / "generation_config.json").is_file():  # what from_pretrained(path) would have read
        model.generation_config = GenerationConfig.from_pretrained(path, local_files_only=True)
    return model.eval()


def reference_processor(path: str | Path):
    """transformers' `Qwen2_5_VLProcessor` for the checkpoint folder (offline)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, local_files_only=True)


@contextlib.contextmanager
def capture(modules: dict[str, nn.Module], every: bool = False) -> Iterator[dict[str, Any]]:
    """Record each module's output under its name while the block runs: the last call's, or with every=True
    a list of all of them in call order (lm_head during `generate`: the logits of the prefill, then each step)."""
    seen: dict[str, Any] = {name: [] for name in modules} if every else {}

    def hook(name: str):
        def record(_module, _inputs, output):
            output = (output[0] if isinstance(output, tuple) else output).detach()
            if every:
                seen[name].append(output)
            else:
                seen[name] = output

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- the tolerance policy


@dataclass(frozen=True)
class Tolerance:
    """Floats pass when max |ours - ref| <= rtol x max(1, max |ref|); integers must be exactly equal."""

    rtol: float
    why: str


TOLERANCES = {
    # float32: both libraries do the same arithmetic in another order. On the tiny twin they differ by ~1.6e-6
    # of the largest value; on a checkpoint whose residual stream carries values in the thousands, as the real
    # model's does, by up to 4e-5. 1e-4 holds there, and each of ten deliberate bugs still breaks it: the
    # mildest (a wrong mrope_section split) moves the twin's logits by 3.4e-2 (tests/test_tolerance_policy.py).
    torch.float32: Tolerance(1e-4, "float32: the same sums in another order"),
    # bfloat16 keeps 8 bits of mantissa, and the two libraries round in different places, so two bf16 runs drift
    # apart with depth. Measured, as max |diff| / max(1, max |ref|) of the logits: tiny twin 1.6e-2; the 3B's widths
    # with massive activations, 4 vision blocks and 4 / 16 / 36 decoder layers 1.5e-2 / 1.5e-2 / 5.0e-2; the whole
    # seeded 3B 9.6e-2. 1.5e-1 holds at full size; it catches only bugs bigger than that noise. The sharp bf16
    # check needs a float32 run and is `float32_bar` below (tests/test_tolerance_policy.py).
    torch.bfloat16: Tolerance(1.5e-1, "bfloat16: two runs that each round differently"),
}


def tolerance(ref: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """The policy's absolute bound for a comparison with ref, at dtype (default: ref's own)."""
    dtype = dtype or (ref.dtype if ref.dtype in TOLERANCES else torch.float32)
    if dtype not in TOLERANCES:
        raise ValueError(f"tolerance: no policy for dtype {dtype}; the policy covers {list(TOLERANCES)}")
    policy = TOLERANCES[dtype]
    scale = float(ref.detach().abs().max()) if ref.numel() else 0.0
    return policy.rtol * max(1.0, scale)


@dataclass
class Row:
    """One line of a check table. atol None: the policy's bound for the lower precision of the two tensors."""

    name: str
    ours: torch.Tensor
    ref: torch.Tensor
    atol: float | None = None

    @property
    def exact(self) -> bool:
        return not (self.ours.is_floating_point() or self.ref.is_floating_point())

    @property
    def dtype(self) -> torch.dtype:
        low = [t.dtype for t in (self.ours, self.ref) if t.dtype in TOLERANCES and t.dtype != torch.float32]
        return low[0] if low else torch.float32

    def bound(self) -> float:
        return self.atol if self.atol is not None else tolerance(self.ref, self.dtype)

    def diff(self) -> float:
        if self.ours.shape != self.ref.shape:
            return float("inf")
        if self.exact:
            return float((self.ours.cpu() != self.ref.cpu()).sum())  # integer results: count of differing entries
        if not self.ours.numel():
            return 0.0
        wide = torch.float64 if torch.float64 in (self.ours.dtype, self.ref.dtype) else torch.float32
        return float((self.ours.detach().to("cpu", wide) - self.ref.detach().to("cpu", wide)).abs().max())

    def ok(self, diff: float | None = None) -> bool:
        diff = self.diff() if diff is None else diff
        return diff == 0 if self.exact else diff <= self.bound()


def policy_text(dtypes: Sequence[torch.dtype] = tuple(TOLERANCES)) -> str:
    """One line per dtype: what the check tables mean by 'within tolerance'."""
    lines = ["integers, token ids and grids: exactly equal"]
    for dtype in dtypes:
        t = TOLERANCES[dtype]
        lines.append(f"{str(dtype).removeprefix('torch.')}: |ours - ref| <= {t.rtol:.1e} x max(1, max|ref|) ({t.why})")
    return "\n".join(lines)


def check_table(rows: Sequence[Row], title: str = "qwenlite vs transformers") -> None:
    """Print one line per tensor, under the policy, and raise AssertionError if any is outside tolerance."""
    dtypes = sorted({r.dtype for r in rows if not r.exact}, key=str)
    print(title)
    print("policy: " + policy_text(dtypes).replace("\n", "\n        "))
    width = max([34, *(len(r.name) for r in rows)])  # the names' column
    print(f"{'tensor':<{width}} {'shape':<22} {'max |diff|':>12}  {'tolerance':>10}  ok")
    bad = []
    for r in rows:
        shape = str(tuple(r.ours.shape)) + ("" if r.ours.shape == r.ref.shape else f" vs {tuple(r.ref.shape)}")
        d = r.diff()  # once per row: rows can be whole logits
        tol = "exact" if r.exact else f"{r.bound():.1e}"
        shown = f"{int(d)} differ" if r.exact and math.isfinite(d) else f"{d:.2e}"
        ok = r.ok(d)
        print(f"{r.name:<{width}} {shape:<22} {shown:>12}  {tol:>10}  {'yes' if ok else 'NO'}")
        if not ok:
            bad.append(r.name)
    assert not bad, f"outside tolerance: {bad}"


BAR = 1.5  # in bfloat16, qwenlite may be at most this many times as far from float32 as transformers is


def float32_bar(ours_bf16: Sequence[Row], theirs_bf16: Sequence[Row], title: str = "bfloat16 vs a float32 run") -> None:
    """The bar for bfloat16: qwenlite-bf16 about as close to float32 as transformers-bf16 is.

    ours_bf16 rows compare qwenlite-bf16 with transformers-fp32, theirs_bf16 the same checks for transformers-bf16
    against float32 (qwenlite-fp32 will do: it equals transformers-fp32 to ~1e-6). A float row passes when
    max |qwenlite-bf16 - fp32| <= BAR x max |transformers-bf16 - fp32| + 2^-9 x max(1, max |ref|); integer rows
    must be exact. Prints one line per row and raises AssertionError if any is outside.
    """
    print(f"{title}: qwenlite-bf16 within {BAR} x transformers-bf16's distance from float32 (+ 2^-9 of the scale)")
    print(f"{'tensor':<40} {'transformers-bf16':>18} {'qwenlite-bf16':>14}  ok")
    theirs = {r.name: r for r in theirs_bf16}
    bad = []
    for r in ours_bf16:
        if r.exact:
            ok = r.ok()
            print(f"{r.name:<40} {'exact':>18} {('equal' if ok else 'DIFFER'):>14}  {'yes' if ok else 'NO'}")
        else:
            scale = max(1.0, float(r.ref.detach().abs().max()))
            ql, tf = r.diff() / scale, theirs[r.name].diff() / scale
            ok = ql <= BAR * tf + 2**-9
            print(f"{r.name:<40} {tf:>18.2e} {ql:>14.2e}  {'yes' if ok else 'NO'}")
        if not ok:
            bad.append(r.name)
    assert not bad, f"outside tolerance: {bad}"


def end_to_end_rows(ours: nn.Module, ref: nn.Module, inputs: Mapping[str, torch.Tensor]) -> list[Row]:
    """The whole model against transformers on one prompt: features, positions, logits, one cached decode step.

    Where the two libraries' position rules differ (text after a video), positions are compared up to the end
    of the last video and transformers is given qwenlite's position ids for the logits; elsewhere it computes
    its own. The decode step runs qwenlite with its KV cache and transformers on the whole prompt plus the
    new token, so the cache, the decode positions and rope_deltas are all checked against a full recompute.
    """
    from qwenlite.decoder import KVCache
    from qwenlite.tokens import mm_token_type_ids

    config = ours.config
    ids, mask = inputs["input_ids"], inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
    types = inputs.get("mm_token_type_ids")
    types = mm_token_type_ids(ids, config) if types is None else types.long()
    video = "pixel_values_videos" in inputs
    rows: list[Row] = []
    with torch.no_grad():
        for modality, pixels, grid in (
            ("image", "pixel_values", "image_grid_thw"),
            ("video", "pixel_values_videos", "video_grid_thw"),
        ):
            if pixels in inputs:
                mine = getattr(ours, f"get_{modality}_features")(inputs[pixels], inputs[grid])
                theirs = getattr(ref, f"get_{modality}_features")(**{pixels: inputs[pixels], grid: inputs[grid]})
                rows += [
                    Row(f"{modality} features [{i}]", a, b)
                    for i, (a, b) in enumerate(zip(mine, theirs.pooler_output, strict=True))
                ]
        cache = KVCache()
        out = ours(**inputs, cache=cache)
        ref_pos, ref_deltas = reference_rope_index(ref, dict(inputs, mm_token_type_ids=types, attention_mask=mask))
        video_cols = (ids == config.video_token_id).any(0).nonzero()
        upto = int(video_cols.max()) + 1 if len(video_cols) else ids.shape[1]
        rows.append(Row("position_ids" + (" (to the video's end)" if video else ""), out.position_ids[..., :upto],
                        ref_pos[..., :upto]))  # fmt: skip
        if not video:
            rows.append(Row("rope_deltas", out.rope_deltas, ref_deltas))
        given = {"position_ids": out.position_ids} if video else {}
        ref_logits = ref(**inputs, **given).logits
        rows.append(Row("logits", out.logits, ref_logits))
        # one decode step: the token qwenlite would pick, through the cache vs recomputed from scratch
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        step = ours(token, step_mask, cache=cache, rope_deltas=out.rope_deltas)
        longer = dict(inputs, input_ids=torch.cat([ids, token], 1), attention_mask=step_mask)
        longer["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(token)], 1)
        if video:  # the released rule, stated independently of rope_deltas: the next token at max(prefill) + 1
            longer["position_ids"] = torch.cat([out.position_ids, positions_after(out.position_ids, 1)], dim=-1)
        rows.append(Row("decode step logits (KV cache)", step.logits[:, -1], ref(**longer).logits[:, -1]))
    return rows


def reference_rope_index(ref: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' `get_rope_index` on a processor batch: position ids (3, B, L) and rope_deltas (B, 1)."""
    return ref.model.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"),
        second_per_grid_ts=batch.get("second_per_grid_ts"),
        attention_mask=batch.get("attention_mask"),
    )


def shared_steps(ours: torch.Tensor, theirs: torch.Tensor, prompt_length: int) -> int:
    """How many new tokens' logits two generations computed on the same prefix: up to the first differing token.

    The logits that chose new token k saw the prompt and tokens 0..k-1, so they are comparable up to and including
    the first token where the two sequences part (all of them when the sequences are equal).
    """
    end = min(ours.shape[1], theirs.shape[1])
    new = end - prompt_length
    differ = ours[:, prompt_length:end].cpu() != theirs[:, prompt_length:end].cpu()
    parted = differ.any(0).nonzero()
    return int(parted[0]) + 1 if len(parted) else new


def generated_row(
    name: str,
    ours: torch.Tensor,
    theirs: torch.Tensor,
    ref: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    position_ids: torch.Tensor | None = None,
    repetition_penalty: float = 1.0,
    teacher_forced: torch.Tensor | None = None,
) -> Row:
    """Generated ids (B, L + N): exactly equal, except where bfloat16 rounding can pick another token.

    In float32, or when the two sequences are equal, this is the plain exact row. In bfloat16 two correct runs
    part where the top logits lie within rounding of each other, and from there on they continue different
    sequences. Then the row teacher-forces transformers on qwenlite's sequence (one forward, with position_ids
    when given, as after a video) and requires each token qwenlite chose to be within the bfloat16 bound of
    transformers' best logit at that step: a token that no rounding explains still fails. A repetition penalty
    is applied to those logits by transformers' own `RepetitionPenaltyLogitsProcessor`, step by step.
    teacher_forced: transformers' logits (B, L + N, V) from a forward on `ours` already run (for example by
    `reference_eager`), so the row needs no forward of its own.
    """
    if teacher_forced is not None and teacher_forced.shape[:2] != ours.shape:
        raise ValueError(f"teacher_forced logits {tuple(teacher_forced.shape)} are not for ours {tuple(ours.shape)}")
    if torch.equal(ours.cpu(), theirs.cpu()) or next(ref.parameters()).dtype != torch.bfloat16:
        return Row(name, ours, theirs)
    from qwenlite.tokens import mm_token_type_ids

    ids = inputs["input_ids"]
    length = ids.shape[1]
    if not torch.equal(ours[:, :length].cpu(), ids.cpu()):
        return Row(f"{name} (prompt part)", ours[:, :length], ids)
    if teacher_forced is None:  # transformers teacher-forced on our sequence, here
        mask = inputs.get("attention_mask", torch.ones_like(ids))
        full = dict(inputs, input_ids=ours, attention_mask=torch.cat([mask, torch.ones_like(ours[:, length:])], 1))
        full["mm_token_type_ids"] = mm_token_type_ids(ours, ref.config)
        with torch.no_grad():
            given = {} if position_ids is None else {"position_ids": position_ids}
            teacher_forced = ref(**full, **given).logits
    logits = teacher_forced[:, length - 1 : -1].float()  # (B, N, V): what chose each token
    if repetition_penalty != 1.0:
        from transformers import RepetitionPenaltyLogitsProcessor

        penalise = RepetitionPenaltyLogitsProcessor(repetition_penalty)
        seen = ours.to(logits.device)
        logits = torch.stack([penalise(seen[:, : length + k], logits[:, k]) for k in range(logits.shape[1])], 1)
    chosen = logits.gather(-1, ours[:, length:, None].to(logits.device))[..., 0]  # (B, N)
    parted = shared_steps(ours, theirs, length) - 1  # the first new token where the two differ
    best = logits.amax(-1)  # (B, N); both back in bfloat16, so the row falls under the bfloat16 policy
    name = f"{name}: parted at new token {parted}; tf's logit of each of ours vs its best"
    return Row(name, chosen.to(torch.bfloat16), best.to(torch.bfloat16))


def positions_after(position_ids: torch.Tensor, new: int) -> torch.Tensor:
    """Position ids (3, B, new) of `new` text tokens after a prompt with position_ids (3, B, L): max + 1, max + 2, ...

    The released rule, stated without rope_deltas. Left padding has id 0, so the max is the real tokens'.
    """
    after = position_ids.amax(dim=(0, 2)) + 1  # (B,)
    steps = torch.arange(new, device=position_ids.device)
    return (after[:, None] + steps)[None].expand(3, -1, -1)


def greedy_with_positions(
    ref: nn.Module, inputs: Mapping[str, torch.Tensor], position_ids: torch.Tensor, max_new_tokens: int
) -> torch.Tensor:
    """transformers' model stepped greedily with its own KV cache and the position ids it is given.

    The prompt gets position_ids (3, B, L); the k-th new token gets max(prompt ids) + 1 + k on all three
    axes (the released rule, stated without rope_deltas). No end-of-sequence stop: (B, L + max_new_tokens).
    This is how qwenlite's `generate` is checked where transformers 5.x's own positions differ (after a video).
    """
    from transformers import DynamicCache

    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask", torch.ones_like(ids))
    cache = DynamicCache(config=ref.config)
    tokens = []
    with torch.no_grad():
        out = ref(**dict(inputs, attention_mask=mask), position_ids=position_ids, cache=cache, use_cache=True)
        new_ids = positions_after(position_ids, max_new_tokens)  # (3, B, new): token k at max + 1 + k
        for step in range(max_new_tokens):
            token = out.logits[:, -1].float().argmax(-1, keepdim=True)  # (B, 1)
            tokens.append(token)
            if step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = ref(
                input_ids=token,
                attention_mask=mask,
                position_ids=new_ids[..., step : step + 1],
                cache=cache,
                use_cache=True,
            )
    return torch.cat([ids, *tokens], dim=1)


def reference_eager(ref: nn.Module, inputs: Mapping[str, torch.Tensor], position_ids: torch.Tensor | None = None):
    """transformers' whole forward with its eager attention: `.logits` and `.attentions`, one (B, H, L, S) of
    attention probabilities per decoder layer. One pass serves a notebook's logits and attention rows.

    SDPA cannot return its weights, so the model is switched to "eager" for this one call and back after.
    position_ids, when given, replace transformers' own (needed after a video, where the rules differ).
    """
    before = ref.config._attn_implementation
    ref.set_attn_implementation("eager")
    try:
        given = {} if position_ids is None else {"position_ids": position_ids}
        with torch.no_grad():
            return ref(**inputs, **given, output_attentions=True)
    finally:
        ref.set_attn_implementation(before)


def qwen_vl_utils_fetch_video(path: str | Path, **options: Any) -> tuple[torch.Tensor, dict, float]:
    """qwen-vl-utils' real `fetch_video` on a file: (frames (T, C, H, W) float, metadata, sample_fps).

    Its readers need torchcodec, decord or torchvision's removed io.read_video; for the call, io.read_video is
    a PyAV stand-in that decodes every frame and reports the stream's average rate. Frame counting, indices,
    sample_fps and resizing are qwen-vl-utils' own code. The patch is undone afterwards.
    """
    import av
    import numpy as np
    import qwen_vl_utils.vision_process as vp

    def read_video(video_path, start_pts=0.0, end_pts=None, pts_unit="sec", output_format="TCHW"):
        with av.open(str(video_path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate)
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2), torch.empty(0), {"video_fps": fps}

    saved = vp.io.__dict__.get("read_video"), vp.get_video_reader_backend
    vp.io.read_video, vp.get_video_reader_backend = read_video, lambda: "torchvision"
    try:
        ele = {"type": "video", "video": str(path), **options}
        (video, meta), sample_fps = vp.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    finally:
        vp.get_video_reader_backend = saved[1]
        if saved[0] is None:
            del vp.io.read_video
        else:
            vp.io.read_video = saved[0]
    return video, meta, sample_fps


def gradient_rows(ours: nn.Module, ref: nn.Module, prefix: str = "grad ") -> list[Row]:
    """One row per parameter that has a gradient in either model: qwenlite's against transformers' for the same
    checkpoint key, both divided by the largest |entry| of transformers' gradient for that parameter.

    Gradients are small numbers (1e-3 to 1e-7 here), so the policy's max(1, ...) floor would let any of them
    pass; in units of the parameter's own largest gradient the policy's rtol is a relative bound. A parameter
    that one model leaves without a gradient (a detached branch) shows as a row of zeros against non-zeros.
    """
    from qwenlite.weights import to_hub_key

    theirs = {to_hub_key(name): p.grad for name, p in ref.named_parameters()}
    rows = []
    for name, p in ours.named_parameters():
        if p.grad is None and theirs.get(name) is None:
            continue
        if name not in theirs:
            raise KeyError(f"{name}: qwenlite has this parameter, transformers has no parameter of that name")
        mine = p.grad if p.grad is not None else torch.zeros_like(p)
        other = theirs[name] if theirs[name] is not None else torch.zeros_like(p)
        scale = float(other.detach().abs().max()) or 1.0
        rows.append(Row(prefix + name, mine.detach() / scale, other.detach() / scale))
    return rows
