"""Options and glue shared by ``lwi pretrain``, ``lwi finetune`` and ``lwi train`` (not a command).

Every training number defaults to None here, meaning "not given": a new run then uses the
defaults of :class:`lwi.strategies.settings.Settings`, a resumed run keeps its stored value, and
``lwi finetune`` inherits the network and preprocessing of its Step-1 checkpoint.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, List, Optional

from lwi.commands import options
from lwi.errors import LWIError
from lwi.names import ARCHITECTURE_NAMES, MODALITIES
from lwi.strategies.settings import CHOICES

OUTPUT_NOTE = (
    "Files: MODEL is the best model (by mean validation Dice; the last one without validation), "
    "MODEL with a '.last' infix (model.last.lwi.safetensors) holds the last state with the optimizer for "
    "--resume, and the lwi strategy keeps its Step-1 checkpoint with a '.step1' infix. Existing files are "
    "never replaced unless --overwrite (or continued with --resume)."
)


def add_common(
    parser: argparse.ArgumentParser, arch_default_text: str = "unetr", epochs_help: str = "epochs of this stage"
) -> None:
    """Data, network, schedule, device and progress options of every training command."""
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder (MSD layout or imagesTr/ + labelsTr/)")
    net = parser.add_argument_group("network")
    net.add_argument("--arch", choices=ARCHITECTURE_NAMES, default=None, help=f"architecture (default: {arch_default_text})")
    options.add_roi(net)
    net.add_argument("--feature-size", type=options.POSITIVE, help="UNETR/SwinUNETR feature size (UNETR default 16)")
    net.add_argument("--hidden-size", type=options.POSITIVE, help="UNETR transformer width (default 768)")
    net.add_argument("--mlp-dim", type=options.POSITIVE, help="UNETR transformer MLP width (default 3072)")
    net.add_argument("--num-heads", type=options.POSITIVE, help="UNETR attention heads (default 12)")
    net.add_argument("--init-filters", type=options.POSITIVE, help="SegResNet/MedNeXt first-stage channels")
    net.add_argument(
        "--arch-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other parameter of the architecture (VALUE as JSON, e.g. blocks_down=[1,1,1]); repeatable",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=options.POSITIVE, help=epochs_help)
    opt.add_argument("--batch-size", type=options.POSITIVE, help="crops per iteration (default 2)")
    opt.add_argument(
        "--iterations-per-epoch", type=options.POSITIVE, help="iterations per epoch (default: images / batch size, rounded up)"
    )
    opt.add_argument("--lr", type=options.POSITIVE_NUMBER, help="AdamW learning rate (default 1e-4)")
    opt.add_argument("--weight-decay", type=options.number(0.0), help="AdamW weight decay (default 1e-5)")
    opt.add_argument(
        "--warmup", type=options.whole(0), dest="warmup_epochs", metavar="EPOCHS",
        help="linear warmup epochs before the cosine decay, stepped every iteration (default: 5%% of the epochs)",
    )
    opt.add_argument(
        "--clip-grad-norm", type=options.POSITIVE_NUMBER, metavar="NORM",
        help="clip the gradients' 2-norm at NORM (default: 12 in AnatoMask pre-training, else no clipping)",
    )
    opt.add_argument("--checkpoint-every", type=options.POSITIVE, metavar="EPOCHS", help="checkpoint interval (default: 1/10 of the epochs)")
    opt.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="no mixed precision on CUDA")
    pre = parser.add_argument_group("preprocessing")
    pre.add_argument("--spacing", type=options.POSITIVE_NUMBER, nargs=3, metavar=("X", "Y", "Z"), help="target spacing in mm (default: the dataset's median)")
    pre.add_argument("--modality", choices=MODALITIES, type=str.upper, help="intensity normalisation (default: from dataset.json)")
    run = parser.add_argument_group("run")
    options.add_device(run)
    options.add_seed(run)
    parser.set_defaults(seed=None)  # None: a resumed or fine-tuned run keeps its own seed (0 for new runs)
    options.add_progress(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    options.add_overwrite(run)


def add_step1(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Step 1 (LWI pre-training)")
    group.add_argument(
        "--unlabeled", action="append", metavar="DIR", help="a folder of extra images without labels for Step 1; repeatable"
    )
    group.add_argument("--mask-ratio", type=options.FRACTION, help="share of masked cubes (default 0.4)")
    group.add_argument("--cube-size", type=options.POSITIVE, help="edge of the masked cubes in voxels (default 16)")


def add_strategies(parser: argparse.ArgumentParser) -> None:
    """The settings of the MedContext and AnatoMask strategies (docs/strategies.md)."""
    ctx = parser.add_argument_group("MedContext (--strategy medcontext)")
    ctx.add_argument("--consistency-weight", type=options.number(0.0), help="beta, the weight of the teacher consistency term (default 0.5)")
    ctx.add_argument("--context-mask-ratio", type=options.FRACTION, help="share of masked tokens or patches (default 0.6)")
    ctx.add_argument("--context-mask-shape", choices=CHOICES["context_mask_shape"], help="tube masks (default) or random cubes")
    ctx.add_argument("--context-tube-axis", choices=CHOICES["context_tube_axis"], help="the axis the tubes run along (default z)")
    ctx.add_argument(
        "--ema-mode", choices=CHOICES["ema_mode"],
        help="paper: momentum cosine per iteration (default); code: the authors' once-per-epoch update (ablation)",
    )
    ctx.add_argument("--ema-momentum", type=options.number(0.0, 1.0), nargs=2, metavar=("START", "END"), help="EMA momentum (default 0.996 1)")
    am = parser.add_argument_group("AnatoMask (--strategy anatomask)")
    am.add_argument("--mim-patch-size", type=options.POSITIVE, help="masked patch edge in voxels (default 16; also MedContext's CNN masks)")
    am.add_argument("--anatomask-mask-ratio", type=options.FRACTION, help="share of masked patches (default 0.6)")
    am.add_argument("--guided-final-ratio", type=options.FRACTION, help="final share of masked patches chosen by the teacher (default 0.5)")
    am.add_argument(
        "--anatomask-ema-decay", type=options.number(0.0, 1.0), nargs=2, metavar=("START", "END"), help="teacher EMA decay (default 0.999 0.9999)"
    )
    am.add_argument(
        "--teacher-error-target", choices=CHOICES["teacher_error_target"],
        help="score the teacher against the normalised patches (default) or the raw ones (the authors' code)",
    )
    am.add_argument(
        "--anatomask-transfer", choices=CHOICES["anatomask_transfer"],
        help="fine-tune from the encoder's weights (default, as the paper) or all but the output layer",
    )


def add_step2(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Step 2 (fine-tuning) and validation")
    group.add_argument("--val-every", type=options.POSITIVE, metavar="EPOCHS", help="validation interval (default: 1/20 of the epochs)")
    group.add_argument(
        "--val-fraction", type=options.FRACTION,
        help="share of cases held out when dataset.json lists no 'validation' cases (default 0.2; 0 = none)",
    )
    group.add_argument("--overlap", type=options.FRACTION, help="sliding-window overlap in validation (default 0.5)")
    group.add_argument("--sw-batch-size", type=options.POSITIVE, help="sliding windows per batch (default 4)")


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Everything ``lwi train`` takes but its output (shared with ``lwi plan``)."""
    from lwi.names import DEFAULT_STRATEGY, STRATEGY_CHOICES
    from lwi.plan import LWI_MIN_STEP2_ITERATIONS

    parser.add_argument(
        "--strategy", choices=list(STRATEGY_CHOICES), default=DEFAULT_STRATEGY,
        help="lwi: Step 1 then Step 2; scratch: Step 2 from random weights for the same total iterations; "
        "medcontext: one stage with a masked student and an EMA teacher, same total iterations; anatomask: "
        "teacher-guided masked-image pre-training then Step 2; auto (default): the plan chooses scratch when "
        f"Step 2 gets fewer than {LWI_MIN_STEP2_ITERATIONS} iterations (a short CPU plan or --time), where LWI's Step 1 did not pay "
        "for its iterations on the hippocampus development set (README), else lwi; a given Step-1 budget "
        "or --unlabeled means lwi. The plan prints its choice; see docs/strategies.md",
    )
    add_training(parser)


