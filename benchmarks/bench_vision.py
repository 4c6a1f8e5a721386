"""Speed of qwenlite's vision tower against transformers' on the full-size Qwen2.5-VL-3B vision config.

Both towers get the same seeded random weights (transformers' model is built from the config's
vision_config, its state_dict is copied into qwenlite's VisionTransformer under the same key names)
and the same inputs; times are on CPU, in one process, alternating the two models, in float32 and then
bfloat16 (a table each; --dtype picks one). On a CPU without a bfloat16 unit a third table, "bfloat16-via-float32",
times bfloat16 with both models' products going through float32's kernel (qwenlite_course/cpu_bfloat16.py), which is
what the notebooks do there. Each dtype's error is measured against transformers in float32.
Also prints the share of this machine's matmul peak in that dtype (measured here) that each reaches, the
page faults each run takes, and the "linear floor": the time of the tower's linear layers alone, which
bounds the speed-up any implementation of the same arithmetic can reach.

    python benchmarks/bench_vision.py                       # 448x448 and 896x896, 3 repeats, both dtypes
    python benchmarks/bench_vision.py --dtype bfloat16      # one dtype
    python benchmarks/bench_vision.py --steady-allocator    # the same with page faults taken out (glibc)
    python benchmarks/bench_vision.py --sizes 448 --profile # where the time goes, per op

The full-size run needs ~6 GB of memory and a few minutes, so the test suite only runs it on the tiny
twin's config (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qwenlite import QwenLiteConfig
from qwenlite.config import VisionConfig
from qwenlite.vision import VisionTransformer, get_window_index
from qwenlite_course.cpu_bfloat16 import Float32Products, has_bfloat16_unit

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "data" / "configs" / "qwen2_5_vl_3b_instruct.config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bfloat16-via-float32": torch.bfloat16}
DEFAULT_DTYPES = ["float32", "bfloat16"] + ([] if has_bfloat16_unit() else ["bfloat16-via-float32"])


def matmul_peak(n: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of one large square matmul in dtype, in nn.Linear's layout (x @ W^T): the ceiling the
    linear layers can reach."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b.T  # warm-up
    best = min(_time(lambda: a @ b.T) for _ in range(repeats))
    return 2 * n**3 / best


def linear_floor(tower: VisionTransformer, patches: int, repeats: int = 3, routed: bool = False) -> float:
    """Seconds for the blocks' linear layers alone (qkv, proj, gate, up, down: ~97% of the FLOPs), on the
    tower's own weights, writing into reused buffers. An implementation that calls the same matmul kernel
    cannot run faster than this, so transformers' time / this floor is the ceiling of its speed-up.
    routed: call F.linear, as nn.Linear does, so that an active Float32Products takes the products over
    (the path both towers' layers take in the bfloat16-via-float32 table); it allocates its outputs."""
    c, dtype = tower.config, tower.blocks[0].attn.qkv.weight.dtype  # the floor in the tower's own dtype
    inputs = {
        c.hidden_size: torch.randn(patches, c.hidden_size, dtype=dtype),
        c.intermediate_size: torch.randn(patches, c.intermediate_size, dtype=dtype),
    }
    outs: dict[int, torch.Tensor] = {}

    def run() -> None:
        for block in tower.blocks:
            attn, mlp = block.attn, block.mlp
            for linear in (attn.qkv, attn.proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                if routed:
                    F.linear(inputs[linear.in_features], linear.weight, linear.bias)
                    continue
                out = outs.setdefault(linear.out_features, torch.empty(patches, linear.out_features, dtype=dtype))
                torch.addmm(linear.bias, inputs[linear.in_features], linear.weight.T, out=out)

    with torch.inference_mode():
        run()  # warm-up: the output buffers are touched once here
        return min(_time(run) for _ in range(repeats))


def steady_allocator() -> None:
    """Take page faults out of the comparison (glibc only): serve every tensor from the heap and never give
    freed memory back to the OS. By default each fresh tensor over a few MB is a new mmap whose pages fault
    in on first touch; on this VM that costs up to ~1 s per forward at 896x896, and how much of it a run pays
    varies from run to run. After the warm-up, this mode leaves both towers only their arithmetic."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from <malloc.h>
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise RuntimeError("mallopt failed: --steady-allocator needs glibc")


def page_faults() -> int:
    """Minor page faults of this process so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def vision_flops(c: VisionConfig, grid_thw: torch.Tensor) -> float:
    """Multiply-add FLOPs of one tower forward: patch embed, linear layers, attention scores and mixing, merger."""
    n = int(grid_thw.prod(-1).sum())
    d, i, unit = c.hidden_size, c.intermediate_size, c.spatial_merge_size**2
    _, cu_windows = get_window_index(grid_thw, c.window_size, c.patch_size, c.spatial_merge_size)
    frames = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    window_sq = float(((cu_windows[1:] - cu_windows[:-1]).double() ** 2).sum())
    frame_sq = float((frames.double() ** 2).sum())
    linears = 2 * n * (d * 3 * d + d * d + 3 * d * i)  # qkv, proj, gate, up, down
    full = len(c.fullatt_block_indexes)
    attention = 2 * 2 * d * (full * frame_sq + (c.depth - full) * window_sq)  # q k^T and p v, all heads
    embed = 2 * n * c.in_channels * c.temporal_patch_size * c.patch_size**2 * d
    merger = 2 * (n // unit) * (unit * d * unit * d + unit * d * c.out_hidden_size)
    return c.depth * linears + attention + embed + merger


def build_models(config_file: Path = CONFIG, seed: int = 0) -> tuple[torch.nn.Module, VisionTransformer, VisionConfig]:
    """transformers' tower with a seeded init, and qwenlite's tower holding a copy of the same weights."""
    from transformers import AutoConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    hf_config = AutoConfig.from_pretrained(config_file).vision_config
    hf_config._attn_implementation = "sdpa"  # what transformers picks on CPU by default
    torch.manual_seed(seed)
    ref = Qwen2_5_VisionTransformerPretrainedModel(hf_config).eval()
    with torch.no_grad():  # non-trivial weights everywhere: biases and norm gains too, not just the matrices
        for name, p in ref.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name or "ln_q" in name else 0.02 * torch.randn_like(p))
    config = QwenLiteConfig.from_pretrained(config_file).vision_config
    with torch.device("meta"):
        ours = VisionTransformer(config)
    ours.load_state_dict({k: v.clone() for k, v in ref.state_dict().items()}, strict=True, assign=True)
    return ref, ours.eval(), config


def cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Parameters in dtype, buffers left alone: what from_pretrained(dtype=...) gives. (Module.to would also
    round transformers' rotary inv_freq buffer to bfloat16, which its from_pretrained keeps in float32.)"""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(models: dict[str, object], pixels: torch.Tensor, grid: torch.Tensor, repeats: int, profile: bool):
    """Warm up each model, then time them alternately (so both see the same machine state).

    Returns the times and page faults of every run, and the outputs."""
    times: dict[str, list[float]] = {name: [] for name in models}
    faults: dict[str, list[int]] = {name: [] for name in models}
    with torch.inference_mode():
        outputs = {name: run(pixels, grid) for name, run in models.items()}  # warm-up, and the outputs compared
        for _ in range(repeats):
            for name, run in models.items():
                before = page_faults()
                times[name].append(_time(lambda run=run: run(pixels, grid)))
                faults[name].append(page_faults() - before)
        if profile:
            for name, run in models.items():
                with torch.profiler.profile() as prof:
                    run(pixels, grid)
                table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
                print(f"\n{name}, {int(grid.prod())} patches\n{table}")
    return times, faults, outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="model config.json (default: the real 3B)")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the square matmul that measures the peak")
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 896], help="square image sides in pixels")
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=DEFAULT_DTYPES, help="a table each")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model and size (after a warm-up)")
    parser.add_argument("--profile", action="store_true", help="print the top ops of one run of each model")
    parser.add_argument("--steady-allocator", action="store_true", help="no page faults after warm-up (glibc)")
    args = parser.parse_args(argv)
    if args.steady_allocator:
        steady_allocator()

    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
        f"allocator: {'steady' if args.steady_allocator else 'default'}"
    )
    ref, ours, config = build_models(args.config)
    models = {"transformers": lambda p, g: ref(p, g).pooler_output, "qwenlite": ours}
    inputs = {}
    for side in args.sizes:
        grid = torch.tensor([[1, side // config.patch_size, side // config.patch_size]])
        torch.manual_seed(1)
        inputs[side] = torch.randn(int(grid.prod()), 3 * config.temporal_patch_size * config.patch_size**2), grid
    # Every dtype's error is measured against transformers in float32: its warm-up output when float32 is timed
    # (it runs first), else one run here before the weights are cast.
    reference: dict[int, torch.Tensor] = {}
    if "float32" not in args.dtype:
        with torch.inference_mode():
            reference = {side: ref(*inputs[side]).pooler_output for side in args.sizes}

    tables: dict[str, list[str]] = {}
    for name in sorted(set(args.dtype), key=list(DTYPES).index):
        dtype = DTYPES[name]
        cast(ref, dtype), cast(ours, dtype)
        mode = Float32Products() if name == "bfloat16-via-float32" else contextlib.nullcontext()
        mode.__enter__()  # left below, after this dtype's table
        peak = matmul_peak(args.peak_size, dtype=dtype)
        print(f"\n{name}: matmul peak ({args.peak_size}^3) {peak / 1e9:.1f} GFLOP/s")
        tables[name] = []
        for side, (pixels, grid) in inputs.items():
            times, faults, outputs = compare(models, pixels, grid, args.repeats, args.profile)
            peak = max(peak, matmul_peak(args.peak_size, dtype=dtype))  # re-measured: the best seen is the ceiling
            floor = linear_floor(ours, int(grid.prod()), routed=name == "bfloat16-via-float32")
            flops = vision_flops(config, grid)
            truth = reference.setdefault(side, outputs["transformers"])
            error = {k: float((out.float() - truth).abs().max() / truth.abs().max()) for k, out in outputs.items()}
            a, b = outputs["qwenlite"].float(), outputs["transformers"].float()
            rel = float((a - b).abs().max() / b.abs().max())
            best = {k: min(t) for k, t in times.items()}
            median = {k: statistics.median(t) for k, t in times.items()}
            print(
                f"\n{name} {side}x{side}: {int(grid.prod())} patches -> {tuple(a.shape)} features, "
                f"{flops / 1e9:.0f} GFLOP; matmul peak so far {peak / 1e9:.1f} GFLOP/s"
            )
            for k in times:
                print(
                    f"  {k:<13} best {best[k]:6.2f} s  median {median[k]:6.2f} s  "
                    f"{flops / best[k] / 1e9:6.1f} GFLOP/s = {flops / best[k] / peak:5.1%} of matmul peak; "
                    f"page faults per run {statistics.median(faults[k]) / 1e3:,.0f}k (median)"
                )
            paired = [tf / ql for tf, ql in zip(times["transformers"], times["qwenlite"], strict=True)]
            speedup = statistics.median(paired)
            print(
                f"  speed-up (transformers / qwenlite): best {best['transformers'] / best['qwenlite']:.3f}x, "
                f"median of paired runs {speedup:.3f}x (range {min(paired):.3f}-{max(paired):.3f}); "
                f"max |diff| / max |ref| = {rel:.1e}"
            )
            print(
                f"  linear floor {floor:.2f} s (the blocks' linear layers alone): ceiling of any speed-up "
                f"{best['transformers'] / floor:.2f}x; time beyond the floor: transformers "
                f"{best['transformers'] - floor:.2f} s, qwenlite {best['qwenlite'] - floor:.2f} s"
            )
            print(
                f"  error vs transformers float32 (max |x - ref| / max |ref|): transformers "
                f"{error['transformers']:.1e}, qwenlite {error['qwenlite']:.1e}"
            )
            tables[name].append(
                f"| {side}x{side} | {best['transformers']:.2f} / {median['transformers']:.2f} s "
                f"| {best['qwenlite']:.2f} / {median['qwenlite']:.2f} s | {speedup:.2f}x | {floor:.2f} s "
                f"| {best['qwenlite'] / floor:.2f} | {error['transformers']:.1e} / {error['qwenlite']:.1e} |"
            )
        mode.__exit__(None, None, None)
    for name, rows in tables.items():
        print(
            f"\n{name}\n| input | transformers best / median | qwenlite best / median | speed-up (median of pairs) "
            "| linear floor | qwenlite / floor | error vs float32 (tf / ql) |\n|---|---|---|---|---|---|---|"
        )
        print("\n".join(rows))


if __name__ == "__main__":
    main()
