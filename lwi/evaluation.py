"""Segmentation quality: Dice and 95% Hausdorff distance per label, with MONAI's metrics.

Conventions (what users of nnU-Net and MONAI expect):
- Dice is ``None`` (not counted in means) when a label is absent from both the reference and the
  prediction, and 0 when only one of them has it.
- HD95 is in millimetres (the reference's spacing), ``None`` when neither side has the label, and the
  reference image's diagonal (``hd95_penalty``, the largest distance possible inside the image) when
  only one side has it: a method that misses a structure must not get a better mean HD95 for it.
  Such labels are listed per case under ``hd95_penalized`` and counted per label in ``hd95_penalized``
  of :func:`summarize`.
- Means are over the cases where the value is defined.
- Each case also has its uncertainty score (:func:`lwi.inference.uncertainty_score`: the mean
  normalised softmax entropy inside the predicted structures); over several cases the table states
  the Spearman rank correlation between that score and the case's mean Dice (negative: the score
  ranks worse segmentations as less certain, which is what a user correcting the least certain
  first relies on).

Each label is measured inside the bounding box of its voxels in either image (plus a one-voxel margin),
which gives the same Dice and surface distances as the whole volume at a fraction of the cost.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

PathLike = Union[str, "os.PathLike[str]"]


def _same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * max(1.0, max(map(abs, a.GetSpacing()))))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def _union_box(pred: np.ndarray, truth: np.ndarray, margin: int = 1) -> Optional[tuple]:
    """Slices of the bounding box of ``pred | truth`` grown by ``margin`` voxels (None if both empty)."""
    box = None
    for mask in (pred, truth):
        idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != d))) for d in range(mask.ndim)]
        if idx[0].size == 0:
            continue
        lo = [int(i[0]) for i in idx]
        hi = [int(i[-1]) for i in idx]
        box = (lo, hi) if box is None else ([min(a, b) for a, b in zip(box[0], lo)], [max(a, b) for a, b in zip(box[1], hi)])
    if box is None:
        return None
    return tuple(
        slice(max(0, lo - margin), min(n, hi + margin + 1)) for lo, hi, n in zip(box[0], box[1], pred.shape)
    )


def evaluate_pair(
    prediction: sitk.Image, reference: sitk.Image, labels: Mapping[int, str]
) -> Dict[str, Dict[str, Optional[float]]]:
    """Dice and HD95 of ``prediction`` against ``reference`` for every label value in ``labels``.

    The prediction is compared on the reference's grid (resampled by nearest neighbour only if the
    grids differ). Returns ``{"dice": {name: value}, "hd95": {name: value}, "hd95_penalty": mm,
    "hd95_penalized": [names of labels only one side has]}``.
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if not _same_grid(prediction, reference):
        prediction = sitk.Resample(prediction, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    # [z, y, x] arrays reversed to [x, y, z] so the spacing order is ITK's (x, y, z).
    pred = sitk.GetArrayViewFromImage(prediction).transpose(2, 1, 0)
    truth = sitk.GetArrayViewFromImage(reference).transpose(2, 1, 0)
    spacing = [float(s) for s in reference.GetSpacing()]
    penalty = image_diagonal(reference)
    penalized: List[str] = []
    dice: Dict[str, Optional[float]] = {}
    hd95: Dict[str, Optional[float]] = {}
    for value, name in sorted((int(k), str(v)) for k, v in labels.items()):
        if value == 0:
            continue
        p_mask = pred == value
        t_mask = truth == value
        box = _union_box(p_mask, t_mask)
        if box is None:
            dice[name], hd95[name] = None, None
            continue
        p = torch.from_numpy(np.ascontiguousarray(p_mask[box]))[None, None]
        t = torch.from_numpy(np.ascontiguousarray(t_mask[box]))[None, None]
        dice[name] = float(compute_dice(p.float(), t.float(), include_background=True, ignore_empty=False)[0, 0])
        if p_mask.any() and t_mask.any():
            with warnings.catch_warnings():  # MONAI's own internal deprecation notice; nothing a user can act on
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=spacing)
            hd95[name] = float(hd[0, 0])
        else:
            hd95[name] = penalty
            penalized.append(name)
    return {"dice": dice, "hd95": hd95, "hd95_penalty": penalty, "hd95_penalized": penalized}


