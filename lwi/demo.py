"""``lwi demo``: the whole pipeline end to end on synthetic abdominal CT phantoms, CPU friendly.

1. Write a small phantom dataset (:mod:`lwi.data.phantoms`; seeded, so every run is the same).
2. Train two models with the same network and the same total number of iterations: ``lwi``
   (Step 1 self-supervised initialisation, then Step 2 fine-tuning) and ``scratch`` (Step 2 alone).
3. Segment a phantom that neither model saw and compare both with its ground truth (Dice per label).

Everything lands in one folder: the dataset, both model bundles, the unseen phantom, both
segmentations and ``demo.json``. The settings are small so that the demo runs in a few minutes
on a 2-core CPU; ``quick`` shrinks them further (a smoke test of the pipeline, not of accuracy).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from lwi.progress import Progress

STRATEGIES = ("lwi", "scratch")

# A small SegResNet: convolutions are cheap on a CPU, and at a 32^3 crop its bottleneck grid has
# 4 axial slots, so Step 1's order prediction has a real task (4! orderings).
_NETWORK = {
    "arch": "segresnet",
    "arch_params": {"init_filters": 8, "blocks_down": [1, 1, 1, 1], "blocks_up": [1, 1, 1]},
    "roi": (32, 32, 32),
    "cube_size": 8,
}

FULL = {
    "phantom_shape": (48, 48, 32),
    "phantom_spacing": (4.0, 4.0, 5.0),
    "cases": 6,
    "training": {
        **_NETWORK,
        "pretrain_epochs": 25,
        "epochs": 75,
        "batch_size": 2,
        "iterations_per_epoch": 4,
        "lr": 1e-3,
        "val_every": 15,
        "sw_batch_size": 4,
    },
}

QUICK = {
    "phantom_shape": (32, 32, 24),
    "phantom_spacing": (6.0, 6.0, 6.5),
    "cases": 3,
    "training": {
        **_NETWORK,
        "roi": (16, 16, 16),
        "pretrain_epochs": 2,
        "epochs": 3,
        "batch_size": 1,
        "iterations_per_epoch": 2,
        "lr": 3e-3,
        "val_every": 3,
        "sw_batch_size": 4,
    },
}


def demo_settings(quick: bool = False, cases: Optional[int] = None) -> Dict[str, Any]:
    """The demo's settings (a fresh copy): phantom size and spacing, number of cases, training options."""
    base = QUICK if quick else FULL
    settings = json.loads(json.dumps(base))  # deep copy; tuples become lists
    if cases is not None:
        settings["cases"] = int(cases)
    return settings


def estimate_bytes(quick: bool = False, cases: Optional[int] = None) -> int:
    """An upper estimate of what the demo writes: the phantoms uncompressed (float32 image and label
    map) and four model files (best and resumable state of two strategies) of at most 50 MB each."""
    settings = demo_settings(quick, cases)
    voxels = 1
    for n in settings["phantom_shape"]:
        voxels *= int(n)
    return (max(0, settings["cases"]) + 1) * voxels * 5 + 4 * 50_000_000


def run_demo(
    out_dir: Union[str, Path],
    device: Any = "auto",
    seed: int = 0,
    cases: Optional[int] = None,
    quick: bool = False,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """Run the demo into ``out_dir``; return ``{"labels", "dice": {strategy: {label: Dice}}, ...}``.

    Args:
        out_dir: the folder for everything the demo writes (existing demo files are replaced).
        device: "auto", "cpu", "cuda" or "cuda:N".
        seed: phantom and training seed.
        cases: number of training phantoms (below 10 all are trained on, as lwi train does: lwi.data.split).
        quick: tiny settings, for a smoke test.
        progress: where progress goes (silent by default).
    """
    from lwi.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset
    from lwi.errors import LWIError
    from lwi.evaluation import evaluate_pair
    from lwi.inference import Segmenter
    from lwi.io import write_sitk_atomic
    from lwi.labelmap import write_labelmap
    from lwi.strategies import train

    progress = progress or Progress("none")
    settings = demo_settings(quick, cases)
    if settings["cases"] < 1:
        raise LWIError("The demo needs at least 1 training phantom.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shape, spacing = settings["phantom_shape"], settings["phantom_spacing"]
    timings: Dict[str, float] = {}

    start = time.monotonic()
    data = write_phantom_dataset(out / "data", settings["cases"], seed=seed, shape=shape, spacing=spacing)
    # The dataset holds phantoms seed .. seed + cases - 1, so this one is new to both models.
    test_seed = seed + settings["cases"]
    image, truth = make_phantom(test_seed, shape=shape, spacing=spacing)
    write_sitk_atomic(image, out / "unseen_image.nii.gz")
    write_sitk_atomic(truth, out / "unseen_label.nii.gz")
    timings["data"] = time.monotonic() - start
    progress.log(
        f"Wrote {settings['cases']} phantoms to {data} and an unseen phantom (seed {test_seed}) to {out}."
    )

    models: Dict[str, str] = {}
    summaries: Dict[str, Any] = {}
    for strategy in STRATEGIES:
        start = time.monotonic()
        path = out / f"{strategy}.lwi.safetensors"
        progress.log(f"Training the {strategy} model ...")
        summary = train(
            data, path, strategy=strategy, device=device, overwrite=True, progress=progress, seed=seed,
            **settings["training"],
        )
        timings[strategy] = time.monotonic() - start
        models[strategy] = str(path)
        summaries[strategy] = {k: v for k, v in summary.items() if k in ("iterations", "validation_dice")}

    dice: Dict[str, Dict[str, Optional[float]]] = {}
    segmentations: Dict[str, str] = {}
    for strategy, path in models.items():
        start = time.monotonic()
        segmenter = Segmenter(path, device=device, progress=progress)
        result = segmenter.segment(image)
        seg_path = out / f"{strategy}_segmentation.seg.nrrd"
        write_labelmap(result.label, seg_path, segmenter.labels)
        segmentations[strategy] = str(seg_path)
        dice[strategy] = evaluate_pair(result.label, truth, PHANTOM_LABELS)["dice"]
        timings[f"segment_{strategy}"] = time.monotonic() - start

    labels: List[str] = [name for value, name in sorted(PHANTOM_LABELS.items()) if value != 0]
    report = {
        "labels": labels,
        "dice": dice,
        "mean_dice": {s: _mean(dice[s].values()) for s in dice},
        "models": models,
        "segmentations": segmentations,
        "unseen_phantom_seed": test_seed,
        "training": summaries,
        "settings": settings,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    from lwi.evaluation import write_json

    write_json(report, out / "demo.json")
    return report


def _mean(values: Any) -> Optional[float]:
    good = [float(v) for v in values if v is not None]
    return sum(good) / len(good) if good else None


def format_dice_table(report: Dict[str, Any]) -> str:
    """The per-label Dice of both models as a plain-text table."""
    strategies = list(report["dice"])
    width = max(len(n) for n in report["labels"] + ["label", "mean"])
    header = f"{'label':<{width}}" + "".join(f"  {s.upper() if s == 'lwi' else s:>8}" for s in strategies)
    lines = [header, "-" * len(header)]

    def cell(value: Optional[float]) -> str:
        return f"  {'n/a' if value is None else f'{value:.3f}':>8}"

    for name in report["labels"]:
        lines.append(f"{name:<{width}}" + "".join(cell(report["dice"][s].get(name)) for s in strategies))
    lines.append("-" * len(header))
    lines.append(f"{'mean':<{width}}" + "".join(cell(report["mean_dice"][s]) for s in strategies))
    return "\n".join(lines)
