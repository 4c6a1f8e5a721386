"""The full-size dress rehearsal's builder and runner, on the tiny twin's config (seconds, not the 7.5 GB 3B).

`benchmarks/full_size.py build` must lay a checkpoint out exactly as huggingface_hub does (refs/main, blobs named
by their etag, snapshots of relative symlinks), so that `checkpoint.resolve()`, qwenlite and transformers all find
and load it offline as they would a real download; `run` must report a failing notebook.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from safetensors import safe_open

from qwenlite import QwenLiteConfig, QwenLiteVL, weights
from qwenlite_course import checkpoint

pytestmark = pytest.mark.slow  # the full-size rehearsal's builder and runner on a small snapshot: about 20 s

ROOT = Path(__file__).resolve().parents[1]
REPO = "Qwen/Qwen2.5-VL-3B-Instruct"
SHARDS = 3


@pytest.fixture(scope="module")
def full_size():
    spec = importlib.util.spec_from_file_location("full_size", ROOT / "benchmarks" / "full_size.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["full_size"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config_file() -> Path:
    return checkpoint.tiny_twin() / "config.json"


@pytest.fixture(scope="module")
def built(full_size, config_file, tmp_path_factory) -> tuple[Path, Path]:
    """(cache root, snapshot folder) of the twin's config built under the 3B's repo name."""
    root = tmp_path_factory.mktemp("hf")
    return root, full_size.build(root, config_file, REPO, SHARDS, log=lambda _: None)


@pytest.fixture()
def hf_home(monkeypatch, built):
    """The environment `run` gives its kernels: HF_HOME is the built cache, nothing else points elsewhere."""
    monkeypatch.setenv("HF_HOME", str(built[0]))
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "QWENLITE_DTYPE",
        "QWENLITE_DEVICE",
        "TOKENIZERS_PARALLELISM",
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # so that monkeypatch restores what run() sets
    monkeypatch.delenv("QWENLITE_CHECKPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return built[0]


def hub_etag(path: Path) -> str:
    """Written out independently of the builder: sha256 for LFS files, git's blob sha1 for the rest."""
    data = path.read_bytes()
    if path.suffix == ".safetensors" or path.name == "tokenizer.json":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def test_layout_is_the_hubs(built, config_file):
    from huggingface_hub import scan_cache_dir

    root, snap = built
    folder = root / "hub" / "models--Qwen--Qwen2.5-VL-3B-Instruct"
    commit = (folder / "refs" / "main").read_text()
    assert len(commit) == 40 and int(commit, 16) >= 0 and snap == folder / "snapshots" / commit
    assert [p.name for p in (folder / "snapshots").iterdir()] == [commit]
    names = sorted(p.name for p in snap.iterdir())
    shards = [f"model-{i:05d}-of-{SHARDS:05d}.safetensors" for i in range(1, SHARDS + 1)]
    assert names == sorted(
        [*shards, "model.safetensors.index.json", "config.json", "generation_config.json", "chat_template.json"]
        + ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "preprocessor_config.json"]
    )
    for p in snap.iterdir():
        target = os.readlink(p)
        assert target == f"../../blobs/{Path(target).name}", f"{p.name} -> {target} is not a relative blob link"
        assert Path(target).name == hub_etag(p), p.name
    assert sorted(p.name for p in (folder / "blobs").iterdir()) == sorted(
        Path(os.readlink(p)).name for p in snap.iterdir()
    )
    report = scan_cache_dir(root / "hub")  # huggingface_hub's own reading of the cache
    assert not report.warnings
    (repo,) = report.repos
    assert repo.repo_id == REPO and [(r.commit_hash, set(r.refs)) for r in repo.revisions] == [(commit, {"main"})]
    assert (snap / "config.json").read_bytes() == config_file.read_bytes()


def test_small_files(full_size, built):
    snap = built[1]
    assert json.loads((snap / "generation_config.json").read_text()) == full_size.GENERATION_CONFIG
    template = (ROOT / "qwenlite_course" / "assets" / "chat_template.jinja").read_text()
    assert json.loads((snap / "chat_template.json").read_text()) == {"chat_template": template}
    assert json.loads((snap / "tokenizer_config.json").read_text())["chat_template"] == template


def test_shards_and_index_agree(full_size, built, config_file):
    snap = built[1]
    index = json.loads((snap / "model.safetensors.index.json").read_text())
    assert set(index) == {"metadata", "weight_map"}
    with torch.device("meta"):
        expected = QwenLiteVL(QwenLiteConfig.from_pretrained(config_file)).expected_keys()
    assert "lm_head.weight" not in expected  # tied: the hub's 3B does not store it either
    seen, total = {}, 0
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(snap / shard), framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                t = f.get_slice(key)
                assert t.get_dtype() == "BF16", key
                assert index["weight_map"][key] == shard and key not in seen
                seen[key] = torch.Size(t.get_shape())
                total += seen[key].numel() * 2
    assert seen == dict(expected) and index["metadata"]["total_size"] == total


