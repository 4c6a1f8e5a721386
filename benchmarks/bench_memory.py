"""Peak memory of one prefill, qwenlite against transformers, same weights, same prompt, each in a fresh process.

What a long prompt costs beyond the weights: both libraries run one forward over L random text tokens (no
padding) with `logits_to_keep=1`, as their `generate` does for the prefill, and the child process reports how
far its resident memory rose above what it held just before the call (Linux's VmHWM after `clear_refs` 5 resets
it, minus VmRSS at that moment). A quadratic cost shows as a ratio that grows with L: before qwenlite passed
SDPA `is_causal` instead of a dense (B, 1, L, S) float mask, a 24k-token prompt cost +5.7 GB against
transformers' +0.3 GB.

Widths: the tiny twin (hidden 128, 2 layers) and the 3B's text widths (data/configs/, one decoder layer: the
mask and the activations of one layer are what grows with L; more layers add weights, not peak). float32.
The video: 267 s at 2 fps through the processor's own budget (38,453 LLM tokens, 153,792 patches): the
length at which a dense mask was killed at 10 GB where transformers needed 2.65 GB.

    python benchmarks/bench_memory.py          # the twin at 1k-32k and a 267 s video, the 3B's widths at 1k-8k
    python benchmarks/bench_memory.py --twin --video --full 16384 24576 32768 --out rows.json   # 3B, long
    python benchmarks/bench_memory.py --twin 1024 4096 --full 1024 --video
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "memory.json"


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def video_inputs(folder: Path, seconds: int) -> dict[str, torch.Tensor]:
    """A `seconds`-long clip at 2 fps (64 x 64 noise) through the processor with its own video budget."""
    from qwenlite import Processor
    from qwenlite.video_io import write_video

    frames = torch.randint(0, 256, (2 * seconds, 3, 64, 64), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(frames.to(torch.uint8), Path(tmp) / "long.mp4", fps=2)
        processor = Processor.from_pretrained(folder)
        text = "<|vision_start|><|video_pad|><|vision_end|>What happens?"
        return processor(text, videos=[path])


def one(library: str, folder: Path, length: int) -> dict:
    """In this process: load the model, then the peak memory above the baseline during one prefill.

    length > 0: that many random text tokens; length < 0: a video of -length seconds (video_inputs)."""
    torch.manual_seed(0)
    text = length > 0  # ordinary text tokens, no image or video
    inputs = {"input_ids": torch.randint(0, 150_000, (1, length))} if text else video_inputs(folder, -length)
    ids = inputs["input_ids"]
    if library == "qwenlite":
        from qwenlite import QwenLiteVL

        model = QwenLiteVL.from_pretrained(folder, dtype=torch.float32)
    else:
        from qwenlite_course.reference import reference_model

        model = reference_model(folder, dtype=torch.float32)  # transformers' default kernel: SDPA
    gc.collect()
    with torch.no_grad():
        model(input_ids=torch.arange(1, 9)[None], logits_to_keep=1)  # warm-up: lazy allocations, not the prompt's
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
        before = _status("VmRSS")
        start = time.perf_counter()
        logits = model(**inputs, logits_to_keep=1).logits
        seconds = time.perf_counter() - start
    peak = _status("VmHWM") - before
    return {"peak_bytes": peak, "seconds": seconds, "tokens": ids.shape[1], "logit0": float(logits[0, -1, 0])}


def measure(library: str, folder: Path, length: int) -> dict:
    """one() in a fresh process, so that neither library's allocator state leaks into the other's number."""
    cmd = [sys.executable, __file__, "one", library, str(folder), str(length)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def full_size_folder(root: Path) -> Path:
    """The 3B's config with one decoder layer and one vision block, seeded weights (as bench_generate draws)."""
    from bench_generate import CONFIG, seeded_weights, write_config
    from safetensors.torch import save_file

    write_config(root, CONFIG, layers=1)
    save_file(seeded_weights(root, torch.float32), root / "model.safetensors", metadata={"format": "pt"})
    return root


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "one":
        print(json.dumps(one(argv[1], Path(argv[2]), int(argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--twin", type=int, nargs="*", default=[1024, 4096, 8192, 16384, 24576, 32768])
    parser.add_argument("--full", type=int, nargs="*", default=[1024, 4096, 8192])
    parser.add_argument("--video", type=int, nargs="*", default=[267], help="seconds of video, on the twin")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the rows go (JSON)")
    args = parser.parse_args(argv)
    from qwenlite_course import checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("twin", checkpoint.tiny_twin(), n) for n in args.twin]
        cases += [(f"twin, a {n} s video", checkpoint.tiny_twin(), -n) for n in args.video]
        if args.full:
            full = full_size_folder(Path(tmp))
            cases += [("3B widths, 1 layer", full, n) for n in args.full]
        for widths, folder, length in cases:
            ours, theirs = measure("qwenlite", folder, length), measure("transformers", folder, length)
            row = {"widths": widths, "tokens": ours.get("tokens", length), "qwenlite": ours, "transformers": theirs}
            if "peak_bytes" in ours and "peak_bytes" in theirs:
                row["ratio"] = ours["peak_bytes"] / max(theirs["peak_bytes"], 1)
            rows.append(row)
            print(table_row(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    facts = {"machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}", "rows": rows}
    args.out.write_text(json.dumps(facts, indent=1) + "\n")


def table_row(row: dict) -> str:
    def cell(r: dict) -> str:
        return f"{r['peak_bytes'] / 2**20:,.0f} MB, {r['seconds']:.1f} s" if "peak_bytes" in r else r["error"]

    ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
    return f"| {row['widths']} | {row['tokens']:,} | {cell(row['qwenlite'])} | {cell(row['transformers'])} | {ratio} |"


if __name__ == "__main__":
    main()
