"""What the trained twin knows, measured: held-out accuracy in both libraries, attention on the evidence, ablations.

    python benchmarks/twin_report.py accuracy   [--n 256]   # qwenlite and transformers greedy answers, per task
    python benchmarks/twin_report.py attention  [--n 256]   # evidence share per decoder layer, seeded vs trained
    python benchmarks/twin_report.py ablation   [--steps 120,200] # when + colour, with and without time in the t ids
    python benchmarks/twin_report.py ablation_theta [--thetas 1e6,10,4]  # the shipped recipe at other rope_thetas
    python benchmarks/twin_report.py timing                 # seconds per training step, per task

Each prints a Markdown table (the README's and benchmarks/README.md's) and writes benchmarks/results/twin_<what>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from qwenlite import Processor, QwenLiteVL, get_rope_index
from qwenlite import train as T
from qwenlite_course import checkpoint

RESULTS = Path(__file__).parent / "results"


def models(trained: bool = True):
    path = checkpoint.trained_twin() if trained else checkpoint.tiny_twin()
    return path, QwenLiteVL.from_pretrained(path), Processor.from_pretrained(path)


def accuracy(n: int) -> dict:
    """Greedy answers of qwenlite and of transformers on the same held-out examples, and how often they agree.

    After a video transformers 5.x numbers the text by its own rule; it is run twice there: with its own
    `generate`, and stepped with the released rule's position ids (`greedy_with_positions`), the rule the twin
    was trained with.
    """
    from qwenlite_course.reference import greedy_with_positions, reference_model

    path, ours, processor = models()
    ref = reference_model(path)
    out = {}
    for task in T.TASKS:
        examples = T.held_out(task, n)
        ours_text, own_text, released_text = [], [], []
        for i in range(0, n, 64):
            chunk = examples[i : i + 64]
            inputs = T.make_batch(processor, chunk, with_answers=False)
            length = inputs["input_ids"].shape[1]
            new = 16
            a = ours.generate(**inputs, max_new_tokens=new, repetition_penalty=1.0)
            b = ref.generate(**inputs, max_new_tokens=new, do_sample=False, repetition_penalty=1.0)
            keys = ("input_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
            positions = get_rope_index(*(inputs.get(k) for k in keys), config=ours.config)[0]  # the released rule
            c = greedy_with_positions(ref, inputs, positions, new)
            for store, seq in ((ours_text, a), (own_text, b), (released_text, c)):
                store += [_cut(t) for t in processor.batch_decode(seq[:, length:], skip_special_tokens=False)]
        score = {
            name: sum(
                T.is_correct(task, ex.truth, T.parse_answer(task, t)) for ex, t in zip(examples, texts, strict=True)
            )
            / n
            for name, texts in (("qwenlite", ours_text), ("transformers", own_text), ("released", released_text))
        }
        score["equal answers (released rule)"] = sum(a == c for a, c in zip(ours_text, released_text, strict=True)) / n
        score["equal answers (transformers' own generate)"] = (
            sum(a == b for a, b in zip(ours_text, own_text, strict=True)) / n
        )
        out[task] = score
        print(task, score, flush=True)
    return out


def _cut(text: str) -> str:
    return text.split("<|im_end|>")[0]


def attention(n: int) -> dict:
    out = {}
    for trained in (False, True):
        _, model, processor = models(trained)
        for task in T.TASKS:
            ratio = T.evidence_attention(model, processor, T.held_out(task, n))
            out.setdefault(task, {})["trained" if trained else "seeded"] = [round(float(r), 2) for r in ratio]
            print(task, "trained" if trained else "seeded", out[task], flush=True)
    # the colour lesson: attention per colour after training
    _, model, processor = models(True)
    examples = T.held_out("colour", n)
    for colour in T.COLOURS:
        subset = [e for e in examples if e.truth == colour]
        out.setdefault("colour by colour", {})[colour] = [
            round(float(r), 2) for r in T.evidence_attention(model, processor, subset)
        ]
    print(out["colour by colour"])
    out["where, per answer query, layer 0"] = per_query("where", model, processor, T.held_out("where", min(n, 64)))
    print(out["where, per answer query, layer 0"])
    return out


@torch.no_grad()
def per_query(task: str, model, processor, examples) -> dict[str, float]:
    """train.evidence_attention's ratio in layer 0 for each answer query on its own, named by the token it chooses
    (every example of "where" has the same number of answer tokens): which tokens of the answer look at the shape."""
    ratios = T.evidence_attention(model, processor, examples, per_query=True)[0]  # layer 0: (answer queries,)
    labels = T.make_batch(processor, examples[:1])["labels"][0]
    chosen = labels[labels != T.IGNORE]  # the tokens the queries choose, in order
    names = [f"{i}: {processor.tokenizer.decode([int(t)])!r}" for i, t in enumerate(chosen)]
    return {name: round(float(r), 2) for name, r in zip(names, ratios, strict=True)}


def ablation(steps_list: Sequence[int], n: int) -> dict:
    """For each number of steps: the recipe on when + colour, twice: as it is, and with every temporal patch at
    the same t id.

    second_per_grid_ts = 0 makes get_rope_index give every temporal patch the same t (t = floor(k x 0 x 2));
    the vision tower never attends across time, so only the decoder could still tell the patches apart,
    by the order of the tokens. Colour does not depend on time: it is the control.
    """
    return {f"{steps} steps": _ablation(steps, n) for steps in steps_list}


def _ablation(steps: int, n: int) -> dict:
    out = {}
    make_batch = T.make_batch
    for name in ("as released", "flat t ids"):

        def batch(processor, examples, with_answers=True, _flat=name == "flat t ids"):
            inputs = make_batch(processor, examples, with_answers)
            if _flat and "second_per_grid_ts" in inputs:
                inputs["second_per_grid_ts"] = torch.zeros_like(inputs["second_per_grid_ts"])
            return inputs

        T.make_batch = batch
        try:
            _, model, processor = models(False)
            settings = T.TrainSettings(steps=steps, tasks=("when", "colour"))
            T.prepare(model, settings)
            log = T.train(model, processor, settings, progress=False)
            out[name] = {task: T.accuracy(model, processor, T.held_out(task, n)) for task in settings.tasks}
            out[name]["train seconds"] = round(log[-1]["seconds"], 1)
        finally:
            T.make_batch = make_batch
        print(name, out[name], flush=True)
    return out


def ablation_theta(n: int, thetas: Sequence[float]) -> dict:
    """The shipped recipe, all three questions, on the twin with other text rope_thetas (the real one is 1e6).

    For each: held-out accuracy, and the answer's attention on the evidence per decoder layer (evidence_attention).
    The shipped twin (rope_theta 2) is measured as shipped. At 1e6 the twin's h and w rotary pairs turn at most 0.03
    and 0.0002 rad a step (notebook 09, section 9): the decoder can no longer tell rows and columns apart, so "where"
    should fall. At 2 every pair turns 0.5-1 rad a step, so no pair is still across the picture: picking a token by
    what it shows, wherever it sits, gets harder (notebook 09's hypothesis for why looking at the marker falls).
    """
    import copy
    import tempfile

    def measure(model, processor) -> dict:
        run = {task: T.accuracy(model, processor, T.held_out(task, n)) for task in T.TASKS}
        for task in T.TASKS:
            ratios = T.evidence_attention(model, processor, T.held_out(task, n))
            run[f"{task} attention"] = [round(float(r), 2) for r in ratios]
        return run

    _, model, processor = models()
    out = {"2 (shipped)": measure(model, processor)}
    print(out, flush=True)
    for theta in thetas:
        config = copy.deepcopy(checkpoint.TWIN_CONFIG)
        config["text_config"]["rope_parameters"]["rope_theta"] = theta
        folder = Path(tempfile.mkdtemp()) / f"twin-rope-theta-{theta:g}"
        checkpoint._build_into(folder, lambda f, c=config: checkpoint.build_tiny_twin(f, config=c))
        model, processor = QwenLiteVL.from_pretrained(folder), Processor.from_pretrained(folder)
        assert model.config.text_config.rope_theta == theta
        settings = T.TrainSettings()
        T.prepare(model, settings)
        log = T.train(model, processor, settings, progress=False)
        out[f"{theta:g}"] = measure(model, processor) | {"train seconds": round(log[-1]["seconds"], 1)}
        print(f"{theta:g}", out[f"{theta:g}"], flush=True)
    return {"rope_theta": out}


def timing() -> dict:
    _, model, processor = models(False)
    out = {}
    for task in T.TASKS:
        settings = T.TrainSettings(steps=6, tasks=(task,))
        log = T.train(model, processor, settings, progress=False)
        out[task] = round((log[-1]["seconds"] - log[0]["seconds"]) / 5, 3)
        print(task, out[task], "s/step", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "attention", "ablation", "ablation_theta", "timing"])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--steps", default="120,200", help="ablation: training steps per run, comma-separated")
    parser.add_argument("--thetas", default="1e6,10,4", help="ablation_theta: text rope_thetas to train at")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    jobs = {
        "accuracy": lambda: accuracy(args.n),
        "attention": lambda: attention(args.n),
        "ablation": lambda: ablation([int(v) for v in args.steps.split(",")], args.n),
        "ablation_theta": lambda: ablation_theta(args.n, [float(t) for t in args.thetas.split(",")]),
        "timing": timing,
    }
    result = jobs[args.what]()
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["torch threads"] = torch.get_num_threads()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"twin_{args.what}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