def image_diagonal(image: sitk.Image) -> float:
    """The length in mm of the diagonal of the image's extent (size x spacing)."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(image.GetSize(), image.GetSpacing()))))


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    good = [v for v in values if v is not None and not math.isnan(v) and not math.isinf(v)]
    return float(sum(good) / len(good)) if good else None


def case_mean_dice(case: Mapping[str, Any]) -> Optional[float]:
    """A case's Dice averaged over the labels where it is defined."""
    return _mean(list(case["dice"].values()))


def uncertainty_dice_correlation(cases: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """Spearman's rank correlation between the cases' uncertainty scores and their mean Dice (None with
    fewer than 3 cases that have both, or when either is constant)."""
    from scipy.stats import spearmanr

    pairs = [(c.get("uncertainty"), case_mean_dice(c)) for c in cases]
    pairs = [(u, d) for u, d in pairs if u is not None and d is not None]
    if len(pairs) < 3 or len({u for u, _ in pairs}) < 2 or len({d for _, d in pairs}) < 2:
        return None
    rho = float(spearmanr([u for u, _ in pairs], [d for _, d in pairs])[0])
    return None if math.isnan(rho) else rho


def summarize(cases: List[Dict[str, Any]], labels: Mapping[int, str]) -> Dict[str, Any]:
    """Per-label means over ``cases`` (each ``{"case", "dice", "hd95"}``, optionally ``"uncertainty"``)
    and the means over labels; with uncertainty scores, their mean and their rank correlation with
    the cases' mean Dice (:func:`uncertainty_dice_correlation`)."""
    names = [str(labels[k]) for k in sorted(labels, key=int) if int(k) != 0]
    mean = {
        metric: {name: _mean([c[metric].get(name) for c in cases]) for name in names} for metric in ("dice", "hd95")
    }
    return {
        "labels": {str(k): str(labels[k]) for k in sorted(labels, key=int) if int(k) != 0},
        "cases": cases,
        "hd95_penalized": {name: sum(name in (c.get("hd95_penalized") or ()) for c in cases) for name in names},
        "mean": mean,
        "mean_dice": _mean(list(mean["dice"].values())),
        "mean_hd95": _mean(list(mean["hd95"].values())),
        "mean_uncertainty": _mean([c.get("uncertainty") for c in cases]),
        "uncertainty_dice_spearman": uncertainty_dice_correlation(cases),
    }


def subset_means(results: Mapping[str, Any], values: Sequence[int]) -> Dict[str, Any]:
    """The means over a subset of label ``values`` (e.g. Synapse's 8 organs {1, 2, 3, 4, 6, 7, 8, 11}):
    ``{"labels": [names], "mean_dice", "mean_hd95"}`` from the per-label means of :func:`summarize`."""
    from lwi.errors import LWIError

    names = results["labels"]
    missing = [v for v in values if str(int(v)) not in names]
    if missing:
        raise LWIError(f"--labels {missing} are not label values of the model; it has {sorted(int(k) for k in names)}.")
    chosen = [names[str(int(v))] for v in values]
    return {
        "labels": chosen,
        "mean_dice": _mean([results["mean"]["dice"].get(n) for n in chosen]),
        "mean_hd95": _mean([results["mean"]["hd95"].get(n) for n in chosen]),
    }


def _fmt(value: Optional[float], digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(results: Dict[str, Any]) -> str:
    """A plain-text table: one row per case and label (Dice, HD95 mm; the case's uncertainty score on
    its first row), then the per-label means and the score's rank correlation with Dice."""
    names = list(results["labels"].values())
    width = max([len(n) for n in names] + [len("all labels")])
    case_width = max([len(str(c["case"])) for c in results["cases"]] + [4])
    lines = [f"{'case':<{case_width}}  {'label':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'uncertainty':>11}"]
    lines.append("-" * len(lines[0]))
    for case in results["cases"]:
        for i, name in enumerate(names):
            score = _fmt(case.get("uncertainty"), 4) if i == 0 else ""
            lines.append(
                f"{case['case']:<{case_width}}  {name:<{width}}  {_fmt(case['dice'].get(name), 4):>6}  "
                f"{_fmt(case['hd95'].get(name), 2):>8}  {score:>11}"
            )
    lines.append("-" * len(lines[0]))
    for name in names:
        lines.append(
            f"{'mean':<{case_width}}  {name:<{width}}  {_fmt(results['mean']['dice'][name], 4):>6}  "
            f"{_fmt(results['mean']['hd95'][name], 2):>8}"
        )
    lines.append(
        f"{'mean':<{case_width}}  {'all labels':<{width}}  {_fmt(results['mean_dice'], 4):>6}  "
        f"{_fmt(results['mean_hd95'], 2):>8}  {_fmt(results.get('mean_uncertainty'), 4):>11}"
    )
    rho = results.get("uncertainty_dice_spearman")
    if rho is not None:
        lines.append(
            f"Spearman rank correlation of the uncertainty score with the case's mean Dice: {rho:+.3f} "
            "(negative: less certain cases are segmented worse)"
        )
    return "\n".join(lines)


def write_json(results: Dict[str, Any], path: PathLike, option: str = "--json") -> Path:
    """Write the results as JSON (atomically; ``None`` where a value is undefined)."""
    from lwi.outputs import write_text
    from lwi.progress import clean_fields

    return write_text(path, json.dumps(clean_fields(results), indent=2) + "\n", option)


def compare_labels(model: Mapping[int, str], data: Mapping[int, str]) -> List[str]:
    """Check that a model's labels can be scored on a dataset's; returns warnings to show.

    Refused (:class:`LWIError`): the dataset has label values the model cannot predict (their Dice
    would be 0 whatever the model does), or the two share no label at all. Warned: values the model
    predicts but the dataset does not have (scored against an empty reference), and shared values
    whose names differ (values are compared).
    """
    from lwi.errors import LWIError

    model_values = {int(v) for v in model if int(v) != 0}
    data_values = {int(v) for v in data if int(v) != 0}
    unknown = sorted(data_values - model_values)
    if unknown or not (model_values & data_values):
        raise LWIError(
            f"The dataset's label values {sorted(data_values)} do not match the model's {sorted(model_values)}"
            + (f" (the model cannot predict {unknown})" if unknown else "")
            + "; evaluate with a model trained for these labels, or fix the labels in dataset.json."
        )
    notes = []
    extra = sorted(model_values - data_values)
    if extra:
        notes.append(
            f"The dataset does not declare label value(s) {extra} that the model predicts; "
            "they are scored against an empty reference."
        )
    renamed = [v for v in sorted(model_values & data_values) if str(data[v]).lower() != str(model[v]).lower()]
    if renamed:
        notes.append(
            "Label names differ between model and dataset for value(s) "
            + ", ".join(f"{v} ({model[v]} vs {data[v]})" for v in renamed)
            + "; values are compared."
        )
    return notes


def evaluate_dataset(
    segmenter: Any,
    dataset: Any,
    progress: Any = None,
    largest_component: bool = False,
    predictions_dir: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Segment every case of a labelled dataset and score it against its label map.

    Args:
        segmenter: a :class:`lwi.inference.Segmenter`.
        dataset: a :class:`lwi.data.dataset.Dataset` (``load_dataset(dir, require_labels=True)``).
        progress: a :class:`lwi.progress.Progress` for messages (optional).
        largest_component: post-process as ``lwi segment --largest-component`` does.
        predictions_dir: also write each prediction there as ``<case>.seg.nrrd``.

    Returns:
        :func:`summarize` of the per-case results, scored on the model's labels.
    """
    from lwi.io import read_image

    labels = {info.value: info.name for info in segmenter.labels}
    for note in compare_labels(labels, dataset.labels):
        if progress is not None:
            progress.log(note)
    cases = []
    for n, case in enumerate(dataset.cases, start=1):
        image = read_image(case.image)
        reference = read_image(case.label)
        result = segmenter.segment(image, largest_component=largest_component, return_uncertainty=True)
        if predictions_dir is not None:
            from lwi.labelmap import write_labelmap

            write_labelmap(result.label, Path(predictions_dir) / f"{case.name}.seg.nrrd", segmenter.labels)
        scores = evaluate_pair(result.label, reference, labels)
        cases.append({"case": case.name, **scores, "uncertainty": result.uncertainty_score})
        if progress is not None:
            scored = [v for v in scores["dice"].values() if v is not None]
            mean = f"{sum(scored) / len(scored):.4f}" if scored else "n/a"
            progress.log(f"[{n}/{len(dataset.cases)}] {case.name}: mean Dice {mean}")
            progress.emit(
                "progress", stage="evaluate", case=case.name, done=n, total=len(dataset.cases),
                fraction=n / len(dataset.cases), **scores, uncertainty=result.uncertainty_score,
            )
    return summarize(cases, labels)
