"""One training run: its validated dataset, the split into training and held-out cases, its
preprocessing and case caches (:class:`Run`), and what every run does the same way: refuse to
replace earlier results or read the run to resume (:func:`resumed_settings`) and summarise the
result (:func:`public_summary`).

The held-out cases (:mod:`lwi.data.split`) are also left out of Step 1, so validation Dice is
measured on images the network has never seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lwi.data.split import check_unlabeled, distinct_unlabeled, split_by_names, split_cases
from lwi.errors import LWIError
from lwi.names import LAST_INFIX, derived_path
from lwi.progress import Progress
from lwi.strategies.settings import Settings, make_settings, step1_iterations, step2_iterations

PathLike = Union[str, Path]


def check_outputs(
    run: Run, model: Optional[Path], checkpoints: Sequence[Path], overwrite: bool, resume: bool = False,
    checked: bool = False,
) -> None:
    """A run's files checked before any work (:func:`lwi.outputs.check_outputs`): the ``model``
    bundle (if any) and resumable ``checkpoints`` are not folders, are writable, are not replaced
    without ``overwrite`` (``resume`` continues them), and there is room for each.

    ``checked``: the command already checked and locked them before planning
    (:func:`lwi.commands.training_options.run_command`); only the room, known once the network is, is
    checked here."""
    from lwi import distributed
    from lwi.outputs import Output, check_space
    from lwi.outputs import check_outputs as check

    if not distributed.is_main():
        return  # under torchrun rank 0 alone writes, so it alone checks (no probe file from the others)
    estimate = 3 * run.weight_bytes()  # weights + AdamW's two moments: the largest file of a run
    outputs = [Output(model, "--out", estimate=estimate)] if model is not None else []
    outputs += [Output(p, "--out", resumable=True, estimate=estimate) for p in checkpoints]
    if checked:
        folder = next(p for p in outputs[0].path.resolve().parents if p.is_dir())
        check_space(folder, estimate * len(outputs))
    else:
        check(outputs, overwrite, resume)


def preprocess_config(dataset: Any, settings: Settings, stored: Optional[Mapping[str, Any]] = None) -> Any:
    """The run's preprocessing: stored (resume, fine-tuning from Step 1) or from the dataset."""
    from lwi.data.preprocessing import PreprocessConfig, median_spacing

    if stored is not None:
        config = PreprocessConfig.from_dict(dict(stored))
        if settings.spacing is not None:
            config.spacing = tuple(float(s) for s in settings.spacing)
        if settings.modality is not None:
            config.modality = settings.modality.upper()
        return config
    spacing = settings.spacing or median_spacing(dataset.cases)
    modality = (settings.modality or dataset.modality or "MR").upper()
    return PreprocessConfig(spacing=tuple(float(s) for s in spacing), modality=modality)


def make_cache(cases: Sequence[Any], config: Any, device: Any, progress: Progress, with_labels: bool) -> Any:
    from lwi.data.cache import CaseCache

    return CaseCache(list(cases), config, device, progress=progress, with_labels=with_labels)


