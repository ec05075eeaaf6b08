"""How a run's cases are split, defined once: training vs held-out validation cases (:func:`split_cases`,
or the split a Step-1 checkpoint recorded: :func:`split_by_names`), extra Step-1 images that must not be
validation cases (:func:`check_unlabeled`), and ``lwi experiment``'s draws of K training cases and its
test cases (:func:`draw_training_cases`, :func:`hold_out`).

Held-out cases: the ``validation`` list of dataset.json, else an automatic split by ``seed``
(``val_fraction`` of the cases, at least one) when there are 3 or more cases; with 1 or 2 cases
everything is trained on and the last model is the result. ``val_fraction`` None (the default of
``lwi train``): :data:`DEFAULT_VAL_FRACTION` from :data:`SMALL_DATA_CASES` cases on, none below.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from lwi.errors import LWIError
from lwi.names import PathLike

TEST_DRAW_SEED = 0  # the held-out test cases (test_cases=N) are the same for every seed and K
#: The share of cases held out for validation by default, from :data:`SMALL_DATA_CASES` cases on.
DEFAULT_VAL_FRACTION = 0.2
#: Below this many cases none is held out by default: every case is trained on and the last model is
#: the result. Measured with 5 cases (docs/evidence.md, section 3: training all five was ahead of holding
#: one out to pick the best model, on 2 of 3 draws and level on the third); 6 to 9 cases follow it.
SMALL_DATA_CASES = 10


def split_cases(dataset: Any, seed: int, val_fraction: Optional[float]) -> Tuple[List[Any], List[Any], str]:
    """``(training cases, held-out cases, a sentence saying how)`` (see the module docstring)."""
    cases = list(dataset.cases)
    if dataset.validation:
        train, held = dataset.split()
        if not train:
            raise LWIError("Every case is listed under 'validation' in dataset.json; nothing is left to train on.")
        return train, held, f"Validating on the {len(held)} case(s) listed in dataset.json."
    few = val_fraction is None and len(cases) < SMALL_DATA_CASES
    if val_fraction is None:
        val_fraction = 0.0 if few else DEFAULT_VAL_FRACTION
    if len(cases) <= 2 or val_fraction <= 0:
        why = ("only 1 or 2 cases" if len(cases) <= 2 else
               f"fewer than {SMALL_DATA_CASES} cases: each is worth more in training; --val-fraction 0.2 holds some out"
               if few else "no validation split asked for")
        return cases, [], (
            f"Training on all {len(cases)} case(s) without validation ({why}); the result is the last model."
        )
    n_held = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    names = sorted(c.name for c in cases)
    held_names = set(random.Random(seed).sample(names, n_held))
    train = [c for c in cases if c.name not in held_names]
    held = [c for c in cases if c.name in held_names]
    return train, held, (
        f"Holding out {len(held)} of {len(cases)} cases for validation ({', '.join(sorted(held_names))}); "
        "add a 'validation' list to dataset.json to choose them."
    )


def split_by_names(dataset: Any, held_names: Sequence[str]) -> Tuple[List[Any], List[Any], str]:
    """The split a Step-1 checkpoint recorded (``held_names``), refused when this dataset differs:
    a held-out case missing, or dataset.json's validation list naming other cases."""
    names = {c.name for c in dataset.cases}
    held_names = sorted(str(n) for n in held_names)
    missing = [n for n in held_names if n not in names]
    if missing:
        raise LWIError(
            f"Step 1 held out {', '.join(missing)} for validation, but this dataset has no such case: the data "
            "changed since Step 1. Fine-tune on the dataset Step 1 used, or run Step 1 again on this one."
        )
    if dataset.validation is not None and sorted(dataset.validation) != held_names:
        raise LWIError(
            f"dataset.json lists {', '.join(sorted(dataset.validation))} for validation, but Step 1 held out "
            f"{', '.join(held_names) or 'no case'} (it trained on the others): the data changed since Step 1. "
            "Use the same validation list, or run Step 1 again."
        )
    held = [c for c in dataset.cases if c.name in held_names]
    train = [c for c in dataset.cases if c.name not in held_names]
    if not held:
        return train, [], f"Training on all {len(train)} case(s) without validation, as Step 1 did."
    return train, held, f"Validating on the {len(held)} case(s) Step 1 held out ({', '.join(held_names)})."


def image_digest(path: PathLike) -> str:
    """SHA-256 of an image file's bytes (a DICOM series folder: of its files' bytes in name order), so
    the same image under another name or path is recognised."""
    import hashlib

    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def same_images(images: Sequence[Any], cases: Sequence[Any]) -> List[Any]:
    """The cases of ``images`` that are one of ``cases``: the same name, file or content."""
    names = {c.name for c in cases}
    files = {Path(c.image).resolve() for c in cases}
    digests = None
    found = []
    for image in images:
        if image.name in names or Path(image.image).resolve() in files:
            found.append(image)
            continue
        if digests is None:  # hashing only when names and paths did not already decide
            digests = {image_digest(c.image) for c in cases}
        if image_digest(image.image) in digests:
            found.append(image)
    return found


def distinct_unlabeled(unlabeled: Sequence[Any], train: Sequence[Any]) -> Tuple[List[Any], int]:
    """``unlabeled`` without the training cases' own images and without repeats (same file or
    content): each image enters Step 1 once. Returns (kept, number dropped)."""
    repeated = {id(c) for c in same_images(unlabeled, train)} if unlabeled else set()
    kept, seen = [], set()
    for image in unlabeled:
        key = image_digest(image.image)
        if id(image) in repeated or key in seen:
            continue
        seen.add(key)
        kept.append(image)
    return kept, len(unlabeled) - len(kept)


def check_unlabeled(unlabeled: Sequence[Any], held: Sequence[Any]) -> None:
    """Refuse extra Step-1 images that are held-out validation cases (by name, file or content)."""
    clash = sorted(c.name for c in same_images(unlabeled, held)) if held else []
    if clash:
        raise LWIError(
            f"The unlabelled image(s) {', '.join(clash)} are held-out validation cases: Step 1 would see the images "
            "validation is scored on. Remove them from the --unlabeled folder (or give --unlabeled a folder without them)."
        )


def draw_training_cases(pool: Sequence[str], k: int, seed: int) -> List[str]:
    """The K case names of draw ``seed``: the first K of the pool shuffled by ``seed`` (nested in K)."""
    if k > len(pool):
        raise LWIError(f"K={k} is more than the {len(pool)} cases available for training.")
    order = sorted(pool)
    random.Random(seed).shuffle(order)
    return sorted(order[:k])


def hold_out(names: Sequence[str], n: int) -> List[str]:
    """``n`` test cases drawn once (fixed seed) from ``names``."""
    if not 1 <= n < len(names):
        raise LWIError(f"--test-cases must be between 1 and {len(names) - 1} for {len(names)} cases, got {n}.")
    return sorted(random.Random(TEST_DRAW_SEED).sample(sorted(names), n))
