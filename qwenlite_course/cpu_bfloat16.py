"""bfloat16 matrix products on CPUs without bfloat16 matrix units: qwenlite's one speed trick outside the models.

A bfloat16 matrix product (an nn.Linear, a matmul, the patch embedding's Conv3d) multiplies bfloat16
numbers, adds the products in float32 and rounds each sum once to bfloat16. CPUs with AMX or AVX512-BF16
do that in hardware. On the others (AVX2 only: most laptops, and the machine this repository was built on)
torch emulates it, and at prefill sizes the emulation is several times slower than the same product in
float32 (the timings: benchmarks/README.md, "bfloat16 products on a CPU: the timings behind cpu_bfloat16").

The product of two bfloat16 numbers is exact in float32 (8 + 8 significant bits fit in 24), so float32's
kernel can do the same arithmetic: upcast the operands, multiply, round the result to bfloat16.
`Float32Products` does that for every bfloat16 product on the CPU with at least MIN_ROWS rows. It is a torch
function mode: it sees calls, not models, so qwenlite and the transformers reference go through it alike,
and neither model's code changes. On random operands its results equal torch's own bfloat16 kernel on
99.98 % of entries and are one rounding step away on the rest (the order of the float32 additions differs);
tests/test_cpu_bfloat16.py checks that.

Products that autograd records (grad enabled, an operand that requires grad) are left to torch: the graph
would keep each upcast weight alive. Short products (a decode step has one row) stay in bfloat16 too:
reading the weights is what they wait for, and bfloat16 weights are half the bytes. Upcasting costs
reading the weight once more, which only pays from about 16 rows on (MIN_ROWS; timings in the same section).

`run_settings()` turns this on for bfloat16 on a CPU whose flags show neither amx_bf16 nor avx512_bf16;
QWENLITE_BF16_PRODUCTS=float32 or =bfloat16 forces the choice. `load_models` enters the mode for the rest
of the session, and the banner says so.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MIN_ROWS = 16  # rows of the left operand from which float32 pays (see above)
CHUNK = 1 << 20  # weight entries upcast at a time: 4 MB of float32, small enough to stay in the CPU's cache

_LINEAR = {F.linear}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm, torch.mm}
_CONV3D = {F.conv3d}


def has_bfloat16_unit(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 flags amx_bf16 or avx512_bf16).

    Off x86 Linux the answer is True: nothing is known, so nothing is changed.
    """
    if cpuinfo is None:
        info = Path("/proc/cpuinfo")
        if platform.machine().lower() not in ("x86_64", "amd64") or not info.is_file():
            return True
        cpuinfo = info.read_text()
    flags = set(cpuinfo.split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def _bf16_cpu(*tensors: torch.Tensor | None) -> bool:
    """All bfloat16 on the CPU, and no autograd graph to record: a graph would keep every upcast weight
    (float32, twice the bytes of the model) alive for its backward pass, so products that need one stay native."""
    given = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in given):
        return False
    return all(t.dtype == torch.bfloat16 and t.device.type == "cpu" for t in given)


def _rows(t: torch.Tensor) -> int:
    return t.numel() // max(t.shape[-1], 1) if t.dim() else 0


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear of bfloat16 operands computed in float32, each sum rounded once to bfloat16.

    The weight is upcast CHUNK entries at a time into one reused 4 MB float32 buffer, which the product then
    reads while it is still in the CPU's cache: so memory sees only the bfloat16 weight, 2 bytes an entry, and
    `weight.float()` would instead ask the OS for fresh pages on every call (timings: benchmarks/README.md).
    lm_head's 311 M entries never sit in float32.
    """
    x32 = x.float()
    step = max(CHUNK // max(weight.shape[-1], 1), 1)  # output features per chunk
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    for i in range(0, weight.shape[0], step):
        rows = weight[i : i + step]
        w32 = _scratch(rows.numel()).view(rows.shape).copy_(rows)
        b = None if bias is None else bias[i : i + step].float()
        out[..., i : i + step] = F.linear(x32, w32, b)  # each sum whole in float32, rounded once on the way in
    return out


_BUFFER: torch.Tensor | None = None


def _scratch(n: int) -> torch.Tensor:
    """n float32 entries of the one reused buffer (its contents are overwritten by the next product)."""
    global _BUFFER
    if _BUFFER is None or _BUFFER.numel() < n:
        with torch.inference_mode(False):  # a plain tensor even when first asked for under inference_mode
            _BUFFER = torch.empty(max(n, CHUNK))
    return _BUFFER[:n]


class Float32Products(TorchFunctionMode):
    """While active, bfloat16 CPU products of at least MIN_ROWS rows run as float32 products rounded to bfloat16.

    # speed: on the seeded 3B in bfloat16 on a 2-core AVX2 CPU, notebook 00 took 266 s with it (before the
    # cache-sized chunks), 886 s without; all nine notebooks 18.6 min. bench_vision.py's bfloat16-via-float32
    # table times the vision tower.

    `routed` counts the products it took over (tests check that it did).
    """

    def __init__(self) -> None:
        super().__init__()
        self.routed = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MATMUL and len(args) == 2 and not kwargs:
            a, b = args
            if isinstance(b, torch.Tensor) and _bf16_cpu(a, b) and _rows(a) >= MIN_ROWS:
                self.routed += 1
                return func(a.float(), b.float()).to(torch.bfloat16)
        elif (func in _LINEAR or func in _CONV3D) and len(args) >= 2:  # keywords only: left to torch
            x, weight, *rest = args
            bias = rest[0] if rest else kwargs.get("bias")
            rows = _rows(x) if func in _LINEAR else x.shape[0]  # conv3d: (patches, C, T, P, P), one row a patch
            if _bf16_cpu(x, weight, bias) and rows >= MIN_ROWS:
                self.routed += 1
                if func in _LINEAR:
                    return linear(x, weight, bias)
                options = {k: v for k, v in kwargs.items() if k != "bias"}
                b = None if bias is None else bias.float()
                return func(x.float(), weight.float(), b, *rest[1:], **options).to(torch.bfloat16)
        return func(*args, **kwargs)


_ACTIVE: Float32Products | None = None


def enable() -> None:
    """Enter Float32Products for the rest of the process (a notebook kernel); calling it again does nothing."""
    global _ACTIVE
    if _ACTIVE is None:
        _ACTIVE = Float32Products()
        _ACTIVE.__enter__()
