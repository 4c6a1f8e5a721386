"""Weights: the safetensors reader (shards, the index, headers), hub key names, and the strict load.

QwenLiteVL gets `from_pretrained`, `expected_keys` and `load_checkpoint` from `PretrainedWeights`, as
transformers' models get theirs from `PreTrainedModel`: model.py holds the forward pass, generation.py the
decoding loop, this file how a checkpoint's bytes become parameters. Only safetensors are read (never pickle);
nothing is ever written into a checkpoint folder. `read_tensors()` reads the files once, at the dtype and on the
device asked for; `hub_names()` maps either key layout (hub, or transformers 5.x in-memory) onto hub names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .config import QwenLiteConfig, check_config_ids, read_json, tokenizer_file_ids
from .decoder import TextModel
from .generation import GenerationSettings

INDEX = "model.safetensors.index.json"


def safetensors_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint: sharded (model.safetensors.index.json) or single."""
    return list(shard_keys(folder))


def shard_keys(folder: str | Path) -> Mapping[Path, set[str] | None]:
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
    raw = read_json(index)
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


def load_device(device: str | torch.device, what: str = "device") -> torch.device:
    """cpu, or cuda / cuda:N where torch sees that GPU: anything else is refused before a tensor is moved.
    what: how the caller names the setting in its errors (run_settings says QWENLITE_DEVICE)."""
    try:
        place = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{what}={device!r} is not a device: use cpu or cuda (cuda:N)") from err
    if place.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}={device!r}: qwenlite runs on cpu or cuda (cuda:N) only")
    if place.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={device!r}, but torch sees no CUDA device here (torch.cuda.is_available() False)")
        if place.index is not None and place.index >= torch.cuda.device_count():
            raise ValueError(f"{what}={device!r}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
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


def _read_mapped(file: Path, state: dict[str, torch.Tensor], keys: list[str]) -> None:
    """The keys asked for, memory-mapped at their stored dtype."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            for key in keys:
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


def all_finite(x: torch.Tensor) -> bool:
    """No NaN or inf in x. aminmax propagates NaN and reads x without a copy: torch.isfinite(x).all() would
    allocate 1.7 bytes per number (1.2 GB for a 267 s video's 154k patches, ~1 GB for the 3B's embedding)."""
    return x.numel() == 0 or bool(torch.isfinite(torch.stack(x.aminmax())).all())


class PretrainedWeights(nn.Module):
    """from_pretrained / expected_keys / load_checkpoint for an nn.Module whose tree uses the hub's key names."""

    config: QwenLiteConfig  # what QwenLiteVL sets; named here for the type checker
    generation_config: GenerationSettings
    lm_head: nn.Linear
    model: TextModel

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        tensors: dict[str, torch.Tensor] | None = None,
    ):
        """Build the tree on the meta device, then fill every parameter from the checkpoint's safetensors.

        dtype: torch.float32 or torch.bfloat16, or their names "float32" / "bfloat16" (float16 is refused: the
        real 3B's vision tower overflows it). device: "cpu", or "cuda" / "cuda:N" where torch sees that GPU.
        tensors: the checkpoint's tensors as `read_tensors(path, dtype, device)` returns them
        (file keys), to share one read of the weights with another model; read from path when None.
        Everything the folder holds is checked before the model is returned: config numbers, the special
        token ids against the tokenizer files, the weights' keys, shapes and finiteness, generation_config.json.
        """
        dtype, device = load_dtype(dtype), load_device(device)  # before any file is read
        path = Path(path)
        config = QwenLiteConfig.from_pretrained(path)
        token_ids, tokenizer_file = tokenizer_file_ids(path) if path.is_dir() else ({}, None)
        check_config_ids(config, token_ids, str(path / "config.json"), str(tokenizer_file))
        generation = GenerationSettings.from_json({}, config)
        if (gen := path / "generation_config.json").is_file():
            generation = GenerationSettings.from_json(read_json(gen), config, source=str(gen))
        with torch.device("meta"):
            model = cls(config)
        if tensors is None:
            tensors = read_tensors(path, dtype, device)
        state = hub_names(tensors, source=str(path))  # qwenlite's own key map
        model.load_checkpoint(state, dtype=dtype, device=device, source=str(path))
        model.generation_config = generation
        return model.eval()

    def expected_keys(self) -> dict[str, torch.Size]:
        """Checkpoint key -> shape, in hub layout (a tied lm_head is not stored)."""
        shapes = {k: v.shape for k, v in self.state_dict(keep_vars=True).items()}
        if self.config.tie_word_embeddings:
            shapes.pop("lm_head.weight")
        return shapes

    def load_checkpoint(
        self,
        state: dict[str, torch.Tensor],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        source: str = "",
    ) -> None:
        """Strict load: every expected key present with its shape, nothing unexpected, else one error listing all."""
        expected = self.expected_keys()
        state = dict(state)
        if self.config.tie_word_embeddings and "lm_head.weight" in state:
            lm_head = state.pop("lm_head.weight")
            embed = state.get("model.embed_tokens.weight")
            if embed is None or not torch.equal(lm_head, embed):
                raise ValueError(f"{source}: config ties lm_head to embed_tokens, but lm_head.weight differs")
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
            for k in set(expected) & set(state)
            if state[k].shape != expected[k]
        )
        if missing or unexpected or wrong:
            raise KeyError(
                f"checkpoint {source} does not match the Qwen2.5-VL module tree:\n"
                f"  missing keys ({len(missing)}): {missing}\n"
                f"  unexpected keys ({len(unexpected)}): {unexpected}\n"
                f"  wrong shapes ({len(wrong)}): {wrong}"
            )
        for k, v in state.items():  # one tensor at a time (a no-op when read at this dtype and device)
            state[k] = v.to(device=device, dtype=dtype)
            if not all_finite(state[k]):  # one NaN weight would make every logit NaN
                bad = int((~torch.isfinite(state[k])).sum())
                raise ValueError(
                    f"checkpoint {source}: tensor {k} holds {bad} non-finite value(s) (NaN or inf) in "
                    f"{state[k].numel()}: the weights are damaged"
                )
        self.load_state_dict(state, strict=False, assign=True)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # assign=True replaced the shared tensor