def add_training(parser: argparse.ArgumentParser) -> None:
    """Every training option of ``lwi train`` but the strategy (data, network, schedule, budget, both steps,
    the strategies' own settings, run); ``lwi experiment`` applies them to each of its runs."""
    add_common(parser, arch_default_text="from the plan", epochs_help="Step-2 epochs (default: from the plan); Step 1's are --pretrain-epochs")
    parser.add_argument("--pretrain-epochs", type=options.whole(0), help="Step-1 epochs (default: from the plan; 0 with --strategy scratch)")
    budget = parser.add_argument_group("budget (default: the plan's; see lwi plan)")
    budget.add_argument(
        "--time", metavar="DURATION",
        help="time budget for the whole run, e.g. 20m or 1h30m: both steps' iterations come from a timing probe "
        "on this machine (default on a CPU: 30m; on a GPU: a fixed number of iterations)",
    )
    budget.add_argument("--iterations", type=options.POSITIVE, help="Step-2 iterations (instead of --epochs)")
    budget.add_argument("--pretrain-iterations", type=options.whole(0), help="Step-1 iterations (instead of --pretrain-epochs)")
    add_step1(parser)
    add_step2(parser)
    add_strategies(parser)


def _arch_params(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    params: Dict[str, Any] = {}
    for name in ("feature_size", "hidden_size", "mlp_dim", "num_heads", "init_filters"):
        value = getattr(args, name, None)
        if value is not None:
            params[name] = value
    for item in getattr(args, "arch_param", None) or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LWIError(f"--arch-param takes KEY=VALUE, got {item!r}.")
        try:
            params[key.strip().replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.strip().replace("-", "_")] = raw
    return params or None


SETTING_ARGS: List[str] = [
    "arch", "roi", "batch_size", "iterations_per_epoch", "lr", "weight_decay", "warmup_epochs", "checkpoint_every",
    "amp", "spacing", "modality", "seed", "mask_ratio", "cube_size", "val_every", "val_fraction", "overlap",
    "sw_batch_size", "pretrain_epochs", "clip_grad_norm", "consistency_weight", "context_mask_ratio",
    "context_mask_shape", "context_tube_axis", "ema_mode", "ema_momentum", "mim_patch_size", "anatomask_mask_ratio",
    "guided_final_ratio", "anatomask_ema_decay", "teacher_error_target", "anatomask_transfer",
    "iterations", "pretrain_iterations",
]


def settings_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The given (non-None) training options as :class:`Settings` keyword arguments."""
    values = {name: getattr(args, name) for name in SETTING_ARGS if getattr(args, name, None) is not None}
    if args.epochs is not None:
        values["epochs"] = args.epochs
    params = _arch_params(args)
    if params is not None:
        values["arch_params"] = params
    if "roi" in values:
        values["roi"] = tuple(values["roi"])
    for key in ("spacing", "ema_momentum", "anatomask_ema_decay"):
        if key in values:
            values[key] = tuple(values[key])
    return values


def finish(progress: Any, result: Dict[str, Any], what: str) -> int:
    """Report the final result: a sentence on stderr and the ``result`` JSON line."""
    dice = result.get("validation_dice")
    if dice:
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} n/a" for k, v in dice.items())
        progress.log(f"Best validation Dice (epoch {result.get('best_epoch')}): {shown}.")
    progress.log(what)
    progress.result(**result)
    return 0


def run_command(
    args: argparse.Namespace,
    function: Callable[..., Dict[str, Any]],
    *positional: Any,
    done: Callable[[Dict[str, Any]], str],
    plan: Optional[Callable[[Dict[str, Any], Any, Any], Dict[str, Any]]] = None,
    **kwargs: Any,
) -> int:
    """A training command's run: ``function(*positional, **kwargs)`` with the device, resume, overwrite,
    progress and training settings of ``args``; ``done(result)`` is the closing sentence.
    ``plan(settings, progress, device) -> settings`` completes the given settings once the outputs
    are checked (``lwi train``: :mod:`lwi.plan`)."""
    from contextlib import nullcontext

    from lwi import distributed
    from lwi.outputs import writing
    from lwi.progress import Progress

    # Under torchrun: join the process group; rank 0 alone reports (docs/distributed.md).
    device = distributed.init_from_env(args.device) or args.device
    progress = Progress(args.progress if distributed.is_main() else "none")
    if distributed.world_size() > 1:
        progress.log(f"Distributed training on {distributed.world_size()} processes ({device.type}).")
    # Checked (writable, not a folder, not replaced without --overwrite) and locked before any work;
    # a failed run removes what it wrote, unless a resumable checkpoint is there to continue from.
    # Rank 0 writes the files, so it alone checks, locks and cleans up.
    outputs = writing(
        training_outputs(args), inputs=training_inputs(args), overwrite=args.overwrite, resume=args.resume, lock=True
    )
    completed = False
    try:
        with outputs if distributed.is_main() else nullcontext():
            settings = settings_from_args(args)
            if plan is not None:
                settings = plan(settings, progress, device)
            result = function(
                *positional,
                device=device,
                resume=args.resume,
                overwrite=args.overwrite,
                progress=progress,
                **kwargs,
                **settings,
            )
        completed = True
    finally:
        distributed.shutdown(completed)
    return finish(progress, result, done(result))


def training_inputs(args: argparse.Namespace) -> List[Any]:
    """What a training command reads, as :class:`lwi.outputs.Input`: the dataset's files, the
    ``--unlabeled`` images and the ``--init`` checkpoint (no output may be one of them)."""
    from pathlib import Path

    from lwi.data.dataset import dataset_files, list_images
    from lwi.outputs import Input, inputs_of

    inputs = inputs_of("--data", dataset_files(args.data))
    for folder in getattr(args, "unlabeled", None) or []:
        try:
            inputs += inputs_of("--unlabeled", list_images(folder))
        except LWIError:
            pass  # the run says what is wrong with the folder
    if getattr(args, "init", None):
        inputs.append(Input(Path(args.init), "--init"))
    return inputs


def training_outputs(args: argparse.Namespace) -> List[Any]:
    """The files a training command writes, as :class:`lwi.outputs.Output` (the main one first)."""
    from pathlib import Path

    from lwi.names import derived_path
    from lwi.outputs import Output

    out = Path(args.out)
    if args.command == "pretrain":
        return [Output(out, "--out", resumable=True)]
    if args.command == "train":
        from lwi.strategies import strategy_outputs

        paths = strategy_outputs(args.strategy, out)
    else:
        paths = [out, derived_path(out, "last")]
    return [Output(p, "--out", resumable=p != out) for p in paths]
