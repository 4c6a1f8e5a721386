"""Prefill and decode speed of qwenlite's `generate` against transformers' `generate`, same weights, same run.

The models: the 3B's text widths (data/configs/ config, with `num_hidden_layers` set by --layers) and a
one-block vision tower (text prompts never call it), seeded random weights drawn as `make full-size` draws
them (benchmarks/full_size.py), held once in memory and shared by both models (`checkpoint` keys,
each model mapping them itself, as `reference.load_models` does). Prompts are random text tokens, batch
rows of equal length. Both decode greedily with no repetition penalty, and no end-of-sequence token can stop
either (its id is one past the vocabulary), so both produce exactly --new tokens, which must be equal.

Timing: one `generate(max_new_tokens=1 + N)` call per run, split by a forward hook on `lm_head` that stamps
the clock each time a step's logits are out: the first stamp ends the prefill, the gaps between the next ones
are the N decode steps (their median is the run's step time). The two libraries alternate run by run; the
best of --repeats is kept.

The floor of a decode step: every weight matrix is read from memory once per step (one token per row, so
the step is a matrix-vector product per row: bound by bytes, not FLOPs). Floor tokens/s = batch x measured
read bandwidth / bytes of weights read per step (decoder layers + final norm + lm_head, which in the 3B is
the tied embedding table; the embedding lookup itself reads one row per token).

    python benchmarks/bench_generate.py                       # 4 and 36 layers, float32 and bfloat16, batch 1 and 4
    python benchmarks/bench_generate.py --layers 4 --dtype float32 --batch 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from full_size import Recipe, massive_channels, seeded_tensor  # noqa: E402

from qwenlite import QwenLiteConfig, QwenLiteVL  # noqa: E402
from qwenlite_course.reference import reference_model  # noqa: E402

CONFIG = ROOT / "data" / "configs" / "qwen2_5_vl_3b_instruct.config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def write_config(folder: Path, config_file: Path, layers: int) -> Path:
    """config.json of the checkpoint at --layers decoder layers and a one-block vision tower."""
    raw = json.loads(config_file.read_text())
    text = raw.get("text_config", raw)
    text["num_hidden_layers"] = layers
    raw["num_hidden_layers"] = layers
    raw["vision_config"]["depth"] = 1
    raw["vision_config"]["fullatt_block_indexes"] = [0]
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


def seeded_weights(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under their file keys, drawn like the full-size rehearsal's, in dtype."""
    config = QwenLiteConfig.from_pretrained(folder)
    with torch.device("meta"):
        shapes = QwenLiteVL(config).expected_keys()
    recipe = Recipe(repo="bench", config_sha256="", shards=1)
    massive = {
        "text": massive_channels(config.text_config.hidden_size, recipe),
        "vision": massive_channels(config.vision_config.hidden_size, recipe),
    }
    gen = torch.Generator().manual_seed(recipe.seed)
    return {k: seeded_tensor(k, shape, gen, recipe, massive).to(dtype) for k, shape in shapes.items()}


def bytes_per_step(model: QwenLiteVL) -> int:
    """Bytes of weights a decode step reads: decoder layers, final norm, lm_head (not the embedding table)."""
    text = model.model
    weights = [*text.layers.parameters(), *text.norm.parameters(), model.lm_head.weight]
    return sum(p.numel() * p.element_size() for p in weights)


def read_bandwidth(gigabytes: float = 2.0, repeats: int = 7) -> float:
    """Bytes/s a matrix-vector product streams from memory (what a decode step does with every weight matrix):
    the best of a few `W @ v` over a float32 W much larger than the caches."""
    w = torch.ones(int(gigabytes * 1e9 / 4 / 8192), 8192)
    v = torch.ones(8192)
    w @ v
    best = min(_time(lambda: w @ v) for _ in range(repeats))
    return w.numel() * 4 / best


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_generate(model, run, new: int) -> tuple[float, list[float], torch.Tensor]:
    """One generate call: seconds to the end of the prefill, the seconds of each decode step, the ids.

    A forward hook on lm_head stamps the clock each time the model has produced a step's logits (both
    libraries run lm_head once per step), so one call splits into its prefill and its decode steps."""
    stamps: list[float] = []
    hook = model.lm_head.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        start = time.perf_counter()
        ids = run(1 + new)
    finally:
        hook.remove()
    if len(stamps) != 1 + new:
        raise RuntimeError(f"expected {1 + new} lm_head calls (a prefill and {new} steps), saw {len(stamps)}")
    return stamps[0] - start, [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)], ids


