"""The ``medcontext`` strategy (Gani et al., MedContext): one supervised stage with a self-supervised
context term. Per batch ``(x, y)``:

* the student S segments ``x`` and a masked ``x~`` (tube mask, ratio 0.6);
* an EMA teacher T (a frozen copy of S) segments ``x`` without gradients;
* loss = DiceCE(S(x), y) + DiceCE(S(x~), y) + w * C, with C = mean((T(x) - S(x~))^2);
* after every optimiser step, ``T <- m T + (1 - m) S`` with m rising on a cosine to 1 over the run.

The consistency weight (``consistency_mode``):

* ``share`` (default): w is set every iteration so that C's gradient on the masked pass's logits is
  ``consistency_share`` (0.5) times that of DiceCE(S(x~), y): the term does a stated share of the work
  at any image size and number of labels;
* ``code``: the authors' code, C / ||T(x)||_2 (2-norm of the whole teacher-logit tensor) times beta
  (``consistency_weight``, 0.5); at 2 x 14 x 96^3 logits its gradient is about 1e-5 of DiceCE's, so
  the term is numerically inert (the review's probe).

Either way the realised share is reported as ``consistency_share`` in the JSON progress.

The EMA momentum (``ema_mode``): ``run`` (default) starts the cosine at 0.996 scaled to the run's length
(:func:`lwi.ema.run_scaled` against :data:`REFERENCE_ITERATIONS`, the authors' 5000 epochs x 18), so
the teacher follows the student on a short run; ``paper`` starts at 0.996 whatever the length (on 300
iterations the teacher keeps about half its initial weights); ``code`` reproduces the authors' code
(see docs/strategies.md).

Inference and the bundle use the student. Masking: transformers (UNETR, SwinUNETR) replace masked
patch tokens by a learned mask token (as the paper); CNNs (SegResNet, MedNeXt) have no tokens, so
masked patches of the image are set to 0 (an adaptation, docs/strategies.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from lwi import masking
from lwi.architectures import Adapter
from lwi.ema import WithTeacher, cosine_schedule, ema_update, make_teacher, run_scaled
from lwi.errors import LWIError
from lwi.names import STRATEGY_DESCRIPTIONS
from lwi.strategies import scratch
from lwi.strategies.settings import epoch_iterations
from lwi.strategies.step2 import Step2Recipe, supervised_loss

NAME = "medcontext"
DESCRIPTION = STRATEGY_DESCRIPTIONS[NAME]
#: The authors' UNETR run the momentum 0.996 belongs to: 5000 epochs x 18 cases at batch 1.
REFERENCE_ITERATIONS = 90_000


class MedContextModel(WithTeacher):
    """Student, EMA teacher and (transformers) the learned mask token; ``forward`` is the student's.

    State-dict keys: ``student.net.``, ``teacher.net.``, ``mask_token``. The teacher is frozen and stays
    in eval mode whatever ``train()`` is called with.
    """

    def __init__(self, student: Adapter, patch_size: int = 16):
        super().__init__()
        self.student = student
        self.teacher = make_teacher(student)  # copied before the mask hook: the teacher never masks
        embedding = student.token_embedding()
        self.token_space = embedding is not None
        self.patch = int(student.token_patch) if self.token_space else int(patch_size)
        self.grid = masking.grid_of(student.roi_size, self.patch)
        self._mask: Optional[torch.Tensor] = None
        if self.token_space:
            # MedContext initialises the mask token to zeros (UNETR code: nn.Parameter(torch.zeros(768))).
            self.mask_token = nn.Parameter(torch.zeros(student.token_channels))
            embedding.register_forward_hook(_TokenMaskHook(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def spec(self) -> Dict[str, Any]:
        """The student's spec: what the bundle and the training checkpoint describe."""
        return self.student.spec()

    def masked_forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The student's logits for ``x`` masked by ``mask [B, *self.grid]`` (tokens or image patches)."""
        if not self.token_space:
            return self.student(masking.mask_voxels(x, mask, self.patch))
        self._mask = mask
        try:
            return self.student(x)
        finally:
            self._mask = None