def test_weights_recipe(full_size, built, config_file):
    """Norm weights around 1, biases around 0, and the massive-activation channels stand out in the embedding."""
    state = weights.load_state_dict(built[1])
    config = QwenLiteConfig.from_pretrained(config_file)
    assert abs(float(state["model.norm.weight"].float().mean()) - 1) < 0.05
    assert abs(float(state["visual.blocks.0.attn.qkv.bias"].float().mean())) < 0.05
    recipe = full_size.Recipe(REPO, "", SHARDS)
    embed = state["model.embed_tokens.weight"].float().std(0)  # (D,) per-channel spread
    channels = full_size.massive_channels(config.text_config.hidden_size, recipe)
    others = embed[[i for i in range(embed.numel()) if i not in channels]]
    assert float(embed[channels].min()) > 100 * float(others.max())
    patch = state["visual.patch_embed.proj.weight"].float().flatten(1).std(1)  # (vision width,)
    assert float(patch[full_size.massive_channels(config.vision_config.hidden_size, recipe)].min()) > 20 * float(
        patch.median()
    )


def test_both_models_load_the_snapshot(built, hf_home):
    from transformers import Qwen2_5_VLForConditionalGeneration

    snap = built[1]
    assert checkpoint.find_hf_snapshot() == snap and checkpoint.resolve() == snap
    ours = QwenLiteVL.from_pretrained(snap, dtype=torch.bfloat16)
    theirs = Qwen2_5_VLForConditionalGeneration.from_pretrained(snap, local_files_only=True, dtype=torch.bfloat16)
    assert ours.model.embed_tokens.weight.dtype == torch.bfloat16 and theirs.dtype == torch.bfloat16
    assert torch.equal(ours.visual.blocks[0].attn.qkv.weight, theirs.model.visual.blocks[0].attn.qkv.weight)
    assert theirs.lm_head.weight.data_ptr() == theirs.model.language_model.embed_tokens.weight.data_ptr()
    assert ours.generation_config.eos_token_id == (151645, 151643)  # read from the hub's generation_config.json
    assert ours.generation_config.repetition_penalty == 1.05


def test_rebuild_is_skipped_and_foreign_folders_left_alone(full_size, built, config_file, tmp_path):
    root, snap = built
    blobs = {p.name: p.stat().st_mtime_ns for p in (snap.parent.parent / "blobs").iterdir()}
    messages = []
    assert full_size.build(root, config_file, REPO, SHARDS, log=messages.append) == snap
    assert "nothing to do" in messages[0]
    assert {p.name: p.stat().st_mtime_ns for p in (snap.parent.parent / "blobs").iterdir()} == blobs
    foreign = tmp_path / "hub" / "models--Qwen--Qwen2.5-VL-3B-Instruct" / "snapshots" / "real"
    foreign.mkdir(parents=True)  # a real download, say: never deleted
    with pytest.raises(SystemExit, match="not built by"):
        full_size.build(tmp_path, config_file, REPO, SHARDS, log=lambda _: None)
    assert foreign.is_dir()


@pytest.mark.parametrize("n", [1, 2, 5])
def test_split_fills_every_shard_in_key_order(full_size, n):
    shapes = {"big": torch.Size([1000, 10]), **{f"k{i}": torch.Size([10 + i]) for i in range(6)}}
    shards = full_size.split(shapes, n)
    assert len(shards) == n and all(shards) and sum(shards, []) == list(shapes)


def test_run_reports_time_memory_and_failures(full_size, built, hf_home, tmp_path, capsys):
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    code = (  # the banner's checkpoint line, without the banner's transformers import
        "import os\nfrom qwenlite_course import checkpoint\n"
        "print('checkpoint:', checkpoint.describe(checkpoint.resolve()))\n"
        "assert os.environ['QWENLITE_DTYPE'] == 'bfloat16' and os.environ['QWENLITE_DEVICE'] == 'cpu'"
    )
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), good)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")]), bad)
    assert not full_size.run(hf_home, "3b", "bfloat16", [good, bad], timeout=60, save_to=tmp_path / "out")
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.startswith(("good", "bad"))}
    assert rows["good"][-1] == "pass" and float(rows["good"][2]) > 0.01  # a kernel with torch: tens of MB at least
    assert rows["bad"][4:] == ["FAIL", "ValueError:", "boom"]
    (total,) = [line.split() for line in table.splitlines() if line.startswith("all 2 ")]  # the summary line
    assert float(total[4]) == pytest.approx(float(rows["good"][1]) + float(rows["bad"][1]), abs=0.11)
    assert float(total[5]) == max(float(rows["good"][2]), float(rows["bad"][2]))  # the largest peak
    executed = nbformat.read(tmp_path / "out" / "good.ipynb", as_version=4)
    assert full_size.reported_checkpoint(executed) == str(built[1])  # the kernel found the snapshot too


def test_probe_checks_the_whole_model_on_the_snapshot(full_size, built, hf_home, tmp_path, capsys):
    """`run --probe`: both models on one read of the snapshot, end_to_end_rows on a small photo, in bfloat16."""
    probe = full_size.write_probe(tmp_path / "probe")
    assert full_size.run(hf_home, "3b", "bfloat16", [probe], timeout=300, save_to=tmp_path / "out")
    assert "probe" in capsys.readouterr().out
    executed = nbformat.read(tmp_path / "out" / "probe.ipynb", as_version=4)
    printed = "".join(out.get("text", "") for cell in executed.cells for out in cell.get("outputs", []))
    assert "decode step logits (KV cache)" in printed and "bfloat16: |ours - ref| <=" in printed
