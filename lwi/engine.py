"""The training engine shared by LWI Step 1 (self-supervised) and Step 2 (supervised fine-tuning).

One loop for both steps: a *sample* function draws a batch from the case cache, a *step* function
turns it into a dict of losses (``"total"`` is optimised), and :class:`Trainer` does the rest:
AdamW, MONAI's warmup-cosine schedule stepped every iteration (not once per many epochs, which
would keep the rate near zero), mixed precision and cuDNN benchmark mode on CUDA only (the CPU
path stays float32), atomic checkpoints every K epochs and at the end, an exact resume (weights,
optimizer, schedule, gradient scaler and random-number states), progress reporting and a
validation hook (:class:`Validator`: sliding-window Dice per label on held-out cases).

Checkpoint layout (one safetensors file, :mod:`lwi.checkpoint`): the model's own state-dict keys
(``net.``, ``order_heads.``, ...) plus ``train_state/...`` tensors; the metadata has the caller's
fields and a ``"training"`` object (iteration, epoch, schedule, best validation, optimizer skeleton).
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from lwi import checkpoint, distributed, interrupt
from lwi.devices import resolve_device
from lwi.errors import LWIError, NotResumable
from lwi.progress import Progress

TRAIN_STATE = "train_state"  # key prefix of optimizer/RNG tensors in a checkpoint ("/" never occurs in module keys)

SampleFn = Callable[[torch.Generator], Any]
StepFn = Callable[[nn.Module, Any, torch.Generator], Dict[str, Any]]
ValidateFn = Callable[[nn.Module], Dict[str, Any]]


def model_tensors(tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint's tensors (everything but the ``train_state/`` entries)."""
    return {k: v for k, v in tensors.items() if not k.startswith(TRAIN_STATE + "/")}


def _grad_scaler(device: torch.device, enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled)  # torch < 2.3


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    if isinstance(value, (list, tuple)):
        return [_to_float(v) for v in value]
    return value


