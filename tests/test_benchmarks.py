"""The speed benchmark's own arithmetic and a smoke run, on the tiny twin's config (seconds, not minutes).

`benchmarks/bench_vision.py` is run by hand on the full-size config (`make bench`); these tests keep it
from rotting: its FLOP count is what torch's own counter sees, and it runs end to end with both towers
agreeing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from qwenlite_course.checkpoint import tiny_twin

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    """A script in benchmarks/ as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench_vision")


@pytest.fixture(scope="module")
def twin_config() -> Path:
    return tiny_twin() / "config.json"


@pytest.fixture(scope="module")
def twin_tower(bench, twin_config):
    _, tower, config = bench.build_models(twin_config)
    return tower, config


@pytest.mark.parametrize(
    "grid",
    [[[1, 8, 8]], [[1, 12, 20]], [[2, 10, 6]], [[1, 4, 4], [3, 10, 14]]],
    ids=["one-window", "windows-that-do-not-tile", "video", "image-and-video"],
)
def test_vision_flops_equal_torch_flop_counter(bench, twin_tower, grid):
    """The analytic count behind the printed GFLOP/s equals torch's FlopCounterMode on a real forward
    (SDPA's math backend, so that attention runs as countable matmuls)."""
    tower, config = twin_tower
    grid = torch.tensor(grid)
    patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
    pixels = torch.randn(int(grid.prod(-1).sum()), patch_dim)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        tower(pixels, grid)
    assert counter.get_total_flops() == bench.vision_flops(config, grid)


def test_bench_runs_and_both_towers_agree(bench, twin_config, capsys):
    """float32 and bfloat16: in float32 the towers agree; in bfloat16 each is about as far from transformers'
    float32 features as the other, and both are printed in their own table."""
    args = ["--config", str(twin_config), "--sizes", "56", "168", "--repeats", "1", "--peak-size", "512"]
    bench.main([*args, "--dtype", "float32", "bfloat16"])
    out = capsys.readouterr().out
    diffs = [float(d) for d in re.findall(r"max \|diff\| / max \|ref\| = (\S+)", out)]
    assert len(diffs) == 4 and max(diffs[:2]) < 1e-4, out  # float32 first, then bfloat16
    rows = re.findall(r"^\| \d+x\d+ \|.*\| (\S+) / (\S+) \|$", out, flags=re.M)
    assert len(rows) == 4, out
    (tf32, ql32), _, (tf16, ql16), _ = [tuple(map(float, r)) for r in rows]
    assert tf32 == 0 and ql32 < 1e-5, out
    assert 0 < tf16 < 0.05 and ql16 <= 1.5 * tf16, out
    assert len(re.findall(r"linear floor \d", out)) == 4 and out.count("page faults per run") == 8, out
    assert "\nfloat32\n| input" in out and "\nbfloat16\n| input" in out, out


def test_bench_times_bfloat16_with_products_through_float32(bench, twin_config, capsys):
    """The third table (the default on CPUs without a bfloat16 unit): bfloat16 errors of the same size as
    bfloat16's own, since the arithmetic is the same."""
    args = ["--config", str(twin_config), "--sizes", "56", "--repeats", "1", "--peak-size", "256"]
    bench.main([*args, "--dtype", "bfloat16", "bfloat16-via-float32"])
    out = capsys.readouterr().out
    (native, via) = [tuple(map(float, r)) for r in re.findall(r"^\| 56x56 \|.*\| (\S+) / (\S+) \|$", out, flags=re.M)]
    assert "\nbfloat16-via-float32\n| input" in out, out
    assert 0 < via[0] < 0.05 and 0 < via[1] <= 1.5 * max(native), out


def test_bench_times_one_dtype_against_the_float32_reference(bench, twin_config, capsys):
    """--dtype bfloat16 alone still measures the error against transformers in float32 (run before the cast)."""
    bench.main(
        ["--config", str(twin_config), "--sizes", "56", "--repeats", "1", "--peak-size", "256", "--dtype", "bfloat16"]
    )
    out = capsys.readouterr().out
    (row,) = re.findall(r"^\| 56x56 \|.*\| (\S+) / (\S+) \|$", out, flags=re.M)
    assert 0 < float(row[0]) < 0.05 and "\nfloat32\n| input" not in out, out


@pytest.fixture(scope="module")
def bench_generate():
    return _load("bench_generate")


def test_decode_floor_counts_every_weight_a_step_reads(bench_generate, ours):
    """A decode step reads the decoder layers, the final norm and lm_head. With tied embeddings lm_head is the
    embedding table, so the bytes are exactly the text model's parameters; a count that left out lm_head, or
    added the (tied) table twice, would break this."""
    assert ours.config.tie_word_embeddings
    text_bytes = sum(p.numel() * p.element_size() for p in ours.model.parameters())
    assert bench_generate.bytes_per_step(ours) == text_bytes


@pytest.mark.slow
def test_generate_bench_runs_and_both_libraries_produce_the_same_tokens(bench_generate, twin_config, capsys):
    """The whole benchmark on the twin's widths: a row per batch size, the ids of both libraries equal."""
    args = ["--config", str(twin_config), "--layers", "2", "--dtype", "float32", "--batch", "1", "2"]
    bench_generate.main([*args, "--prompt", "8", "--new", "2", "--repeats", "1", "--bandwidth-gb", "0.05"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| 2 \| float32 \| (\d) \|.*\| (\S+) \|$", out, flags=re.M)
    assert rows == [("1", "yes"), ("2", "yes")] * 2, out  # printed as measured, then in the closing table


def test_routed_linear_floor_takes_the_path_of_the_towers_layers(bench, twin_config):
    """In the bfloat16-via-float32 table the floor goes through F.linear, so Float32Products takes over each of its
    products (as it does the towers' nn.Linear layers); otherwise it would time torch's emulated bfloat16."""
    from qwenlite import QwenLiteConfig
    from qwenlite.vision import VisionTransformer
    from qwenlite_course.cpu_bfloat16 import MIN_ROWS, Float32Products

    tower = VisionTransformer(QwenLiteConfig.from_pretrained(twin_config).vision_config).bfloat16()
    calls = 5 * len(tower.blocks) * 2  # five linear layers a block, in the warm-up and one timed run
    for routed, expected in ((True, calls), (False, 0)):
        with Float32Products() as mode:
            assert bench.linear_floor(tower, MIN_ROWS, repeats=1, routed=routed) > 0
        assert mode.routed == expected, routed