class _TokenMaskHook:
    """Forward hook on the student's patch embedding: replaces masked tokens during a masked pass."""

    def __init__(self, owner: MedContextModel):
        self.owner = owner

    def __call__(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> Optional[torch.Tensor]:
        if self.owner._mask is None:
            return None
        return masking.replace_tokens(output, self.owner._mask, self.owner.mask_token)


def consistency(student_logits: torch.Tensor, teacher_logits: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """``mean((T - S)^2)``, divided (``normalise``, the authors' code) by ``||T||_2``, the 2-norm of the
    flattened teacher logits; the teacher side is a constant (no gradient)."""
    teacher_logits = teacher_logits.detach().float()
    difference = ((teacher_logits - student_logits.float()) ** 2).mean()
    if not normalise:
        return difference
    return difference / torch.linalg.norm(teacher_logits.flatten()).clamp_min(1e-12)


def make_mask(model: MedContextModel, batch_size: int, ratio: float, shape: str, axis: str,
              device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A tube mask along ``axis`` (``"x"``, ``"y"``, ``"z"``) or, with ``shape="cube"``, random patches,
    on the model's token or image-patch grid; one mask shared by the batch (as the authors' code)."""
    if shape == "tube":
        return masking.tube_mask(batch_size, model.grid, ratio, masking.AXES[axis], device, generator)
    if shape == "cube":
        count = int(ratio * model.grid[0] * model.grid[1] * model.grid[2])
        return masking.random_mask(batch_size, model.grid, count, device, generator, per_sample=False)
    raise LWIError(f"Unknown MedContext mask shape {shape!r}; use tube or cube.")


def medcontext_losses(
    model: MedContextModel,
    images: torch.Tensor,
    targets: torch.Tensor,
    supervised: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mask: torch.Tensor,
    beta: float,
    mode: str = "share",
    share: float = 0.5,
) -> Dict[str, torch.Tensor]:
    """``{"total", "supervised", "masked", "consistency", "consistency_share"}`` for one batch (float32).

    ``mode`` ``share``: the consistency term weighted so that its gradient on the masked logits is
    ``share`` x that of the masked pass's supervised loss; ``code``: ``beta`` x the authors' normalised
    term. ``consistency_share`` is the realised ratio of the two gradients' norms. Without a graph
    (under ``torch.no_grad``) there is no gradient to measure: the weight is ``beta`` and the share NaN.
    """
    if mode not in ("share", "code"):
        raise LWIError(f"Unknown consistency mode {mode!r}; use share or code.")
    logits = model(images)
    masked_logits = model.masked_forward(images, mask)
    with torch.no_grad():
        teacher_logits = model.teacher(images)
    plain = supervised(logits.float(), targets)
    masked = supervised(masked_logits.float(), targets)
    term = consistency(masked_logits, teacher_logits, normalise=mode == "code")
    # Gradients on the logits only (cheap: nothing flows into the network here).
    if not masked_logits.requires_grad:  # no graph (torch.no_grad): nothing to measure, beta as given
        nan = torch.tensor(float("nan"), device=images.device)
        total = plain + masked + float(beta) * term
        return {"total": total, "supervised": plain, "masked": masked, "consistency": term, "consistency_share": nan}
    g_sup, g_con = _logit_gradients(masked, term, masked_logits)
    if mode == "share":
        weight = (float(share) * g_sup / g_con.clamp_min(1e-20)).detach()
    else:
        weight = torch.tensor(float(beta), device=images.device)
    realised = (weight * g_con / g_sup.clamp_min(1e-20)).detach()
    return {
        "total": plain + masked + weight * term, "supervised": plain, "masked": masked, "consistency": term,
        "consistency_share": realised,
    }


def _logit_gradients(masked: torch.Tensor, term: torch.Tensor, logits: torch.Tensor) -> tuple:
    """Norms of the gradients of the masked pass's supervised loss and of the consistency term on ``logits``."""
    (g_sup,) = torch.autograd.grad(masked, logits, retain_graph=True)
    (g_con,) = torch.autograd.grad(term, logits, retain_graph=True)
    return torch.linalg.norm(g_sup.float()), torch.linalg.norm(g_con.float())


def momentum_updater(mode: str, start: float, end: float, iterations_per_epoch: int,
                     warmup_epochs: int = 50) -> Callable[[Any], Optional[float]]:
    """``after_step(trainer)`` body for the teacher: returns the momentum it applied (None = no update).

    * ``run``: as ``paper``, with ``start`` scaled to the run's length (:func:`lwi.ema.run_scaled`).
    * ``paper``: every iteration, m = cosine(start -> end) indexed by the global iteration of the run.
    * ``code``: the authors' UNETR code: once per epoch, with the schedule (linear warmup from 0 over
      ``warmup_epochs``, then cosine) indexed by the last *within-epoch* batch index, which gives
      m ~ 0.019 in every epoch for 18 cases: the teacher is about last epoch's student.
    """
    if mode not in ("run", "paper", "code"):
        raise LWIError(f"Unknown EMA mode {mode!r}; use run, paper or code.")

    def momentum(trainer: Any) -> Optional[float]:
        if mode in ("run", "paper"):
            first = run_scaled(start, REFERENCE_ITERATIONS, trainer.total_iterations) if mode == "run" else start
            return cosine_schedule(trainer.iteration - 1, trainer.total_iterations, first, end)
        if trainer.iteration % iterations_per_epoch and trainer.iteration != trainer.total_iterations:
            return None
        warmup = min(warmup_epochs, trainer.epochs) * iterations_per_epoch
        return cosine_schedule(iterations_per_epoch - 1, trainer.total_iterations, start, end, warmup=warmup)

    return momentum


def update_teacher(model: MedContextModel, momentum: Optional[float]) -> None:
    if momentum is not None:
        ema_update(model.teacher, model.student, momentum)


# -- the strategy ----------------------------------------------------------------------------------
def settings_of(s: Any) -> Dict[str, Any]:
    """The MedContext settings of a run, for the bundle's provenance and ``lwi info``."""
    return {
        "consistency_mode": s.consistency_mode,
        "consistency_share": s.consistency_share,
        "consistency_weight": s.consistency_weight,
        "mask_ratio": s.context_mask_ratio,
        "mask_shape": s.context_mask_shape,
        "tube_axis": s.context_tube_axis,
        "ema_mode": s.ema_mode,
        "ema_momentum": list(s.ema_momentum),
        "image_patch": s.mim_patch_size,
        "inference": "student",
    }


outputs = scratch.outputs  # the same single stage: the model and its resumable last state


def train(run: Any, out: Path, resume: bool = False) -> Dict[str, Any]:
    """One supervised stage for as many iterations as ``lwi`` would take in total (Step 1 + Step 2)."""
    s = run.settings
    loss_fn = supervised_loss()
    momentum = momentum_updater(
        s.ema_mode, s.ema_momentum[0], s.ema_momentum[1], epoch_iterations(s, len(run.train_cases))
    )

    def step(model: MedContextModel, batch: Any, generator: torch.Generator) -> Dict[str, Any]:
        images, targets = batch
        mask = make_mask(
            model, images.shape[0], s.context_mask_ratio, s.context_mask_shape, s.context_tube_axis, images.device,
            generator,
        )
        return medcontext_losses(
            model, images, targets, loss_fn, mask, s.consistency_weight, s.consistency_mode, s.consistency_share
        )

    def after_step(trainer: Any) -> None:
        update_teacher(trainer.model, momentum(trainer))

    return scratch.train_matched(
        run,
        out,
        resume,
        {"strategy": NAME, "strategy_settings": settings_of(s)},
        Step2Recipe(
            make_model=lambda adapter: MedContextModel(adapter, patch_size=s.mim_patch_size),
            step=step,
            export=lambda model: model.student,
            after_step=after_step,
        ),
    )
