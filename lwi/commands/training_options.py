"""The training commands' parsers and glue (``lwi pretrain``, ``finetune``, ``train``, ``plan``,
``experiment``; not a command), built from the option table :mod:`lwi.training_options`.

Every training option defaults to None here, meaning "not given": a new run then uses the
defaults of :class:`lwi.strategies.settings.Settings` (or the plan's), a resumed run keeps its stored
value, and ``lwi finetune`` inherits the network and preprocessing of its Step-1 checkpoint.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from lwi import training_options as table
from lwi.commands import options
from lwi.errors import LWIError

OUTPUT_NOTE = (
    "Files: MODEL is the best model (by mean validation Dice; the last one without validation), "
    "MODEL with a '.last' infix (model.last.lwi.safetensors) holds the last state with the optimizer for "
    "--resume, and the lwi strategy keeps its Step-1 checkpoint with a '.step1' infix. Existing files are "
    "never replaced unless --overwrite (or continued with --resume)."
)


def add_options(
    parser: argparse.ArgumentParser,
    keys: Sequence[str],
    *,
    planned: bool = False,
    notes: Optional[Mapping[str, str]] = None,
    helps: Optional[Mapping[str, str]] = None,
) -> None:
    """Register the table's options ``keys`` (:mod:`lwi.training_options`) in their argument groups; each
    is parsed into ``args.<key>`` with None for "not given". ``planned``: the command's plan sets the
    planned options; ``notes``: a key's default text; ``helps``: a key's help text."""
    for key in keys:
        option = table.OPTIONS[key]
        text = table.help_text(option, planned, (notes or {}).get(key, ""))
        if helps and key in helps:
            text = helps[key]
        kwargs: Dict[str, Any] = {"dest": key, "default": None, "help": text.replace("%", "%%")}
        if option.type is bool:  # a --no-... switch of a default-on setting
            kwargs.update(action="store_false")
        else:
            kwargs.update(type=_parser_type(option), nargs=option.nargs, metavar=option.metavar)
            if option.choices:
                kwargs.update(choices=option.choices, metavar=None)
        group(parser, option.group).add_argument(option.flag, *option.aliases, **kwargs)


def group(parser: argparse.ArgumentParser, name: str) -> Any:
    """The argument group ``name`` (:data:`lwi.training_options.GROUPS`) of ``parser``, made on first use."""
    title = table.GROUPS[name]
    for existing in parser._action_groups:
        if existing.title == title:
            return existing
    return parser.add_argument_group(title)


def _parser_type(option: Any) -> Any:
    if option.key == "modality":
        return str.upper
    if option.choices or option.type is str:
        return None
    return option.type


def add_common(
    parser: argparse.ArgumentParser,
    *,
    planned: bool = False,
    notes: Optional[Mapping[str, str]] = None,
    helps: Optional[Mapping[str, str]] = None,
) -> None:
    """The data, network, optimisation, preprocessing and run options of every training command
    (``planned``, ``notes``, ``helps``: as for :func:`add_options`)."""
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset folder (MSD layout or imagesTr/ + labelsTr/)")
    add_options(parser, group_keys("network", "optimisation", "preprocessing"), planned=planned, notes=notes, helps=helps)
    group(parser, "network").add_argument(
        "--arch-param", action="append", default=[], metavar="KEY=VALUE",
        help="any other parameter of the architecture (VALUE as JSON, e.g. blocks_down=[1,1,1]); repeatable",
    )
    run = group(parser, "run")
    options.add_device(run)
    add_options(parser, ["seed"])
    options.add_progress(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    options.add_overwrite(run)


def add_unlabeled(parser: argparse.ArgumentParser) -> None:
    group(parser, "step1").add_argument(
        "--unlabeled", action="append", metavar="DIR", help="a folder of extra images without labels for Step 1; repeatable"
    )


def group_keys(*groups: str) -> List[str]:
    """The keys of the options with a flag in ``groups``, in the table's order."""
    return [o.key for o in table.TRAINING_OPTIONS if o.group in groups and o.flag]


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Everything ``lwi train`` takes but its output (shared with ``lwi plan``)."""
    from lwi.names import DEFAULT_STRATEGY, STRATEGY_CHOICES

    parser.add_argument(
        "--strategy", choices=list(STRATEGY_CHOICES), default=DEFAULT_STRATEGY,
        help="lwi: Step 1 then Step 2; scratch: Step 2 from random weights for the same total iterations; "
        "medcontext: one stage with a masked student and an EMA teacher, same total iterations; anatomask: "
        "teacher-guided masked-image pre-training then Step 2; auto (default): the plan chooses scratch for "
        "short Step-2 budgets and lwi otherwise (lwi/strategy_choice.py; docs/results.md); a given Step-1 "
        "budget or --unlabeled means lwi. The plan prints its choice; see docs/strategies.md",
    )
    parser.add_argument(
        "--from", dest="from_model", metavar="MODEL", default=None,
        help="improve this finished model instead of starting over: its network, labels and preprocessing, all "
        "its weights, trained on the current cases (old and new) for a shorter budget the plan chooses; "
        "validation only on cases it never trained on (docs/correction-loop.md)",
    )
    add_training(parser)


def add_training(parser: argparse.ArgumentParser) -> None:
    """Every training option of ``lwi train`` but the strategy (data, network, schedule, budget, both steps,
    the strategies' own settings, run); ``lwi experiment`` applies them to each of its runs."""
    add_common(parser, planned=True)
    add_options(parser, group_keys("budget", "step1"), planned=True)
    add_unlabeled(parser)
    add_options(parser, group_keys("step2", "medcontext", "anatomask", "paper"), planned=True)


def _arch_params(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    params: Dict[str, Any] = {}
    for name in table.PARAM_KEYS:
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


def settings_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The given (non-None) training options as :class:`Settings` keyword arguments (plus the plan's
    ``iterations`` and ``pretrain_iterations``), tuples for the pairs and triples."""
    keys = [o.key for o in table.TRAINING_OPTIONS if not o.param and o.key != "time"]
    try:
        values = table.check_values({k: getattr(args, k) for k in keys if getattr(args, k, None) is not None})
    except ValueError as exc:  # a rule between values (a pair's start <= end): one sentence
        raise LWIError(str(exc)) from None
    params = _arch_params(args)
    if params is not None:
        values["arch_params"] = params
    if values.get("recipe") is not None:
        from lwi.recipes import apply_recipe

        values = apply_recipe(values["recipe"], values)
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
                outputs_checked=True,  # just above, before the plan
                **kwargs,
                **settings,
            )
        completed = True
    except BaseException as exc:
        distributed.note_failure(exc)  # before leaving the group: the first rank to fail reports
        raise
    finally:
        distributed.shutdown(completed)
    return finish(progress, result, done(result))


def training_inputs(args: argparse.Namespace) -> List[Any]:
    """What a training command reads, as :class:`lwi.outputs.Input`: the dataset's files, the
    ``--unlabeled`` images, the ``--init`` checkpoint and the ``--from`` model (no output may be one
    of them)."""
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
    if getattr(args, "from_model", None):
        inputs.append(Input(Path(args.from_model), "--from"))
    return inputs


def training_outputs(args: argparse.Namespace) -> List[Any]:
    """The files a training command writes, as :class:`lwi.outputs.Output` (the main one first)."""
    from pathlib import Path

    from lwi.names import derived_path
    from lwi.outputs import Output

    out = Path(args.out)
    if args.command == "pretrain":
        return [Output(out, "--out", resumable=True)]
    if args.command == "train" and getattr(args, "from_model", None):
        paths = [out, derived_path(out, "last")]  # improving a model: Step 2 alone (lwi.improve)
    elif args.command == "train":
        from lwi.strategies import strategy_outputs

        paths = strategy_outputs(args.strategy, out)
    else:
        paths = [out, derived_path(out, "last")]
    return [Output(p, "--out", resumable=p != out) for p in paths]
