"""The course beside the model: what the notebooks use to check, draw, grade and find a checkpoint.

`qwenlite` is the model (import it anywhere); this package imports it, never the reverse:
- `checkpoint`: find a real Qwen2.5-VL checkpoint, else build the tiny twin (seeded, or trained: `assets/`)
- `retrain`: `python -m qwenlite_course.retrain` retrains the shipped twin from its seed
- `reference`: load transformers' model on the same weights, capture its intermediates, the tolerance policy
- `cpu_bfloat16`: bfloat16 products through float32's kernel, for CPUs without a bfloat16 unit
- `viz`: figures and ipywidgets explorers, one module per stage
- `exercises`: each notebook's exercises and their grading
"""
