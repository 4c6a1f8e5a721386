"""Full-size parity: the real 3B/7B architectures with seeded random weights, qwenlite vs transformers.

The test suite checks every stage on the tiny twin. This script checks the real sizes (head dim 128,
mrope_section 16/24/24, 32 vision blocks with full attention at 7/15/23/31, 36 or 28 decoder layers)
without a download: transformers builds the model from `data/configs/`, the weights are filled from a
seed, and qwenlite loads the very same tensors. It needs about 16 GB (3B) or 34 GB (7B) of memory.

    python benchmarks/full_size_parity.py --config qwen2_5_vl_3b_instruct [--threads 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from qwenlite import QwenLiteConfig, QwenLiteVL
from qwenlite.preprocessing import preprocess_image, preprocess_video
from qwenlite.video_io import load_video
from qwenlite.weights import to_hub_key
from qwenlite_course.reference import capture

ROOT = Path(__file__).resolve().parents[1]


def seeded_reference(config_file: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """transformers' model at full size with random weights scaled to keep activations O(1).

    Like GPT-2's init, the projections that write into the residual stream are scaled by 1/sqrt(2 * depth),
    so the random network is not chaotic (a trained one is not: tiny rounding differences stay tiny).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig.from_pretrained(config_file))
    model = model.to_empty(device="cpu").to(dtype).eval()
    depth = {"visual": model.config.vision_config.depth, "model": model.config.text_config.num_hidden_layers}
    model.tie_weights()  # to_empty gives lm_head its own storage; re-share it with the embeddings when tied
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "norm" in name or name.endswith("ln_q.weight"):
                p.copy_(1 + 0.05 * torch.randn(p.shape, generator=gen))
            elif p.ndim == 1:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                scale = p[0].numel() ** -0.5
                if name.endswith(("o_proj.weight", "down_proj.weight", "attn.proj.weight")):
                    scale /= (2 * depth["visual" if "visual" in name else "model"]) ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
        for module in model.modules():  # to_empty left the rotary buffers uninitialised
            if hasattr(module, "compute_default_rope_parameters"):
                module.inv_freq = module.compute_default_rope_parameters(module.config)[0]
            elif hasattr(module, "compute_axial_rope_parameters"):
                module.inv_freq = module.compute_axial_rope_parameters(module.config)[0]
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    return model


def prompt(config: QwenLiteConfig, image_tokens: int, video_tokens: int) -> torch.Tensor:
    """A chat-shaped prompt built from token ids (no tokenizer needed): text, image, text, video, text."""
    ids = [151644, 8948, 198, 151645, 198, 151644, 872, 198]  # <|im_start|>system ... <|im_start|>user
    ids += [config.vision_start_token_id] + [config.image_token_id] * image_tokens + [config.vision_end_token_id]
    ids += [3838, 374, 419, 30]
    if video_tokens:
        ids += [config.vision_start_token_id] + [config.video_token_id] * video_tokens + [config.vision_end_token_id]
        ids += [3838, 8573, 1588, 30]
    ids += [151645, 198, 151644, 77091, 198]  # <|im_end|> <|im_start|>assistant
    return torch.tensor([ids])


def rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = float((a.double() - b.double()).abs().max())
    return diff, diff / float(b.double().abs().max())