class Run:
    """A training run's validated dataset, split, preprocessing, device and (lazily) case caches.

    Creating it validates the dataset (every problem at once) before anything is written.
    """

    @classmethod
    def from_options(
        cls,
        data: PathLike,
        options: Mapping[str, Any],
        stored: Optional[Mapping[str, Any]] = None,
        *,
        stage_epochs: Optional[str] = None,
        stored_preprocessing: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> Run:
        """A run whose settings are ``options`` on top of a resumed run's ``stored`` settings (see
        :func:`make_settings`), preprocessed as the stored run was."""
        settings = make_settings(options, stored["settings"] if stored else None, stage_epochs=stage_epochs)
        if stored_preprocessing is None and stored:
            stored_preprocessing = stored["preprocessing"]
        run = cls(data, settings, stored_preprocessing=stored_preprocessing, **kwargs)
        if stored and isinstance(stored.get("labels"), dict) and kwargs.get("require_labels", True):
            check_resumed_labels(stored["labels"], run.dataset)
        return run

    def __init__(
        self,
        data: PathLike,
        settings: Settings,
        *,
        device: Any = "auto",
        progress: Optional[Progress] = None,
        unlabeled: Optional[Sequence[PathLike]] = None,
        require_labels: bool = True,
        stored_preprocessing: Optional[Mapping[str, Any]] = None,
        held_out: Optional[Sequence[str]] = None,
        split: Optional[Callable[[Any], Tuple[List[Any], List[Any], str]]] = None,
    ):
        from lwi.data.dataset import Case, case_name, list_images, load_dataset
        from lwi.devices import resolve_device

        self.settings = settings
        self.progress = progress or Progress("none")
        self.dataset = load_dataset(data, require_labels=require_labels)
        if self.dataset.unused_labels_note():
            self.progress.log(self.dataset.unused_labels_note())
        self.unlabeled = [
            Case(name=case_name(p), image=Path(p), label=None) for folder in (unlabeled or []) for p in list_images(folder)
        ]
        if split is not None:  # the caller's rule (improving a model: lwi.improve)
            self.train_cases, self.held_cases, self.split_message = split(self.dataset)
        elif held_out is not None:  # the split a Step-1 checkpoint recorded
            self.train_cases, self.held_cases, self.split_message = split_by_names(self.dataset, held_out)
        else:
            self.train_cases, self.held_cases, self.split_message = split_cases(
                self.dataset, settings.seed, settings.val_fraction
            )
        check_unlabeled(self.unlabeled, self.held_cases)
        self.unlabeled, dropped = distinct_unlabeled(self.unlabeled, self.train_cases)
        if dropped:
            self.progress.log(
                f"{dropped} --unlabeled image(s) are training cases or repeats of another: each image enters Step 1 once."
            )
        self.config = preprocess_config(self.dataset, settings, stored_preprocessing)
        self.device = resolve_device(device)
        self._caches: Dict[str, Any] = {}

    def weight_bytes(self) -> int:
        """The size of the network's weights (float32), from a build on PyTorch's meta device (no memory)."""
        import torch

        from lwi.architectures import build

        out_channels = max(self.labels) + 1 if self.labels else 2
        try:
            with torch.device("meta"):
                model = build(self.settings.arch, 1, out_channels, self.settings.roi, **self.settings.arch_params)
        except (RuntimeError, NotImplementedError):  # a network that cannot be built on meta: no estimate
            return 0
        return 4 * sum(p.numel() for p in model.parameters())

    @property
    def labels(self) -> Dict[int, str]:
        return dict(self.dataset.labels)

    @property
    def n_step1_images(self) -> int:
        return len(self.train_cases) + len(self.unlabeled)

    def _cache(self, key: str, cases: Sequence[Any], with_labels: bool) -> Any:
        if key not in self._caches:
            from lwi.data.checks import padding_note, smaller_than_roi

            cache = make_cache(cases, self.config, self.device, self.progress, with_labels)
            small = [cache.names[i] for i in range(len(cache)) if smaller_than_roi(cache.images[i].shape[1:], self.settings.roi)]
            if small:  # accepted, as in lwi segment (lwi.data.checks), but said
                self.progress.log(padding_note(small, self.settings.roi))
            self._caches[key] = cache
        return self._caches[key]

    def train_cache(self) -> Any:
        """The training cases with their labels (Step 2)."""
        return self._cache("train", self.train_cases, True)

    def step1_cache(self) -> Any:
        """The Step-1 images: the training cases (their labels unused) plus any unlabelled images."""
        if not self.unlabeled and all(c.label is not None for c in self.train_cases):
            return self.train_cache()  # preprocess once for both steps
        from lwi.data.dataset import Case

        images = [Case(name=c.name, image=c.image, label=None) for c in self.train_cases] + self.unlabeled
        return self._cache("step1", images, False)

    def validation_pairs(self) -> List[Optional[Tuple[Any, Any]]]:
        """``(image, label)`` tensors of the held-out cases, on the device, in order. Under torchrun
        each rank preprocesses and holds only its share (:func:`lwi.distributed.share`); the cases of
        the other ranks are None (:class:`lwi.engine.Validator` scores the share and gathers)."""
        from lwi import distributed

        if not self.held_cases:
            return []
        pairs: List[Optional[Tuple[Any, Any]]] = [None] * len(self.held_cases)
        mine = distributed.share(range(len(self.held_cases)))
        if mine:  # more ranks than held-out cases: some hold none
            cache = self._cache("validation", [self.held_cases[i] for i in mine], True)
            for j, i in enumerate(mine):
                pairs[i] = cache.full_case(j)
        return pairs

    def pretraining_metadata(self) -> Dict[str, Any]:
        """What a pre-training checkpoint records of this run: its preprocessing and its data."""
        return {"preprocessing": self.config.to_dict(), "data": {**self.describe_split(), "unlabeled": len(self.unlabeled)}}

    def describe_split(self) -> Dict[str, Any]:
        """The split as provenance: counts, and the names of the cases trained on and held out (a model
        improved with ``lwi train --from`` validates only on cases its parent never trained on)."""
        return {
            "cases": len(self.train_cases),
            "training_cases": sorted(c.name for c in self.train_cases),
            "validation_cases": len(self.held_cases),
            "held_out": sorted(c.name for c in self.held_cases),
        }


def public_summary(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """A summary without live objects (networks), JSON-able for result lines."""
    hidden = ("network", "best", "last_validation")  # objects, and duplicates of validation_dice
    return {k: v for k, v in summary.items() if k not in hidden and not hasattr(v, "state_dict")}


def pretrain_first(
    run: Run, out: Path, pre_path: Path, pretrain: Callable[..., Any], title: str, resume: bool
) -> Tuple[Path, int, bool]:
    """The first stage of a two-stage strategy (``lwi``'s Step 1, AnatoMask's pre-training):
    ``pretrain`` (called with :func:`lwi.strategies.step1.run_step1`'s keywords) writes ``pre_path``
    unless a resumed run is past it. Everything is preprocessed first: errors surface before hours
    of pre-training, and the whole-run fraction (planned over both stages) then only counts
    iterations. Returns Step 2's last-state path, the pre-training iterations and whether Step 2
    resumes."""
    s = run.settings
    last = derived_path(out, LAST_INFIX)
    i1 = step1_iterations(s, run.n_step1_images)
    _, i2 = step2_iterations(s, len(run.train_cases))
    cache, _, _ = run.step1_cache(), run.train_cache(), run.validation_pairs()  # all preprocessed first
    run.progress.plan(i1 + i2)
    step2_started = resume and last.exists()
    if step2_started or (resume and pretraining_complete(pre_path, i1)):
        run.progress.log(f"{title} already done ({pre_path}).")
    else:
        pretrain(
            cache=cache, n_images=run.n_step1_images, settings=s, device=run.device, out=pre_path,
            progress=run.progress, resume=resume and pre_path.exists(), metadata=run.pretraining_metadata(),
        )
    return last, i1, step2_started


def pretraining_complete(path: Path, iterations: int) -> bool:
    """Whether the pre-training checkpoint ``path`` exists and finished at least ``iterations``
    iterations: a resumed run then goes straight to Step 2."""
    from lwi import checkpoint

    if not path.exists():
        return False
    training = checkpoint.read_metadata(path).get("training", {})
    return bool(training.get("complete")) and int(training.get("iteration", 0)) >= iterations


def stored_settings(path: Path, formats: Sequence[str]) -> Dict[str, Any]:
    """The metadata of a resumable checkpoint (its ``settings`` and ``preprocessing``), checked to
    be one of ``formats``."""
    from lwi import checkpoint

    meta = checkpoint.read_metadata(path)
    if meta.get("format") not in formats or "settings" not in meta:
        raise LWIError(f"{path} is not a resumable LWI training checkpoint.")
    return meta


def check_resumed_labels(stored: Mapping[str, Any], dataset: Any) -> None:
    """Refuse to resume a run on a dataset whose labels (values or names) differ from the run's: its
    network has one output channel per stored label, and its results are reported by name."""
    def shown(labels: Mapping[int, str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) or "none"

    before = {int(k): str(v) for k, v in stored.items() if int(k) != 0}
    now = {int(k): str(v) for k, v in dataset.labels.items() if int(k) != 0}
    if before != now:
        raise LWIError(
            f"The run to resume was trained on the labels {shown(before)}, but {Path(dataset.root) / 'dataset.json'} "
            f"declares {shown(now)}; resume with the dataset it was trained on, or start a new run "
            "(another --out, or --overwrite)."
        )


def resumed_settings(candidates: Sequence[Path], formats: Sequence[str], missing: str) -> Dict[str, Any]:
    """The stored metadata of the run to resume: the first of ``candidates`` that exists (one of
    ``formats``); ``missing`` is the sentence when none does."""
    for path in candidates:
        if Path(path).exists():
            return stored_settings(Path(path), formats)
    raise LWIError(missing)
