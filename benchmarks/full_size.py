"""Full-size dress rehearsal: a seeded 3B (or 7B) laid out like the hub's snapshot, and every notebook run on it.

`build` writes a Hugging Face cache (use it as HF_HOME) holding Qwen/Qwen2.5-VL-3B-Instruct exactly as
`huggingface_hub` lays out a download, but with seeded random weights instead of the real ones:

    <root>/hub/models--Qwen--Qwen2.5-VL-3B-Instruct/
        refs/main                      the snapshot's 40-hex "commit": sha1 of the recipe below
        blobs/<etag>                   file contents, named like the hub names them: sha256 of the content
                                       for LFS files (*.safetensors, tokenizer.json), git's blob sha1 otherwise
        snapshots/<commit>/<file>      relative symlinks ../../blobs/<etag>

The files: `config.json` (data/configs/ byte for byte), `model-0000i-of-0000n.safetensors` (bfloat16, hub key
names, metadata {"format": "pt"}, split in module order into shards of about equal size) with
`model.safetensors.index.json`, the hub's `generation_config.json` and `chat_template.json`, and the tokenizer
and preprocessor files the tiny twin gets (`checkpoint.write_processor_files`).

The weights, drawn one tensor at a time from one torch.Generator (seed 0) in the checkpoint's key order:
matrices (and the Conv3d kernel) normal(0, 0.02), transformers' initializer_range; 1-D norm weights
1 + 0.1 * normal; biases 0.1 * normal. Trained Qwen2.5-VL has *massive activations*: a few residual channels
hundreds of times larger than the rest (the real 3B vision tower overflows float16). To give bfloat16 the same
dynamic range to cope with, 4 channels of each residual stream, drawn by `torch.randperm(width)` from a
generator seeded 1 (printed by `build`), are scaled: those columns of `model.embed_tokens.weight` by 200
(text), those output rows of `visual.patch_embed.proj.weight` by 50 (vision). The build holds about one shard
in memory (the real 3B: 2 shards, 7.5 GB) and is skipped when a complete snapshot of the same recipe exists.

`run` executes notebooks on that cache, each in a fresh kernel, with HF_HOME=<root>, offline, QWENLITE_DTYPE
and QWENLITE_DEVICE=cpu, and prints each one's wall time and the kernel's peak memory (PSS).

    python benchmarks/full_size.py build [--root DIR] [--size 3b|7b] [--config PATH] [--shards N]
    python benchmarks/full_size.py run [--root DIR] [--dtype bfloat16] [--notebooks notebooks/01_*.ipynb]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qwenlite import QwenLiteConfig, QwenLiteVL
from qwenlite import weights as qwenlite_weights
from qwenlite_course import checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE_VERSION = 1  # bump when the weights' recipe changes, so that old snapshots are rebuilt
SIZES = {  # size -> (hub repo, config in data/configs/, shards on the hub)
    "3b": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl_3b_instruct.config.json", 2),
    "7b": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl_7b_instruct.config.json", 5),
}
DEFAULT_ROOT = {"3b": ROOT / "build/full-size/hf", "7b": ROOT / "build/full-size/hf-7b"}
Log = Callable[[str], None]
MARKER = "qwenlite-full-size.json"  # at the root: which repo folders this script owns (and may rebuild)
LFS_SUFFIXES = (".safetensors",)
LFS_NAMES = ("tokenizer.json",)  # as in the Qwen repos' .gitattributes
GENERATION_CONFIG = {  # the hub's generation_config.json for both the 3B and the 7B Instruct
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
    "transformers_version": "4.49.0",
}


@dataclass(frozen=True)
class Recipe:
    """Everything the weights depend on; its sha1 is the snapshot's commit hash."""

    repo: str
    config_sha256: str
    shards: int
    seed: int = 0
    std: float = 0.02  # matrices: transformers' initializer_range
    vector_std: float = 0.1  # norm weights 1 + 0.1 * normal, biases 0.1 * normal
    massive_channels: int = 4
    massive_seed: int = 1
    text_scale: float = 200.0  # on those columns of model.embed_tokens.weight
    vision_scale: float = 50.0  # on those output rows of visual.patch_embed.proj.weight
    version: int = RECIPE_VERSION
    small_files: dict[str, str] = field(default_factory=dict)  # name -> etag of the non-weight files

    def commit(self) -> str:
        return hashlib.sha1(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- the hub's layout


def repo_folder(root: Path, repo: str) -> Path:
    return root / "hub" / ("models--" + repo.replace("/", "--"))


def etag(path: Path) -> str:
    """How the hub names a blob: sha256 of the content for LFS files, git's blob sha1 for the others."""
    if path.name.endswith(LFS_SUFFIXES) or path.name in LFS_NAMES:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def snapshot_is_complete(folder: Path, commit: str, names: list[str]) -> bool:
    """refs/main names `commit`, and every file of its snapshot is a symlink to a present blob."""
    ref = folder / "refs" / "main"
    if not ref.is_file() or ref.read_text().strip() != commit:
        return False
    snap = folder / "snapshots" / commit
    return all((snap / n).is_symlink() and (snap / n).is_file() for n in names)


def publish(files: Path, folder: Path, commit: str) -> Path:
    """Move every file of `files` into blobs/<etag> and link snapshots/<commit>/<name> to it; refs/main last."""
    snap = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for path in sorted(files.iterdir()):
        blob = folder / "blobs" / etag(path)
        path.replace(blob)
        link = snap / path.name
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, snap))  # ../../blobs/<etag>, as huggingface_hub writes it
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)  # the hub writes no newline
    return snap


