"""qwenlite_course.cpu_bfloat16: bfloat16 products through float32's kernel do bfloat16's arithmetic.

Each product under `Float32Products` must (1) be taken over (its `routed` count grows), (2) equal the
float32 product of the same bfloat16 operands rounded once, bit for bit, and (3) agree with torch's own
bfloat16 kernel to one rounding step, on almost every entry exactly. Short products and float32 ones are
left alone. The model-level checks (the tolerance policy and its mutations under the mode) are in
tests/test_tolerance_policy.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwenlite_course import cpu_bfloat16
from qwenlite_course.cpu_bfloat16 import Float32Products, has_bfloat16_unit
from qwenlite_course.reference import run_settings
from qwenlite_course.viz import banner

g = torch.Generator().manual_seed(0)


def rand(*shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).bfloat16()


x, w, b = rand(96, 512), rand(768, 512, scale=0.05), rand(768)
q, k = rand(1, 4, 64, 32), rand(1, 4, 32, 64)
patches, kernel = rand(40, 3, 2, 14, 14), rand(64, 3, 2, 14, 14, scale=0.02)

PRODUCTS = {  # name: (the call, the same product in float32 rounded once)
    "linear": (lambda: F.linear(x, w, b), lambda: F.linear(x.float(), w.float(), b.float())),
    "linear, no bias": (lambda: F.linear(x, w), lambda: F.linear(x.float(), w.float())),
    "nn.Linear": (
        lambda: _module(x),
        lambda: F.linear(x.float(), w.float(), b.float()),
    ),
    "matmul": (lambda: torch.matmul(q, k), lambda: q.float() @ k.float()),
    "@": (lambda: x @ w.T, lambda: x.float() @ w.float().T),
    "bmm": (lambda: torch.bmm(q[0], k[0]), lambda: torch.bmm(q[0].float(), k[0].float())),
    "conv3d": (
        lambda: F.conv3d(patches, kernel, None, (2, 14, 14)),
        lambda: F.conv3d(patches.float(), kernel.float(), None, (2, 14, 14)),
    ),
}


def _module(inputs):
    layer = torch.nn.Linear(512, 768, dtype=torch.bfloat16)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
        return layer(inputs)


@pytest.mark.parametrize("name", PRODUCTS)
def test_products_are_float32_products_rounded_once(name):
    call, float32 = PRODUCTS[name]
    native = call()
    with Float32Products() as mode:
        ours = call()
    assert mode.routed == 1, f"{name}: the mode did not take the product over"
    assert ours.dtype == torch.bfloat16 and ours.shape == native.shape
    assert torch.equal(ours, float32().bfloat16()), name
    # torch's own bfloat16 kernel: the same sums, added in another order
    step = native.float().abs().clamp_min(float(native.float().abs().max()) * 2**-12) * 2**-7  # one bf16 step
    assert ((ours.float() - native.float()).abs() <= step).all(), name
    assert (ours == native).float().mean() > 0.99, name


def test_short_and_float32_products_are_left_alone():
    short = x[: cpu_bfloat16.MIN_ROWS - 1]
    with Float32Products() as mode:
        one = F.linear(short, w, b)
        full = F.linear(x.float(), w.float(), b.float())
        by_keyword = F.linear(input=x, weight=w, bias=b)  # an unusual call: torch's own kernel, not an error
    assert mode.routed == 0
    assert torch.equal(by_keyword, F.linear(x, w, b))
    assert torch.equal(one, F.linear(short, w, b)) and torch.equal(full, F.linear(x.float(), w.float(), b.float()))


def test_products_autograd_records_are_left_alone():
    """With a graph to record, the upcast weight would stay alive until backward: the mode steps aside."""
    weight = w.clone().requires_grad_()
    with Float32Products() as mode:
        recorded = F.linear(x, weight, b)
        with torch.no_grad():
            F.linear(x, weight, b)
    assert mode.routed == 1 and recorded.requires_grad
    assert torch.equal(recorded, F.linear(x, weight, b))


def test_a_large_weight_is_upcast_in_chunks_with_the_same_result(monkeypatch):
    whole = cpu_bfloat16.linear(x, w, b)
    monkeypatch.setattr(cpu_bfloat16, "CHUNK", 100 * 512)  # 100 output features at a time: 8 chunks of 768
    assert torch.equal(cpu_bfloat16.linear(x, w, b), whole)
    assert torch.equal(cpu_bfloat16.linear(x, w), F.linear(x.float(), w.float()).bfloat16())


def test_the_buffer_first_made_under_inference_mode_serves_later_products(monkeypatch):
    """The one reused float32 buffer is a plain tensor even when inference_mode asked for it first (a benchmark
    does): an inference tensor could not be written outside inference_mode afterwards."""
    monkeypatch.setattr(cpu_bfloat16, "_BUFFER", None)
    with torch.inference_mode():
        inside = cpu_bfloat16.linear(x, w, b)
    assert not cpu_bfloat16._BUFFER.is_inference()
    assert torch.equal(cpu_bfloat16.linear(x, w, b), inside)  # outside: the same buffer, written again


def test_the_cpu_flags_decide():
    assert has_bfloat16_unit("flags : fpu sse avx2 amx_bf16 amx_tile")
    assert has_bfloat16_unit("flags : fpu avx512f avx512_bf16")
    assert not has_bfloat16_unit("flags : fpu sse avx2 fma avx512f")


def test_run_settings_choose_float32_products_only_for_bfloat16_on_the_cpu(ckpt):
    def products(**env):
        return run_settings(env).float32_products

    assert products(QWENLITE_DTYPE="bfloat16", QWENLITE_BF16_PRODUCTS="float32")
    assert not products(QWENLITE_DTYPE="bfloat16", QWENLITE_BF16_PRODUCTS="bfloat16")
    assert not products(QWENLITE_DTYPE="float32", QWENLITE_BF16_PRODUCTS="float32")  # nothing to do in float32
    assert products(QWENLITE_DTYPE="bfloat16") == (not has_bfloat16_unit())  # auto
    settings = run_settings({"QWENLITE_DTYPE": "bfloat16", "QWENLITE_BF16_PRODUCTS": "float32"})
    assert "bfloat16 products run through float32's kernel" in banner(ckpt, settings)