def measure(ours, ref, ids: torch.Tensor, new: int, repeats: int) -> dict:
    """Best prefill and median decode-step seconds of each library over runs that alternate; their ids."""
    mask = torch.ones_like(ids)
    never = ours.config.text_config.vocab_size  # an id no argmax can return: nothing ends early
    runs = {
        "transformers": (ref, lambda n: ref.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False, repetition_penalty=1.0,
            eos_token_id=never, pad_token_id=0,
        )),
        "qwenlite": (ours, lambda n: ours.generate(
            ids, mask, max_new_tokens=n, repetition_penalty=1.0, eos_token_id=never, pad_token_id=0
        )),
    }  # fmt: skip
    best = {name: {"prefill": float("inf"), "step": float("inf")} for name in runs}
    outputs = {}
    with torch.inference_mode():
        for name, (_, run) in runs.items():  # warm-up
            outputs[name] = run(1 + new)
        for _ in range(repeats):
            for name, (model, run) in runs.items():
                prefill, steps, _ = timed_generate(model, run, new)
                best[name]["prefill"] = min(best[name]["prefill"], prefill)
                best[name]["step"] = min(best[name]["step"], statistics.median(steps))
    return {"best": best, "outputs": outputs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="model config.json (default: the real 3B)")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 36], help="decoder layers (the 3B has 36)")
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per row")
    parser.add_argument("--new", type=int, default=8, help="decode steps timed after the first token")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per model (after a warm-up)")
    parser.add_argument("--bandwidth-gb", type=float, default=2.0, help="size of the matrix that measures bandwidth")
    args = parser.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    bandwidth = read_bandwidth(args.bandwidth_gb)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads; "
        f"measured read bandwidth {bandwidth / 1e9:.1f} GB/s"
    )
    rows = []
    for layers in args.layers:
        for name in args.dtype:
            dtype = DTYPES[name]
            with tempfile.TemporaryDirectory() as tmp:
                folder = write_config(Path(tmp), args.config, layers)
                tensors = seeded_weights(folder, dtype)
                ours = QwenLiteVL.from_pretrained(folder, dtype, tensors=tensors)
                ref = reference_model(folder, dtype, tensors=tensors)
            weights = bytes_per_step(ours)
            for batch in args.batch:
                torch.manual_seed(batch)
                ids = torch.randint(0, 150000, (batch, args.prompt))
                result = measure(ours, ref, ids, args.new, args.repeats)
                rows.append((layers, name, batch, weights, result["best"], torch.equal(*result["outputs"].values())))
                bandwidth = max(bandwidth, read_bandwidth(args.bandwidth_gb))  # the best seen: load only lowers it
                print(f"{layers} layers, {name}, batch {batch}: weights read per step {weights / 1e9:.2f} GB")
                print(table_row(*rows[-1], args.prompt, bandwidth), flush=True)
            del ours, ref, tensors
    print(
        f"\nprompt {args.prompt} tokens per row, {args.new} decode steps, best of {args.repeats}; floors from the best "
        f"read bandwidth seen, {bandwidth / 1e9:.1f} GB/s\n"
        "| layers | dtype | batch | prefill tok/s (tf / ql) | prefill ql/tf | decode tok/s (tf / ql) "
        "| decode ql/tf | floor tok/s | share of floor (tf / ql) | same ids |\n" + "|---" * 10 + "|"
    )
    print("\n".join(table_row(*row, args.prompt, bandwidth) for row in rows))


def table_row(layers, dtype, batch, weights, best, same, prompt, bandwidth) -> str:
    """One markdown row: tokens/s of both libraries, their ratios, the decode floor and each one's share of it."""
    floor = batch * bandwidth / weights  # decode tokens/s if a step only read the weights
    prefill = [batch * prompt / best[lib]["prefill"] for lib in ("transformers", "qwenlite")]
    decode = [batch / best[lib]["step"] for lib in ("transformers", "qwenlite")]
    return (
        f"| {layers} | {dtype} | {batch} | {prefill[0]:.0f} / {prefill[1]:.0f} | {prefill[1] / prefill[0]:.2f}x "
        f"| {decode[0]:.2f} / {decode[1]:.2f} | {decode[1] / decode[0]:.2f}x | {floor:.2f} "
        f"| {decode[0] / floor:.0%} / {decode[1] / floor:.0%} | {'yes' if same else 'NO'} |"
    )


if __name__ == "__main__":
    main()