def claim(root: Path, folder: Path) -> None:
    """Refuse to touch a repo folder this script did not create (a real download, say); record the ones it did."""
    marker = root / MARKER
    owned = json.loads(marker.read_text()) if marker.is_file() else []
    name = folder.name
    if folder.exists() and name not in owned:
        raise SystemExit(f"{folder} exists and was not built by {Path(__file__).name}: not touching it")
    if name not in owned:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(sorted([*owned, name]), indent=1))


# ---------------------------------------------------------------- weights


def massive_channels(width: int, recipe: Recipe) -> list[int]:
    gen = torch.Generator().manual_seed(recipe.massive_seed)
    return sorted(torch.randperm(width, generator=gen)[: recipe.massive_channels].tolist())


def seeded_tensor(
    name: str, shape: torch.Size, gen: torch.Generator, recipe: Recipe, massive: dict[str, list[int]]
) -> torch.Tensor:
    """One weight in bfloat16, drawn from `gen` (float32, then rounded)."""
    x = torch.randn(shape, generator=gen)
    if name.endswith(".bias"):
        x.mul_(recipe.vector_std)
    elif x.ndim == 1:  # RMSNorm weights (norm1/2, input/post_attention_layernorm, model.norm, merger.ln_q)
        x.mul_(recipe.vector_std).add_(1)
    else:
        x.mul_(recipe.std)
    if name == "model.embed_tokens.weight":
        x[:, massive["text"]] *= recipe.text_scale
    elif name == "visual.patch_embed.proj.weight":
        x[massive["vision"]] *= recipe.vision_scale
    return x.to(torch.bfloat16)


def split(shapes: dict[str, torch.Size], n: int) -> list[list[str]]:
    """Keys in module order (as save_pretrained shards), cut into n non-empty runs of about equal bytes."""
    keys, before, done = list(shapes), [], 0
    for k in keys:
        before.append(done)  # bytes of all keys before k
        done += shapes[k].numel() * 2
    if not 1 <= n <= len(keys):
        raise ValueError(f"{len(keys)} tensors cannot fill {n} shards")
    cuts = [0]
    for j in range(1, n):
        i = next((i for i, b in enumerate(before) if b >= j * done / n), len(keys))
        cuts.append(min(max(i, cuts[-1] + 1), len(keys) - (n - j)))
    return [keys[a:b] for a, b in zip(cuts, [*cuts[1:], len(keys)], strict=True)]


def write_weights(folder: Path, config: QwenLiteConfig, recipe: Recipe, log: Log = print) -> None:
    """The shards and model.safetensors.index.json, one shard in memory at a time."""
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = QwenLiteVL(config).expected_keys()
    massive = {
        "text": massive_channels(config.text_config.hidden_size, recipe),
        "vision": massive_channels(config.vision_config.hidden_size, recipe),
    }
    log(f"massive-activation channels: text {massive['text']} (x{recipe.text_scale:g} in embed_tokens), "
        f"vision {massive['vision']} (x{recipe.vision_scale:g} in patch_embed)")  # fmt: skip
    gen = torch.Generator().manual_seed(recipe.seed)
    weight_map, total = {}, 0
    for i, keys in enumerate(split(shapes, recipe.shards), 1):
        t = time.perf_counter()
        name = f"model-{i:05d}-of-{recipe.shards:05d}.safetensors"
        tensors = {k: seeded_tensor(k, shapes[k], gen, recipe, massive) for k in keys}
        save_file(tensors, folder / name, metadata={"format": "pt"})
        size = sum(v.numel() * v.element_size() for v in tensors.values())
        total += size
        weight_map.update(dict.fromkeys(keys, name))
        del tensors
        log(f"  {name}: {len(keys)} tensors, {size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s")
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_small_files(folder: Path, config_file: Path) -> None:
    """config.json verbatim, the hub's generation_config.json and chat_template.json, tokenizer, preprocessor."""
    shutil.copyfile(config_file, folder / "config.json")
    (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    checkpoint.write_processor_files(folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()  # the hub's Qwen2.5-VL repos ship the older chat_template.json
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2) + "\n")


