"""The training options, defined once: each setting's key, ``lwi train`` flag, range, default and help.

The key is the field of :class:`lwi.strategies.settings.Settings` (a keyword of ``train()``,
``pretrain()``, ``finetune()``) or, for the budget options, an input of the plan. This table is read
by the training commands' parsers (``lwi train``, ``pretrain``, ``finetune``, ``plan``, ``experiment``:
:mod:`lwi.commands.training_options`), by ``Settings`` (its fields, defaults and range checks:
:func:`check_value`) and by the LWI Training panel (``LWICommon.training_settings``), so a value one of
them refuses, all of them refuse, with the same sentence. Standard library only: the Slicer modules
load this file without the core's requirements. To add an option: one row here, then use its key.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

# Relative: the Slicer modules load these standard-library files as a package of their own (LWICommon.vocabulary).
from .names import ARCHITECTURE_NAMES, MODALITIES
from .option_types import FRACTION, POSITIVE, POSITIVE_NUMBER, duration, number, whole

#: The smallest ROI axis anywhere (the CLI, the Python API, the panel): the paper's 16^3 mask cube.
ROI_MINIMUM = 16
ROI_SIZE = whole(ROI_MINIMUM)
SEED = whole(0, 2**32 - 1)
#: ``default`` of an option the plan sets when ``lwi train``/``lwi plan`` are not given it.
FROM_PLAN = "from the plan"

#: Argument groups of ``--help``, in order.
GROUPS: Dict[str, str] = {
    "network": "network",
    "optimisation": "optimisation",
    "preprocessing": "preprocessing",
    "budget": "budget (default: the plan's; see lwi plan)",
    "step1": "Step 1 (LWI pre-training)",
    "step2": "Step 2 (fine-tuning) and validation",
    "medcontext": "MedContext (--strategy medcontext)",
    "anatomask": "AnatoMask (--strategy anatomask)",
    "run": "run",
    "paper": "recipe and the deviations from the paper (lwi plan lists them with their reasons)",
    "api": "Python API only",
}


@dataclass(frozen=True)
class TrainingOption:
    """One training option.

    ``key``: Settings field (or plan input); ``flag``: the CLI's (None: Python API only);
    ``type``: a range type (``whole``, ``number``) or a tuple of choices; ``default``: the Settings
    default (None: the rule in ``default_text``); ``nargs``: 3 (ROI, spacing) or 2 (momentum pairs);
    ``planned``: the plan sets it when ``lwi train`` is not given it; ``resumable``: a resumed run may
    change it; ``inherited``: ``finetune`` takes it from the Step-1 checkpoint; ``setting``: a
    Settings field (else a plan input: the budgets); ``param``: an entry of ``arch_params``.
    """

    key: str
    flag: Optional[str]
    type: Any
    default: Any
    group: str
    help: str
    default_text: str = ""
    nargs: Optional[int] = None
    metavar: Any = None
    planned: bool = False
    resumable: bool = False
    inherited: bool = False
    setting: bool = True
    param: bool = False
    aliases: Tuple[str, ...] = ()

    @property
    def choices(self) -> Optional[Tuple[str, ...]]:
        return self.type if isinstance(self.type, tuple) else None


Opt = TrainingOption
TRAINING_OPTIONS: Tuple[TrainingOption, ...] = (
    # network
    Opt("arch", "--arch", ARCHITECTURE_NAMES, "unetr", "network", "architecture", planned=True, inherited=True),
    Opt("roi", "--roi", ROI_SIZE, (96, 96, 96), "network", f"crop / sliding-window size in voxels, each at least {ROI_MINIMUM}",
      nargs=3, metavar=("X", "Y", "Z"), planned=True, inherited=True),
    Opt("feature_size", "--feature-size", POSITIVE, None, "network", "UNETR/SwinUNETR feature size", "UNETR 16", param=True),
    Opt("hidden_size", "--hidden-size", POSITIVE, None, "network", "UNETR transformer width", "768", param=True),
    Opt("mlp_dim", "--mlp-dim", POSITIVE, None, "network", "UNETR transformer MLP width", "3072", param=True),
    Opt("num_heads", "--num-heads", POSITIVE, None, "network", "UNETR attention heads", "12", param=True),
    Opt("init_filters", "--init-filters", POSITIVE, None, "network", "SegResNet/MedNeXt first-stage channels",
      "the network's", param=True),
    # optimisation
    Opt("epochs", "--epochs", POSITIVE, 2000, "optimisation", "Step-2 epochs; Step 1's are --pretrain-epochs",
      planned=True, resumable=True),
    Opt("batch_size", "--batch-size", POSITIVE, 2, "optimisation", "crops per iteration", planned=True),
    Opt("iterations_per_epoch", "--iterations-per-epoch", POSITIVE, None, "optimisation", "iterations per epoch",
      "images / batch size, rounded up", planned=True),
    Opt("lr", "--lr", POSITIVE_NUMBER, 1e-4, "optimisation", "AdamW learning rate", planned=True),
    Opt("pretrain_lr", "--pretrain-lr", POSITIVE_NUMBER, None, "optimisation",
        "Step 1's (and AnatoMask pre-training's) own learning rate", "--lr", metavar="LR"),
    Opt("weight_decay", "--weight-decay", number(0.0), 1e-5, "optimisation", "AdamW weight decay"),
    Opt("warmup_epochs", "--warmup", whole(0), None, "optimisation",
      "linear warmup epochs before the cosine decay, stepped every iteration", "5% of each stage's iterations", metavar="EPOCHS"),
    Opt("clip_grad_norm", "--clip-grad-norm", POSITIVE_NUMBER, None, "optimisation", "clip the gradients' 2-norm at NORM",
      "12 in AnatoMask pre-training, else no clipping", metavar="NORM"),
    Opt("checkpoint_every", "--checkpoint-every", POSITIVE, None, "optimisation", "checkpoint interval",
      "1/10 of the epochs", metavar="EPOCHS", resumable=True),
    Opt("amp", "--no-amp", bool, None, "optimisation", "no mixed precision on CUDA", "on with CUDA", resumable=True),
    # preprocessing
    Opt("spacing", "--spacing", POSITIVE_NUMBER, None, "preprocessing", "target spacing in mm", "the dataset's median",
      nargs=3, metavar=("X", "Y", "Z"), planned=True, inherited=True),
    Opt("modality", "--modality", MODALITIES, None, "preprocessing", "intensity normalisation", "from dataset.json",
      inherited=True),
    # budget: inputs of the plan, not settings
    Opt("time", "--time", duration, None, "budget",
      "time budget for the whole run, e.g. 20m or 1h30m: both steps' iterations come from a timing probe on this machine",
      "on a CPU 30m; on a GPU a fixed number of iterations", metavar="DURATION", setting=False),
    Opt("iterations", "--iterations", POSITIVE, None, "budget", "Step-2 iterations (instead of --epochs)", FROM_PLAN,
      setting=False),
    # A setting too: Step 1 runs exactly this many iterations (its last epoch may be partial), as planned.
    Opt("pretrain_iterations", "--pretrain-iterations", whole(0), None, "budget",
      "Step-1 iterations, exactly (instead of --pretrain-epochs)", FROM_PLAN, planned=True, resumable=True),
    # Step 1
    Opt("pretrain_epochs", "--pretrain-epochs", whole(0), 400, "step1", "Step-1 epochs (0: no Step 1, scratch only)",
      planned=True, resumable=True, inherited=True),
    Opt("mask_ratio", "--mask-ratio", FRACTION, 0.4, "step1", "share of masked cubes"),
    Opt("cube_size", "--cube-size", POSITIVE, 16, "step1", "edge of the masked cubes in voxels", planned=True),
    # Step 2
    Opt("val_every", "--val-every", POSITIVE, None, "step2", "validation interval", "1/20 of the epochs",
      metavar="EPOCHS", planned=True, resumable=True),
    Opt("val_fraction", "--val-fraction", FRACTION, None, "step2",
      "share of cases held out when dataset.json lists no 'validation' cases (0 = none)",
      "0.2 from 10 cases on; below, none: every case trained, the last model kept", inherited=True),
    Opt("overlap", "--overlap", FRACTION, 0.5, "step2", "sliding-window overlap in validation"),
    Opt("sw_batch_size", "--sw-batch-size", POSITIVE, 4, "step2", "sliding windows per network call in validation",
      resumable=True, aliases=("--sw-batch",)),
    # MedContext (docs/strategies.md): own names, so no default collides with LWI's on resume
    Opt("consistency_mode", "--consistency-mode", ("share", "code"), "share", "medcontext",
        "share: the teacher consistency term's gradient is --consistency-share of the masked pass's DiceCE gradient; "
        "code: beta x the authors' term divided by the teacher logits' 2-norm (inert at these sizes; ablation)"),
    Opt("consistency_share", "--consistency-share", number(0.0), 0.5, "medcontext",
        "the consistency term's gradient share with --consistency-mode share", metavar="SHARE"),
    Opt("consistency_weight", "--consistency-weight", number(0.0), 0.5, "medcontext", "beta with --consistency-mode code"),
    Opt("context_mask_ratio", "--context-mask-ratio", FRACTION, 0.6, "medcontext", "share of masked tokens or patches"),
    Opt("context_mask_shape", "--context-mask-shape", ("tube", "cube"), "tube", "medcontext", "tube masks or random cubes"),
    Opt("context_tube_axis", "--context-tube-axis", ("x", "y", "z"), "z", "medcontext", "the axis the tubes run along"),
    Opt("ema_mode", "--ema-mode", ("run", "paper", "code"), "run", "medcontext",
        "run: momentum cosine per iteration from START scaled to the run's length; paper: from START as given "
        "whatever the length; code: the authors' once-per-epoch update (ablation)"),
    Opt("ema_momentum", "--ema-momentum", number(0.0, 1.0), (0.996, 1.0), "medcontext", "EMA momentum, start <= end",
      nargs=2, metavar=("START", "END")),
    # AnatoMask
    Opt("mim_patch_size", "--mim-patch-size", POSITIVE, 16, "anatomask", "masked patch edge in voxels (also MedContext's CNN masks)"),
    Opt("anatomask_mask_ratio", "--anatomask-mask-ratio", FRACTION, 0.6, "anatomask", "share of masked patches"),
    Opt("guided_final_ratio", "--guided-final-ratio", FRACTION, 0.5, "anatomask",
      "final share of masked patches chosen by the teacher"),
    Opt("anatomask_ema_decay", "--anatomask-ema-decay", number(0.0, 1.0), (0.999, 0.9999), "anatomask",
      "teacher EMA decay, start <= end", nargs=2, metavar=("START", "END")),
    Opt("anatomask_schedule", "--anatomask-schedule", ("run", "paper"), "run", "anatomask",
        "run: the guided share ramps by iteration and the EMA decays scale to the run's length; paper: the "
        "authors' constants as written (by epoch, decays unscaled)"),
    Opt("teacher_error_target", "--teacher-error-target", ("normalized", "raw"), "normalized", "anatomask",
      "score the teacher against the normalised patches or the raw ones (the authors' code)"),
    Opt("anatomask_transfer", "--anatomask-transfer", ("encoder", "all"), "encoder", "anatomask",
      "fine-tune from the encoder's weights (as the paper) or all but the output layer"),
    # recipe (lwi/recipes.py) and the deviations from the paper it switches off
    Opt("recipe", "--recipe", ("default", "paper"), "default", "paper",
        "default: this project's choices (lwi plan lists where they depart from the paper, and why); paper: LWI as "
        "the paper trains UNETR on Synapse (96^3, 1.5 x 1.5 x 2 mm, AdamW 1e-4, 14,400 + 90,000 iterations, none of "
        "the deviations; options you give still win; docs/reproduce-paper.md)"),
    Opt("order_head_norm", "--order-head-norm", ("layer", "none"), None, "paper",
        "layer-normalised slot features before the order heads", "layer on UNETR, none on CNNs"),
    Opt("output_bias", "--output-bias", ("prior", "default"), "prior", "paper",
        "prior: the output layer starts at the log class priors; default: MONAI's initialisation (the paper)"),
    Opt("step1_flips", "--step1-flips", ("in-plane", "all"), "in-plane", "paper",
        "axes Step 1 may flip: in-plane only, or all (depth too, as the authors' code)"),
    # run
    Opt("seed", "--seed", SEED, 0, "run", "random seed (a resumed or fine-tuned run keeps its own)", inherited=True),
    # Python API only
    Opt("w_rec", None, number(0.0), 1.0, "api", "weight of Step 1's reconstruction loss"),
    Opt("w_order", None, number(0.0), 1.0, "api", "weight of Step 1's order-prediction loss"),
    Opt("pos_fraction", None, number(0.0, 1.0), 0.5, "api", "share of crops centred on a labelled voxel"),
)
del Opt
OPTIONS: Dict[str, TrainingOption] = {o.key: o for o in TRAINING_OPTIONS}
#: The Settings fields the table defines (``arch_params`` gathers the ``param`` options).
SETTING_KEYS: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.setting and not o.param)
PARAM_KEYS: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.param)
#: The settings a resumed run may change (the others define the run and come from its checkpoint).
RESUMABLE_CHANGES: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.resumable)
#: What ``finetune`` takes from its Step-1 checkpoint unless given (with ``arch_params``).
FINETUNE_INHERITS: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.inherited)
#: The settings the plan decides when ``lwi train`` is not given them (with ``arch_params``).
PLANNED: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.planned)
CHOICES: Dict[str, Tuple[str, ...]] = {o.key: o.choices for o in TRAINING_OPTIONS if o.choices}
TUPLE_FIELDS: Tuple[str, ...] = tuple(o.key for o in TRAINING_OPTIONS if o.nargs and o.setting)


def parse_one(option: TrainingOption, value: Any) -> Any:
    """One value (or one element of a pair/triple) of ``option`` parsed; raises
    ``argparse.ArgumentTypeError`` (the parser's own error) with the allowed range."""
    if option.choices is not None:
        text = str(value).upper() if option.key == "modality" else value
        if text not in option.choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, option.choices))}, not {value!r}.")
        return text
    if option.type is bool:
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"must be true or false, not {value!r}.")
        return value
    if option.type is str:
        return str(value)
    return option.type(value)