class Trainer:
    """The optimisation loop: AdamW + warmup-cosine per iteration + AMP on CUDA + checkpoints + resume.

    Args:
        model: the module to train (already on ``device``); its ``state_dict`` is checkpointed.
        step_fn: ``step_fn(model, batch, generator) -> {"total": loss, other terms...}``; runs under
            autocast on CUDA. Other terms may be scalar tensors or lists of them (per-level losses).
        sample_fn: ``sample_fn(generator) -> batch``.
        epochs: epochs of this stage; ``iterations_per_epoch`` iterations each.
        stage: name in progress lines and checkpoints (``"pretrain"``, ``"finetune"``, ...).
        lr, weight_decay: AdamW settings; the rate follows MONAI's WarmupCosineSchedule.
        warmup_iterations: linear warmup length, then cosine decay to 0 at the last iteration.
        max_iterations: stop after this many iterations (the last epoch may be partial), e.g. to
            give a baseline exactly the same number of iterations as a two-step run.
        device: where training runs; ``amp`` defaults to True on CUDA and is never used on the CPU.
        seed: seeds the (CPU) generator handed to ``sample_fn``/``step_fn`` (and saved for resume);
            under torchrun each rank's generator gets :func:`lwi.distributed.rank_seed`, the model is
            wrapped in DDP for ``step_fn``, and only rank 0 writes checkpoints.
        checkpoint_path: the resumable checkpoint, written every ``checkpoint_every`` epochs and at
            the end (atomically: an interruption leaves the previous file intact).
        metadata: JSON fields stored in every checkpoint, or a function returning them.
        validate_fn: ``validate_fn(model) -> {"dice": {...}, "mean_dice": float, ...}`` every
            ``val_every`` epochs and at the end; ``on_best(model, info)`` runs when ``mean_dice``
            improves (the caller writes its best model there). Under torchrun both run on every
            rank with the bare model: ``validate_fn`` must return the same numbers on every rank
            (:class:`Validator` shares the cases and gathers the scores) and ``on_best`` writes
            files on rank 0 only (:func:`lwi.distributed.is_main`).
        progress: a :class:`lwi.progress.Progress`; ``progress_offset`` = iterations of earlier
            stages in a planned multi-stage run (see ``Progress.plan``).
        on_epoch_end: ``on_epoch_end(trainer)`` after each epoch's checkpoint (hooks, tests).
        after_step: ``after_step(trainer)`` after every optimiser step, with ``trainer.iteration``
            already counting it (the global iteration across resumes): EMA teachers update here.
        clip_grad_norm: clip the gradients' global 2-norm to this value before each step (after
            unscaling under AMP); None or 0 = no clipping.
        report_seconds: at most one mid-epoch progress line per this many seconds (epoch ends always report).
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        sample_fn: SampleFn,
        *,
        epochs: int,
        iterations_per_epoch: int,
        stage: str = "train",
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        warmup_iterations: int = 0,
        max_iterations: Optional[int] = None,
        device: Union[str, torch.device] = "cpu",
        amp: Optional[bool] = None,
        seed: int = 0,
        checkpoint_path: Union[str, Path, None] = None,
        checkpoint_every: int = 0,
        metadata: Union[Dict[str, Any], Callable[[], Dict[str, Any]], None] = None,
        validate_fn: Optional[ValidateFn] = None,
        val_every: int = 0,
        on_best: Optional[Callable[[nn.Module, Dict[str, Any]], None]] = None,
        progress: Optional[Progress] = None,
        progress_offset: int = 0,
        on_epoch_end: Optional[Callable[[Trainer], None]] = None,
        report_seconds: float = 1.0,
        after_step: Optional[Callable[[Trainer], None]] = None,
        clip_grad_norm: Optional[float] = None,
    ):
        if epochs < 1 or iterations_per_epoch < 1:
            raise LWIError("The number of epochs and of iterations per epoch must be at least 1.")
        self.model = model
        self.step_fn = step_fn
        self.sample_fn = sample_fn
        self.stage = stage
        self.epochs = int(epochs)
        self.iterations_per_epoch = int(iterations_per_epoch)
        planned = self.epochs * self.iterations_per_epoch
        self.total_iterations = min(planned, int(max_iterations)) if max_iterations else planned
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_iterations = max(0, min(int(warmup_iterations), self.total_iterations))
        self.device = resolve_device(device)
        self.amp = bool(self.device.type == "cuda" if amp is None else amp) and self.device.type == "cuda"
        self.seed = int(seed)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every = int(checkpoint_every or 0)
        self.metadata = metadata
        self.validate_fn = validate_fn
        self.val_every = int(val_every or 0)
        self.on_best = on_best
        self.progress = progress or Progress("none")
        self.progress_offset = int(progress_offset)
        self.on_epoch_end = on_epoch_end
        self.report_seconds = float(report_seconds)
        self.after_step = after_step
        self.clip_grad_norm = float(clip_grad_norm) if clip_grad_norm else None

        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
        from monai.optimizers import WarmupCosineSchedule

        params = [p for p in model.parameters() if p.requires_grad]
        self._params = params
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        self.scheduler = WarmupCosineSchedule(
            self.optimizer, warmup_steps=self.warmup_iterations, t_total=self.total_iterations
        )
        self.scaler = _grad_scaler(self.device, self.amp)
        # A CPU generator: crops and masks are drawn on the CPU without a GPU sync, then moved.
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.generator = torch.Generator()
        self.generator.manual_seed(distributed.rank_seed(self.seed, self.rank))
        # What step_fn runs: DDP averages the gradients over the ranks; validation, checkpoints and
        # on_best use the bare model (a forward pass through DDP is a collective call of its own).
        self.net = distributed.wrap(model, self.device)
        self.iteration = 0
        self.best: Optional[Dict[str, Any]] = None
        self.last_validation: Optional[Dict[str, Any]] = None
        self.history: List[Dict[str, Any]] = []  # one entry per progress report (losses, validation)

    # -- state ------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """Epochs completed (a partial last epoch counts once it has ended)."""
        if self.iteration >= self.total_iterations:
            return math.ceil(self.total_iterations / self.iterations_per_epoch)
        return self.iteration // self.iterations_per_epoch

    @property
    def complete(self) -> bool:
        return self.iteration >= self.total_iterations

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def training_state(self) -> Dict[str, Any]:
        """The JSON part of the ``"training"`` metadata (without the optimizer skeleton)."""
        return {
            "stage": self.stage,
            "iteration": self.iteration,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "iterations_per_epoch": self.iterations_per_epoch,
            "total_iterations": self.total_iterations,
            "complete": self.complete,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_iterations": self.warmup_iterations,
            "seed": self.seed,
            "amp": self.amp,
            "clip_grad_norm": self.clip_grad_norm,
            "world_size": self.world_size,
            "best": self.best,
            "last_validation": self.last_validation,
        }

    def save_checkpoint(self, path: Union[str, Path, None] = None) -> Optional[Path]:
        """Write the resumable checkpoint atomically (weights, optimizer, schedule, scaler, RNG).

        Under torchrun every rank must call it (their crop generators are gathered); rank 0 writes
        and returns the path, the others return None.
        """
        path = Path(path) if path else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path")
        generators = distributed.gather_objects(self.generator.get_state())
        if not distributed.is_main():
            return None
        # Clone: safetensors refuses tensors that share storage (tied weights, views).
        tensors = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        skeleton = checkpoint.flatten_state(
            {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}, TRAIN_STATE, tensors
        )
        tensors[f"{TRAIN_STATE}/rng/generator"] = generators[0]
        for r, state in enumerate(generators[1:], start=1):
            tensors[f"{TRAIN_STATE}/rng/generator/{r}"] = state
        tensors[f"{TRAIN_STATE}/rng/torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors[f"{TRAIN_STATE}/rng/cuda"] = torch.cuda.get_rng_state(self.device)
        extra = self.metadata() if callable(self.metadata) else dict(self.metadata or {})
        training = self.training_state()
        training["state"] = skeleton
        training["scheduler"] = self.scheduler.state_dict()
        return checkpoint.save(path, tensors, {**extra, "training": training})

    def load_checkpoint(self, path: Union[str, Path]) -> Dict[str, Any]:
        """Restore everything :meth:`save_checkpoint` wrote; training continues at the saved iteration.

        The schedule keeps this trainer's length, so a resumed run may be given more epochs. Any
        world size may resume any checkpoint: a rank finds its own crop generator if the saved run
        had that rank, else starts a fresh one from its seed and the iteration.
        Returns the checkpoint's metadata.
        """
        tensors, meta = checkpoint.load(path)
        training = meta.get("training")
        if not isinstance(training, dict) or "state" not in training:
            raise NotResumable(path, f"{path} holds no training state to resume from.")
        if training.get("stage") != self.stage:
            raise NotResumable(path, f"{path} is a checkpoint of the {training.get('stage')!r} stage, not of {self.stage!r}.")
        if int(training["iteration"]) > self.total_iterations:
            raise LWIError(
                f"{path} is already at iteration {training['iteration']}, beyond the {self.total_iterations} "
                "iterations asked for; give more epochs to continue it."
            )
        try:
            self.model.load_state_dict(model_tensors(tensors), strict=True)
        except RuntimeError as exc:
            raise NotResumable(
                path,
                f"{path} was written for another network or settings and cannot be resumed here "
                f"({str(exc).splitlines()[0]})."
            ) from None
        try:
            self._load_training_state(training, tensors)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NotResumable(
                path,
                f"{path} holds a damaged or foreign training state (optimizer, schedule or random-number state: "
                f"{reason.rstrip('.')}) and cannot be resumed; start afresh with --overwrite or another --out",
            ) from None
        self.iteration = int(training["iteration"])
        self.best = training.get("best")
        self.last_validation = training.get("last_validation")
        return meta

    def _load_training_state(self, training: Dict[str, Any], tensors: Dict[str, torch.Tensor]) -> None:
        """Restore optimizer, scaler, schedule and random-number states from a checkpoint; any error
        here means a damaged or hand-made state (see :meth:`load_checkpoint`)."""
        state = checkpoint.unflatten_state(training["state"], tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        # torch accepts moments of any shape here and fails only at the next step: check them now.
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                for name, value in self.optimizer.state.get(param, {}).items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                        raise ValueError(f"{name} of shape {tuple(value.shape)} for a parameter of {tuple(param.shape)}")
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(training["scheduler"])
        # The schedule's length is this run's (possibly extended) plan; re-derive the current rate.
        self.scheduler.warmup_steps = self.warmup_iterations
        self.scheduler.t_total = self.total_iterations
        factor = self.scheduler.lr_lambda(self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor
        iteration = int(training["iteration"])
        key = f"{TRAIN_STATE}/rng/generator" + (f"/{self.rank}" if self.rank else "")
        if key in tensors:
            self.generator.set_state(tensors[key])
        else:
            self.generator.manual_seed(distributed.rank_seed(self.seed + iteration, self.rank))
        torch.set_rng_state(tensors[f"{TRAIN_STATE}/rng/torch"])
        if self.device.type == "cuda" and f"{TRAIN_STATE}/rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors[f"{TRAIN_STATE}/rng/cuda"], self.device)

    # -- the loop ---------------------------------------------------------------------------
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def _optimise(self, total: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
            torch.nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with warnings.catch_warnings():
            # With AMP the scaler may skip the very first optimizer step (overflow probe); harmless.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()

    def validate(self) -> Optional[Dict[str, Any]]:
        """Run the validation hook now, track the best score and call ``on_best`` on improvement."""
        if self.validate_fn is None:
            return None
        metrics = dict(self.validate_fn(self.model))
        self.model.train()
        metrics["iteration"] = self.iteration
        metrics["epoch"] = self.epoch
        self.last_validation = metrics
        score = metrics.get("mean_dice")
        if score is not None and not math.isnan(score) and (self.best is None or score > self.best["mean_dice"]):
            self.best = metrics
            if self.on_best is not None:
                self.on_best(self.model, metrics)
        return metrics

    @interrupt.stoppable()
    def run(self) -> Dict[str, Any]:
        """Train until the planned iteration; returns a summary (iterations, last losses, best validation)."""
        total = self.total_iterations
        self.model.train()
        self.progress.start(self.stage, total, initial=self.iteration, offset=self.progress_offset)
        sums: Dict[str, Any] = {}
        finite = 0
        window = 0
        last_report = time.monotonic()
        last_losses: Dict[str, Any] = {}
        while self.iteration < total:
            batch = self.sample_fn(self.generator)
            with self._autocast():
                losses = self.step_fn(self.net, batch, self.generator)
            loss = losses["total"]
            self._optimise(loss)
            self.iteration += 1
            if self.after_step is not None:
                self.after_step(self)
            # Accumulate on the device: no GPU sync per iteration, only when a line is reported.
            ok = torch.isfinite(loss.detach()).float()
            finite = finite + ok
            window += 1
            for key, value in losses.items():
                sums[key] = _accumulate(sums.get(key), value, ok)
            epoch_end = self.iteration % self.iterations_per_epoch == 0 or self.iteration == total
            if epoch_end or time.monotonic() - last_report >= self.report_seconds:
                last_losses = self._report(sums, finite, window)
                sums, finite, window = {}, 0, 0
                last_report = time.monotonic()
            if epoch_end:
                self._end_epoch(last_losses)
            if self._stop_agreed(epoch_end):
                self._stop()
        self.progress.close()
        distributed.barrier()  # rank 0's last checkpoint is on disk before any rank reads it
        return {
            "stage": self.stage,
            "iterations": self.iteration,
            "epochs": self.epoch,
            "losses": last_losses,
            "best": self.best,
            "last_validation": self.last_validation,
        }

    def _stop_agreed(self, epoch_end: bool) -> bool:
        """Whether to stop now on Ctrl-C/SIGTERM: at once in one process; under torchrun only at an
        epoch end (where every rank is at the same iteration) and when any rank was asked to."""
        if self.world_size == 1:
            return interrupt.stop_requested()
        return epoch_end and any(distributed.gather_objects(interrupt.stop_requested()))

    def _stop(self) -> None:
        """Stop at this iteration boundary on Ctrl-C/SIGTERM: checkpoint first, so resume continues here."""
        if self.checkpoint_path is not None:
            self.save_checkpoint()
        self.progress.close()
        raise KeyboardInterrupt

    def _report(self, sums: Dict[str, Any], finite: Any, window: int) -> Dict[str, Any]:
        n_finite = float(finite)
        if n_finite == 0:
            raise LWIError(
                f"The {self.stage} loss is not a finite number (NaN or infinite) at iteration {self.iteration}; "
                "try a lower --lr, or check the images' intensities."
            )
        losses = {("loss" if k == "total" else k): _mean(v, n_finite) for k, v in sums.items()}
        fields = {
            "epoch": math.ceil(self.iteration / self.iterations_per_epoch),
            "epochs": math.ceil(self.total_iterations / self.iterations_per_epoch),
            "iteration": self.iteration,
            "iterations": self.total_iterations,
            **losses,
            "lr": self.current_lr(),
        }
        if n_finite < window:
            fields["skipped_iterations"] = int(window - n_finite)
        self.history.append(dict(fields))
        self.progress.update(self.iteration, self.total_iterations, **fields)
        return losses

    def _end_epoch(self, losses: Dict[str, Any]) -> None:
        epoch = math.ceil(self.iteration / self.iterations_per_epoch)
        last = self.iteration >= self.total_iterations
        due = (self.val_every and epoch % self.val_every == 0) or last
        # Every rank validates (a Validator scores its share of the cases and gathers the others'), so
        # every rank holds the same best score and takes the same checkpoint and on_best decisions.
        if self.validate_fn is not None and due:
            metrics = self.validate()
            if metrics is not None:
                entry = {
                    "epoch": epoch,
                    "iteration": self.iteration,
                    "dice": metrics.get("dice"),
                    "mean_dice": metrics.get("mean_dice"),
                    "best_mean_dice": (self.best or {}).get("mean_dice"),
                }
                self.history.append(dict(entry))
                self.progress.update(
                    self.iteration,
                    self.total_iterations,
                    epochs=math.ceil(self.total_iterations / self.iterations_per_epoch),
                    iterations=self.total_iterations,
                    **entry,
                    **losses,
                )
        if self.checkpoint_path is not None and (last or (self.checkpoint_every and epoch % self.checkpoint_every == 0)):
            self.save_checkpoint()
        if self.on_epoch_end is not None:
            self.on_epoch_end(self)


def _accumulate(total: Any, value: Any, ok: torch.Tensor) -> Any:
    if isinstance(value, (list, tuple)):
        previous = total if total is not None else [None] * len(value)
        return [_accumulate(t, v, ok) for t, v in zip(previous, value)]
    if not isinstance(value, torch.Tensor):
        return total
    value = value.detach().float()
    value = torch.where(ok > 0, value, torch.zeros_like(value))  # drop overflowed AMP iterations
    return value if total is None else total + value


def _mean(total: Any, n: float) -> Any:
    if isinstance(total, list):
        return [_mean(t, n) for t in total]
    if total is None:
        return None
    return float(total) / n


class Validator:
    """Sliding-window Dice per label on held-out, preprocessed cases (MONAI inference and Dice).

    Under torchrun every rank calls it: each scores the cases it holds (the others are None,
    :meth:`lwi.strategies.run.Run.validation_pairs` gives each rank its share) and the per-case
    scores are gathered, so every rank returns the same numbers, in the order of one process.

    Args:
        cases: ``(image [C,X,Y,Z], label [1,X,Y,Z])`` pairs, already on the training device, or None
            for a case another rank scores.
        labels: ``{value: name}``; value 0 (background) is not scored. The network's output channel
            ``v`` is label value ``v``.
        roi_size: the sliding window (the training crop).
        overlap, sw_batch_size: sliding-window settings; windows are blended with a Gaussian.
        amp: autocast on CUDA.
    """

    def __init__(
        self,
        cases: Sequence[Optional[Tuple[torch.Tensor, torch.Tensor]]],
        labels: Mapping[int, str],
        roi_size: Sequence[int],
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        amp: bool = False,
    ):
        self.cases = list(cases)
        self.labels = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
        self.roi_size = tuple(int(s) for s in roi_size)
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.amp = amp

    @torch.no_grad()
    def _case_dice(self, model: nn.Module, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Dice per output channel of one case (NaN where the case lacks the label), on the CPU."""
        from monai.inferers import sliding_window_inference
        from monai.metrics import compute_dice
        from monai.networks.utils import one_hot

        from lwi.data.preprocessing import background_value

        amp = self.amp and image.device.type == "cuda"
        context = torch.autocast(device_type="cuda", dtype=torch.float16) if amp else nullcontext()
        with context:
            logits = sliding_window_inference(
                image[None].float(),
                self.roi_size,
                self.sw_batch_size,
                model,
                overlap=self.overlap,
                mode="gaussian",
                cval=background_value(image),  # as the training crops are padded
            )
        channels = logits.shape[1]
        prediction = one_hot(logits.argmax(dim=1, keepdim=True), channels)
        truth = one_hot(label[None].long().clamp(0, channels - 1), channels)
        # compute_dice, not DiceMetric: the metric's buffer gathers over the process group by itself.
        return compute_dice(prediction, truth, include_background=True, ignore_empty=True)[0].float().cpu()

    def __call__(self, model: nn.Module) -> Dict[str, Any]:
        """Dice per label name (None where no held-out case has the label) and their mean."""
        was_training = model.training
        model.eval()
        mine = {i: self._case_dice(model, *pair) for i, pair in enumerate(self.cases) if pair is not None}
        if was_training:
            model.train()
        scores = {i: d for share in distributed.gather_objects(mine) for i, d in share.items()}
        dice: Dict[str, Optional[float]] = {}
        if scores:
            # Per case and channel, NaN where the case lacks the label; average what was scored
            # (MONAI's own reduction reports an all-NaN channel as 0, which would read as a miss).
            per_case = torch.stack([scores[i] for i in sorted(scores)])
            channels = per_case.shape[1]
            scored_cases = ~torch.isnan(per_case)
            per_channel = torch.where(scored_cases, per_case, torch.zeros_like(per_case)).sum(0) / scored_cases.sum(0)
            for value, name in sorted(self.labels.items()):
                score = float(per_channel[value]) if value < channels else float("nan")
                dice[name] = None if math.isnan(score) else score
        scored = [v for v in dice.values() if v is not None]
        return {"dice": dice, "mean_dice": sum(scored) / len(scored) if scored else float("nan")}