def build(root: Path, config_file: Path, repo: str, shards: int, log: Log = print) -> Path:
    """Write (or find) the snapshot; returns snapshots/<commit>."""
    root, folder = root.resolve(), repo_folder(root.resolve(), repo)
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_small_files(tmp, config_file)
        small = {p.name: etag(p) for p in sorted(tmp.iterdir())}
        recipe = Recipe(repo, hashlib.sha256(config_file.read_bytes()).hexdigest(), shards, small_files=small)
        commit = recipe.commit()
        names = [*small, "model.safetensors.index.json"]
        names += [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        if snapshot_is_complete(folder, commit, names):
            log(f"{repo}: complete snapshot {commit} already in {folder}, nothing to do")
            return folder / "snapshots" / commit
        claim(root, folder)
        shutil.rmtree(folder, ignore_errors=True)  # an older recipe or a half-written build: start over
        t = time.perf_counter()
        log(f"{repo}: writing snapshot {commit} ({shards} shards) into {folder}")
        config = QwenLiteConfig.from_pretrained(config_file)
        write_weights(tmp, config, recipe, log)
        snap = publish(tmp, folder, commit)
        log(f"{repo}: built in {time.perf_counter() - t:.0f} s")
        return snap
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- running the notebooks


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process and all its descendants (shared pages split among sharers)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += pss_bytes(int(child))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # the process ended between two reads
    return total


def kernel_pid(client) -> int | None:
    """The kernel's pid: jupyter_client >= 7 keeps the Popen in km.provisioner.process, older ones in km.kernel."""
    km = getattr(client, "km", None)
    process = getattr(getattr(km, "provisioner", None), "process", None) or getattr(km, "kernel", None)
    return getattr(process, "pid", None)


class PeakMemory(threading.Thread):
    """Polls the kernel's PSS every `interval` seconds while a notebook runs and keeps the peak."""

    def __init__(self, client, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.client, self.interval, self.peak, self.stopped = client, interval, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            if (pid := kernel_pid(self.client)) is not None:
                self.peak = max(self.peak, pss_bytes(pid))

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        return self.peak


def reported_checkpoint(nb) -> str | None:
    """The path in the notebook's banner line 'checkpoint: ... at <path>', if it printed one."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in str(out.get("text", "")).splitlines():
                if line.startswith("checkpoint:") and " at " in line:
                    return line.rsplit(" at ", 1)[1].strip()
    return None


def run_notebook(path: Path, timeout: int, env: dict[str, str], save_to: Path | None) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    sampler = PeakMemory(client)
    sampler.start()
    t, error = time.perf_counter(), ""
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        error = f"{err.ename}: {err.evalue}".splitlines()[0]
    except Exception as err:  # a dead kernel (out of memory), a timeout, a kernel that never started
        error = f"{type(err).__name__}: {err}".splitlines()[0]
    wall, peak = time.perf_counter() - t, sampler.stop()
    if save_to is not None:
        save_to.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save_to / path.name)
    return {"name": path.stem, "wall": wall, "peak": peak, "error": error, "checkpoint": reported_checkpoint(nb)}


def run(root: Path, size: str, dtype: str, notebooks: list[Path], timeout: int, save_to: Path | None) -> bool:
    """Execute each notebook in a fresh kernel on the built snapshot; print the table; True if all passed."""
    root = root.resolve()
    folder = repo_folder(root, SIZES[size][0])
    if not (folder / "refs" / "main").is_file():
        raise SystemExit(f"no snapshot under {folder}: run `python {Path(__file__).name} build` first")
    snap = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    os.environ.update(HF_HOME=str(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    os.environ.update(QWENLITE_DTYPE=dtype, QWENLITE_DEVICE="cpu", TOKENIZERS_PARALLELISM="false")
    for name in ("QWENLITE_CHECKPOINT", "HF_HUB_CACHE"):  # resolve() must find the snapshot through HF_HOME
        os.environ.pop(name, None)
    found = checkpoint.resolve()
    if found != snap:
        raise SystemExit(f"checkpoint.resolve() finds {found}, not the built snapshot {snap}")
    on_disk = sum(f.stat().st_size for f in qwenlite_weights.safetensors_files(snap))  # bfloat16: 2 bytes a number
    weights = on_disk * torch.finfo(getattr(torch, dtype)).bits // 16  # the weights at the dtype the notebooks use
    print(
        f"snapshot {snap}\nweights on disk {on_disk / 1e9:.2f} GB, {weights / 1e9:.2f} GB in {dtype}; "
        "checkpoint.resolve() finds it"
    )
    head = f"{'notebook':<26} {'wall s':>7} {'peak PSS GB':>12} {'peak/weights':>13}  result"
    print(head + "\n" + "-" * len(head), flush=True)
    ok, total, worst = True, 0.0, 0.0
    for path in notebooks:
        r = run_notebook(path, timeout, dict(os.environ), save_to)
        total, worst = total + r["wall"], max(worst, r["peak"])
        if not r["error"] and r["checkpoint"] not in (None, str(snap)):
            r["error"] = f"the notebook used {r['checkpoint']}, not the snapshot"
        ok &= not r["error"]
        result = f"FAIL {r['error']}" if r["error"] else "pass"
        print(f"{r['name']:<26} {r['wall']:>7.1f} {r['peak'] / 1e9:>12.2f} {r['peak'] / weights:>13.2f}  {result}")
    print("-" * len(head))
    summary = f"all {len(notebooks)} ({total / 60:.1f} min)"
    print(f"{summary:<26} {total:>7.1f} {worst / 1e9:>12.2f} {worst / weights:>13.2f}  (the largest peak)")
    return ok


PROBE = [
    """import time

from PIL import Image

from qwenlite import Processor
from qwenlite_course import checkpoint
from qwenlite_course.reference import check_table, end_to_end_rows, load_models, run_settings
from qwenlite_course.viz import banner, data_dir

settings = run_settings()
path = checkpoint.resolve()
banner(path, settings)
start = time.perf_counter()
model, ref = load_models(path, settings)
print(f"both models loaded in {time.perf_counter() - start:.1f} s")""",
    """processor = Processor.from_pretrained(path)
photo = Image.open(data_dir() / "grace_hopper.jpg").convert("RGB").resize((56, 56))
inputs = settings.put(processor(text="<|vision_start|><|image_pad|><|vision_end|>Who is this?", images=[photo]))
start = time.perf_counter()
check_table(end_to_end_rows(model, ref, inputs), title="the whole model, full size")
print(f"checked in {time.perf_counter() - start:.1f} s")""",
]


def write_probe(folder: Path) -> Path:
    """The cheapest whole-model check as a notebook: both models loaded, end_to_end_rows on a 56x56 photo."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in PROBE])
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "probe.ipynb")
    return folder / "probe.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the seeded snapshot into a Hugging Face cache")
    r = sub.add_parser("run", help="execute notebooks on it, printing time and peak memory")
    for p in (b, r):
        p.add_argument("--root", type=Path, help="the cache (HF_HOME); default build/full-size/hf (hf-7b for 7b)")
        p.add_argument("--size", choices=sorted(SIZES), default="3b")
    b.add_argument("--config", type=Path, help="any Qwen2.5-VL config.json instead of data/configs/")
    b.add_argument("--shards", type=int, help="number of safetensors shards (default: as on the hub)")
    r.add_argument("--dtype", default="bfloat16")
    r.add_argument("--notebooks", type=Path, nargs="+", default=sorted((ROOT / "notebooks").glob("*.ipynb")))
    r.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    r.add_argument("--save", type=Path, default=ROOT / "build/full-size/executed", help="executed copies go here")
    r.add_argument("--probe", action="store_true", help="instead: load both models, check one small photo prompt")
    args = parser.parse_args()
    repo, config_name, hub_shards = SIZES[args.size]
    root = args.root or DEFAULT_ROOT[args.size]
    if args.command == "build":
        config = args.config or ROOT / "data" / "configs" / config_name
        print(build(root, config, repo, args.shards or hub_shards))
    else:
        notebooks = [write_probe(ROOT / "build/full-size/probe")] if args.probe else args.notebooks
        sys.exit(0 if run(root, args.size, args.dtype, notebooks, args.timeout, args.save) else 1)


if __name__ == "__main__":
    main()
