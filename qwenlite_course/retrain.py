"""Retrain the shipped twin from its seed: `python -m qwenlite_course.retrain` (about 4 minutes on 2 cores).

The loop, the data and the loss are the model package's (`qwenlite.train`, read it there); this command only
builds the seeded twin, runs the recipe (`TrainSettings`' defaults), scores 256 held-out answers per question
and writes what training changed to `assets/trained_twin.safetensors`, with its record (recipe, accuracies,
loss curve, machine, sha256) in `assets/trained_twin.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from qwenlite.model import QwenLiteVL
from qwenlite.processor import Processor
from qwenlite.train import QUESTIONS, TrainSettings, accuracy, held_out, prepare, train, trained_state

from . import checkpoint


def _mean(values: Sequence[float]) -> float:
    return sum(values) / max(1, len(values))


def main(argv: Sequence[str] | None = None) -> None:
    """Retrain the twin from its seed; write assets/trained_twin.safetensors and its record, trained_twin.json."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--out", type=Path, default=checkpoint.TRAINED_TENSORS, help="the .safetensors to write")
    parser.add_argument("--held-out", type=int, default=256, help="examples per task to score")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    path = checkpoint.tiny_twin()
    model, processor = QwenLiteVL.from_pretrained(path), Processor.from_pretrained(path)
    settings = TrainSettings(steps=args.steps)
    prepare(model, settings)
    log = train(model, processor, settings)
    seconds = log[-1]["seconds"]
    tasks = tuple(dict.fromkeys(settings.tasks))  # each question once (a recipe may ask one more often)
    scores = {task: accuracy(model, processor, held_out(task, args.held_out)) for task in tasks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(model), args.out, metadata={"format": "pt"})
    facts = {
        "questions": [QUESTIONS[t] for t in tasks],
        "tasks": list(tasks),
        "held_out_accuracy": scores,
        "held_out_examples": args.held_out,
        "recipe": {k: v for k, v in vars(settings).items()},
        "train_seconds": round(seconds, 1),
        "final_loss": {t: round(_mean([r["loss"] for r in log[-30:] if r["task"] == t]), 4) for t in tasks},
        "loss_curve": [[r["step"], r["task"], round(r["loss"], 4)] for r in log],
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}",
        "sha256": checkpoint.file_sha256(args.out),
    }
    args.out.with_suffix(".json").write_text(json.dumps(facts, indent=1) + "\n")
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