def check_value(key: str, value: Any) -> Any:
    """``value`` of the option ``key`` checked (None = not given) and parsed: a tuple for the pairs and
    triples. Raises ValueError with one sentence naming the option and its flag."""
    option = OPTIONS[key]
    if value is None:
        return None
    name = f"{key} ({option.flag})" if option.flag else key
    try:
        if option.nargs:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != option.nargs:
                raise argparse.ArgumentTypeError(f"must be {option.nargs} values, not {value!r}.")
            parsed = tuple(parse_one(option, v) for v in value)
            if option.nargs == 2 and parsed[0] > parsed[1]:
                raise argparse.ArgumentTypeError(f"must be start <= end, not {list(parsed)}.")
            return parsed
        return parse_one(option, value)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"The setting {name} {exc}") from None


def check_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Every known key of ``values`` checked (:func:`check_value`); unknown keys are kept as they are."""
    return {k: (check_value(k, v) if k in OPTIONS else v) for k, v in values.items()}


def problems(values: Mapping[str, Any]) -> List[str]:
    """The sentences of :func:`check_value` for each value of ``values`` it refuses (empty: all fine)."""
    found = []
    for key, value in values.items():
        try:
            check_value(key, value)
        except ValueError as exc:
            found.append(str(exc))
    return found


def help_text(option: TrainingOption, planned: bool = False, default_note: str = "") -> str:
    """``--help`` text: the help and its default (``planned``: the command takes the planned ones from
    the plan; ``default_note`` replaces the default's text)."""
    if default_note:
        default = default_note
    elif planned and option.planned:
        default = FROM_PLAN
    elif option.default_text:
        default = option.default_text
    elif option.nargs and option.default is not None:
        default = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in option.default)
    elif option.default is None or option.type is bool:
        return option.help
    else:
        default = f"{option.default:g}" if isinstance(option.default, float) else str(option.default)
    return f"{option.help} (default: {default})"


def defaults() -> Dict[str, Any]:
    """Each Settings field's default (None for those whose default is a rule)."""
    return {k: OPTIONS[k].default for k in SETTING_KEYS}