@torch.no_grad()
def run(name: str, new_tokens: int, args_float64: bool = False) -> bool:
    file = Path(name) if name.endswith(".json") else ROOT / "data" / "configs" / f"{name}.config.json"
    t0 = time.perf_counter()
    ref = seeded_reference(file)
    config = QwenLiteConfig.from_pretrained(file)
    with torch.device("meta"):
        ours = QwenLiteVL(config)
    state = {to_hub_key(k): v for k, v in ref.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    ours.load_checkpoint(state, source=f"seeded {name}")  # same tensors, no copy
    ours.eval()
    print(f"[{name}] built both models in {time.perf_counter() - t0:.0f} s")

    photo = Image.open(ROOT / "data" / "grace_hopper.jpg").convert("RGB").resize((448, 448))
    image = preprocess_image(photo)
    frames = [
        Image.open(ROOT / "data" / "grace_hopper.jpg").convert("RGB").crop((8 * i, 40, 8 * i + 336, 292))
        for i in range(8)
    ]
    video = preprocess_video(load_video(frames, sample_fps=2.0))
    inputs = {
        "pixel_values": image.pixel_values,
        "image_grid_thw": image.grid_thw[None],
        "pixel_values_videos": video.pixel_values,
        "video_grid_thw": video.grid_thw[None],
        "second_per_grid_ts": torch.tensor([video.second_per_grid_t]),
    }
    ids = prompt(config, image.num_tokens(), video.num_tokens())
    types = (ids == config.image_token_id).long() + 2 * (ids == config.video_token_id).long()
    rows = []

    t = time.perf_counter()
    mine = torch.cat(ours.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]))
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = torch.cat(ref.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output)
    t_ref = time.perf_counter() - t
    rows.append(("image features 448x448", *rel(mine, theirs), 1e-4))
    print(f"[{name}] vision tower, 448x448: qwenlite {t_ours:.2f} s, transformers {t_ref:.2f} s")

    mine = torch.cat(ours.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]))
    theirs = torch.cat(
        ref.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
    )
    rows.append(("video features 8x336x252", *rel(mine, theirs), 1e-4))

    full = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
    end = int((ids[0] == config.video_token_id).nonzero().max()) + 1  # positions agree up to the video's end
    rows.append(("logits up to the video's end", *rel(ours(**full).logits[:, :end], ref(**full).logits[:, :end]), 1e-4))

    if args_float64:
        truth = seeded_reference(file, dtype=torch.float64)
        layers = {f"layer {i}": i for i in sorted({0, len(ours.model.layers) // 2, len(ours.model.layers) - 1})}
        with (
            capture({k: ours.model.layers[i] for k, i in layers.items()}) as a,
            capture({k: ref.model.language_model.layers[i] for k, i in layers.items()}) as b,
            capture({k: truth.model.language_model.layers[i] for k, i in layers.items()}) as c,
        ):
            lo, lr = ours(**full).logits[:, :end], ref(**full).logits[:, :end]
            l64 = truth(**{k: v.double() if v.is_floating_point() else v for k, v in full.items()}).logits[:, :end]
        for k in layers:
            print(
                f"  {k}: qwenlite-fp32 vs transformers-fp64 {rel(a[k], c[k])[1]:.2e}, "
                f"transformers-fp32 vs transformers-fp64 {rel(b[k], c[k])[1]:.2e}"
            )
        rows.append(("logits vs float64 truth: qwenlite", *rel(lo, l64), 1e-4))
        rows.append(("logits vs float64 truth: transformers", *rel(lr, l64), 1e-4))
        del truth

    image_only = prompt(config, image.num_tokens(), 0)
    one = {
        "input_ids": image_only,
        "attention_mask": torch.ones_like(image_only),
        "mm_token_type_ids": (image_only == config.image_token_id).long(),
        "pixel_values": inputs["pixel_values"],
        "image_grid_thw": inputs["image_grid_thw"],
    }
    rows.append(("logits, image prompt", *rel(ours(**one).logits, ref(**one).logits), 1e-4))
    g_ours = ours.generate(**one, max_new_tokens=new_tokens, eos_token_id=[-1])
    g_ref = ref.generate(**one, max_new_tokens=new_tokens, do_sample=False, repetition_penalty=1.0, eos_token_id=None)

    print(f"{'tensor':<30} {'max |diff|':>11} {'relative':>10}  ok")
    ok = True
    for label, diff, relative, tol in rows:
        ok &= relative <= tol
        print(f"{label:<30} {diff:>11.2e} {relative:>10.2e}  {'yes' if relative <= tol else 'NO'}")
    same = torch.equal(g_ours, g_ref[:, : g_ours.shape[1]])
    ok &= same
    print(f"greedy ids ({new_tokens} new) identical: {same}\n  ours   {g_ours[0, -new_tokens:].tolist()}")
    print(f"  theirs {g_ref[0, -new_tokens:].tolist()}")
    print(f"[{name}] total {time.perf_counter() - t0:.0f} s")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["qwen2_5_vl_3b_instruct"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--float64", action="store_true", help="also compare both against transformers in float64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: run(name, args.new_tokens, args.float64) for name in args.config}
    print(results)
    raise SystemExit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
