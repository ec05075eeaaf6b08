"""``lwi experiment``: learning curves and a paired comparison of training strategies.

For every K (training-set size) and seed, K cases are drawn from a pool of labelled cases, every
strategy is trained on them with the same settings, every test case is segmented with the result
and scored (Dice, HD95 per label: :mod:`lwi.evaluation`). Draws are nested: a seed's K=5 cases are
the first five of the same shuffled pool as its K=10 cases, so a learning curve is not confounded
by a new draw at each K; the training seed of each run is the draw's seed.

Each run is a child process (``python -m lwi.experiment_run SPEC``, :mod:`lwi.experiment_run`) that
trains through :func:`lwi.strategies.train` and evaluates with :class:`lwi.inference.Segmenter`,
reporting JSON lines on its stdout; up to ``parallel`` children run at once. The folder ``out``::

    experiment.json        what was asked (data, test set, options); checked when resuming
    splits/test/           dataset.json listing the test cases (absolute paths, nothing copied)
    splits/k5-seed0/       dataset.json listing the K training cases of that draw
    runs/k5-seed0-lwi/     the model bundle and checkpoints, events.jsonl (the child's JSON lines),
                           log.txt (its messages), train.json once training has finished
    results.jsonl          one line per finished run (written only by the parent process)
    report.md, report.html, plots/   see :mod:`lwi.report`

A run with a line in results.jsonl is finished and skipped when the experiment is resumed; an
interrupted one continues from its last checkpoint. The JSON events are documented in
docs/experiment.md.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lwi.data.split import draw_training_cases, hold_out
from lwi.errors import LWIError
from lwi.evaluation import write_json
from lwi.experiment_files import CONFIG, RESULTS, read_results
from lwi.outputs import open_append
from lwi.progress import Progress, clean_fields

PathLike = Union[str, Path]

MODEL = "model.lwi.safetensors"
# Everything an experiment writes into its folder: --overwrite removes these and nothing else.
OUTPUTS = (CONFIG, RESULTS, "splits", "runs", "report.md", "report.html", "plots")
CONFIG_VERSION = 1
CURVE_POINTS = 200  # training-curve points kept per run and stage in results.jsonl


@dataclass(frozen=True)
class RunSpec:
    """One training run of the experiment: K cases of draw ``seed``, trained with ``strategy``."""

    k: int
    seed: int
    strategy: str

    @property
    def draw(self) -> str:
        return f"k{self.k}-seed{self.seed}"

    @property
    def id(self) -> str:
        return f"{self.draw}-{self.strategy}"


def write_subset(folder: Path, dataset: Any, names: Sequence[str], title: str) -> Path:
    """A dataset folder (just dataset.json) listing ``names`` of ``dataset`` by absolute path."""
    wanted = set(names)
    cases = [c for c in dataset.cases if c.name in wanted]
    write_json(
        {
            "name": title,
            "description": f"Cases of {dataset.root.resolve()} chosen by lwi experiment (files not copied).",
            "modality": {"0": dataset.modality},
            "labels": {str(k): v for k, v in sorted(dataset.labels.items())},
            "numTraining": len(cases),
            "training": [{"image": str(Path(c.image).resolve()), "label": str(Path(c.label).resolve())} for c in cases],
        },
        folder / "dataset.json",
        option="--out",
    )
    return folder


def check_unlabeled_test(unlabeled: Optional[Sequence[PathLike]], test_cases: Sequence[Any]) -> None:
    """Refuse ``--unlabeled`` images that are test cases (same name, file or content): Step 1 would
    see the images the comparison is scored on, favouring the strategies with a Step 1."""
    from lwi.data.dataset import Case, case_name, list_images
    from lwi.data.split import same_images

    images = [Case(name=case_name(p), image=Path(p), label=None) for folder in unlabeled or [] for p in list_images(folder)]
    clash = sorted(c.name for c in same_images(images, test_cases)) if images else []
    if clash:
        raise LWIError(
            f"The --unlabeled image(s) {', '.join(clash)} are test cases of this experiment (same name, file or content); "
            "give --unlabeled a folder without them."
        )


class Experiment:
    """An experiment folder: its configuration, draws, runs and results (see the module docstring)."""

    def __init__(self, out: PathLike):
        self.out = Path(out)

    @property
    def results_path(self) -> Path:
        return self.out / RESULTS

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / "runs" / spec.id

    def prepare(
        self,
        *,
        data: PathLike,
        test: Optional[PathLike],
        test_cases: Optional[int],
        strategies: Sequence[str],
        ks: Sequence[int],
        seeds: Sequence[int],
        options: Mapping[str, Any],
        unlabeled: Optional[Sequence[PathLike]],
        resume: bool,
        overwrite: bool,
        progress: Progress,
        plan: Optional[Callable[[Path, str], Tuple[Dict[str, Any], Dict[str, Any]]]] = None,
    ) -> List[RunSpec]:
        """Check everything and write the configuration and draws; returns every run, finished or not.

        ``plan(pool folder, strategy) -> (options, plan description)`` completes the given ``options``
        once per strategy, for all of its runs (``lwi experiment``: :func:`lwi.plan.plan_options` on the
        training pool), so each strategy trains with its own plan whatever the order they are listed
        in; a resumed experiment keeps its stored plans (a strategy added on resume is planned then). Nothing is written before the data, the test set, K and
        the output folder have been checked.
        """
        from lwi.data.dataset import load_dataset
        from lwi.strategies import get_strategy

        if resume and overwrite:
            raise LWIError("--resume continues the experiment in --out and --overwrite starts it again; choose one.")
        if (test is None) == (test_cases is None):
            raise LWIError("Give the test set: --test DIR (a labelled dataset) or --test-cases N (held out of --data).")
        strategies = [get_strategy(s).NAME for s in strategies]  # clear error for unknown names
        for what, values in (("strategies", strategies), ("--k", ks), ("--seeds", seeds)):
            if not values:
                raise LWIError(f"Give at least one value for {what}.")
            if len(set(values)) != len(values):
                raise LWIError(f"{what} lists a value twice.")
        if min(ks) < 1:
            raise LWIError("Every K must be at least 1.")
        pool_set = load_dataset(data, require_labels=True)
        if test is not None:
            test_set = load_dataset(test, require_labels=True)
            test_images = {Path(c.image).resolve() for c in test_set.cases}
            pool = [c.name for c in pool_set.cases if Path(c.image).resolve() not in test_images]
            if len(pool) < len(pool_set.cases):
                progress.log(f"{len(pool_set.cases) - len(pool)} case(s) of --data are also test cases: not drawn for training.")
            test_names = [c.name for c in test_set.cases]
        else:
            test_set = pool_set
            test_names = hold_out([c.name for c in pool_set.cases], int(test_cases))
            pool = [c.name for c in pool_set.cases if c.name not in set(test_names)]
        if max(ks) > len(pool):
            raise LWIError(f"K={max(ks)} is more than the {len(pool)} cases available for training.")
        check_unlabeled_test(unlabeled, [c for c in test_set.cases if c.name in set(test_names)])
        unknown = sorted(set(test_set.labels) - set(pool_set.labels))
        if unknown:
            raise LWIError(f"The test set has label value(s) {unknown} that the training data does not declare.")

        from lwi.data.dataset import dataset_files
        from lwi.outputs import Output, check_collisions, inputs_of

        # No file of the experiment folder (which --overwrite empties) may be one it reads.
        read = inputs_of("--data", dataset_files(data)) + (inputs_of("--test", dataset_files(test)) if test else [])
        for folder in unlabeled or []:
            read += inputs_of("--unlabeled", [folder])
        check_collisions(read, [Output(self.out, "--out", folder=True, files=OUTPUTS)])
        self.check_folder(resume, overwrite)
        stored = resume and (self.out / CONFIG).exists()
        given = dict(clean_fields(dict(options)))
        old = json.loads((self.out / CONFIG).read_text(encoding="utf-8")) if stored else {}
        plans: Dict[str, Dict[str, Any]] = {}
        plan_texts: Dict[str, Any] = {}
        for strategy in strategies:
            if strategy in (old.get("plans") or {}):
                plans[strategy], plan_texts[strategy] = old["plans"][strategy], (old.get("plan") or {}).get(strategy)
            elif stored and not old.get("plans"):  # an experiment from before per-strategy plans
                plans[strategy], plan_texts[strategy] = dict(old.get("options") or given), None
            elif plan is not None:
                import tempfile

                with tempfile.TemporaryDirectory() as tmp:  # the pool as a dataset folder, for the plan only
                    folder = write_subset(Path(tmp), pool_set, pool, "lwi experiment: training pool")
                    planned, plan_texts[strategy] = plan(folder, strategy)
                plans[strategy] = dict(clean_fields(dict(planned)))
            else:
                plans[strategy], plan_texts[strategy] = given, None
        from lwi.strategies.settings import make_settings

        for planned in plans.values():
            make_settings({**planned, "seed": 0})  # a bad setting is reported now, not by every run
        planned = plans[strategies[0]]
        config = {
            "version": CONFIG_VERSION,
            "data": str(Path(data).resolve()),
            "test": str(Path(test).resolve()) if test is not None else None,
            "test_cases": test_names,
            "pool": sorted(pool),
            "given": given,
            "options": planned,
            "plans": plans,
            "plan": plan_texts,
            "unlabeled": [str(Path(u).resolve()) for u in unlabeled or []],
            "strategies": list(strategies),
            "k": [int(k) for k in ks],
            "seeds": [int(s) for s in seeds],
        }
        config = self._merge_config(config) if stored else config
        if overwrite:
            self.remove_earlier()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(config, self.out / CONFIG, option="--out")
        write_subset(self.out / "splits" / "test", test_set, test_names, "lwi experiment: test cases")
        specs = []
        for k in config["k"]:
            for seed in config["seeds"]:
                names = draw_training_cases(config["pool"], k, seed)
                write_subset(self.out / "splits" / f"k{k}-seed{seed}", pool_set, names, f"lwi experiment: K={k}, seed {seed}")
                specs.extend(RunSpec(k, seed, s) for s in config["strategies"])
        self.config = config
        return specs

    def check_folder(self, resume: bool, overwrite: bool) -> None:
        """Refuse an existing experiment unless resuming or ``overwrite`` (:meth:`remove_earlier`
        removes its files once the rest is checked); the folder must be writable."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise LWIError(f"{out} exists and is not a folder; choose another --out.")
        ours = [out / name for name in OUTPUTS if (out / name).exists()]
        if resume:
            if not (out / CONFIG).exists():
                raise LWIError(f"Nothing to resume: {out} holds no {CONFIG}.")
        elif ours and not overwrite:
            raise LWIError(
                f"{out} already holds an experiment; pass --resume to continue it (finished runs are skipped), "
                "--overwrite to start it again, or choose another --out."
            )
        from lwi.outputs import Output, check_outputs

        # Writable (probed in the nearest existing folder): nothing is created before the work, so a
        # refused experiment leaves no empty folder behind.
        check_outputs([Output(out, "--out", folder=True)], overwrite=True)

    def remove_earlier(self) -> None:
        """``--overwrite``: remove the earlier experiment's files (only those), once everything is checked."""
        for path in (self.out / name for name in OUTPUTS):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()

    def _merge_config(self, new: Dict[str, Any]) -> Dict[str, Any]:
        """A resumed experiment keeps its data, test set and options; strategies, K and seeds may grow."""
        old = json.loads((self.out / CONFIG).read_text(encoding="utf-8"))
        for key, what in (
            ("data", "--data"), ("test", "--test"), ("test_cases", "the test cases"), ("pool", "the training pool"),
            ("given", "the training options"), ("unlabeled", "--unlabeled"),
        ):
            before = old.get(key, old.get("options")) if key == "given" else old.get(key)
            if json.dumps(before, sort_keys=True) != json.dumps(new[key], sort_keys=True):
                raise LWIError(
                    f"The experiment in {self.out} was run with other {what} ({_short(before)} instead of "
                    f"{_short(new[key])}); resume it with the same ones, or start another --out."
                )
        merged = dict(old)
        for key in ("strategies", "k", "seeds"):
            merged[key] = list(old[key]) + [v for v in new[key] if v not in old[key]]
        merged["plans"] = {**new["plans"], **(old.get("plans") or {})}
        merged["plan"] = {**new["plan"], **(old.get("plan") or {})} if isinstance(old.get("plan"), dict) else new["plan"]
        return merged

    # -- running -------------------------------------------------------------------------------
    def run(
        self, specs: Sequence[RunSpec], *, device: str, parallel: int, progress: Progress
    ) -> Dict[str, Any]:
        """Run every unfinished run of ``specs`` (at most ``parallel`` at once) and write the report."""
        done_ids = {r.get("run") for r in read_results(self.results_path)}
        pending = [s for s in specs if s.id not in done_ids]
        for spec in specs:
            if spec.id in done_ids:
                progress.emit("run_skipped", run=spec.id, k=spec.k, seed=spec.seed, strategy=spec.strategy)
        if done_ids & {s.id for s in specs}:
            progress.log(f"{len(specs) - len(pending)} of {len(specs)} runs already finished: skipped.")
        from lwi import interrupt

        scheduler = _Scheduler(self, pending, device=device, parallel=parallel, progress=progress, total=len(specs))
        with interrupt.handling():  # Ctrl-C or a kill stops the children too (they keep their checkpoints)
            failed = scheduler.run()
        from lwi.report import write_report

        report = write_report(self.out, progress=progress)
        finished = len(read_results(self.results_path))
        return {"runs": len(specs), "finished": finished, "failed": failed, **report}

    def options_for(self, strategy: str) -> Dict[str, Any]:
        """The training options of ``strategy``'s runs: its own plan (older experiments: the shared options)."""
        return dict((self.config.get("plans") or {}).get(strategy, self.config["options"]))

    def spec_file(self, spec: RunSpec, device: str) -> Path:
        """Write the child's instructions for ``spec`` and return their path."""
        run_dir = self.run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "spec.json"
        write_json(
            {
                "run": spec.id,
                "data": str(self.out / "splits" / spec.draw),
                "test": str(self.out / "splits" / "test"),
                "model": str(run_dir / MODEL),
                "strategy": spec.strategy,
                "seed": spec.seed,
                "device": device,
                "options": self.options_for(spec.strategy),
                "unlabeled": self.config["unlabeled"],
            },
            path,
            option="--out",
        )
        return path

    def result_line(self, spec: RunSpec, result: Mapping[str, Any], seconds: float) -> Dict[str, Any]:
        """The results.jsonl line of a finished run (its training curve read from events.jsonl)."""
        evaluation = result["evaluation"]
        train = result["train"]
        train_cases = json.loads((self.out / "splits" / spec.draw / "dataset.json").read_text(encoding="utf-8"))["training"]
        from lwi.data.dataset import case_name

        return clean_fields(
            {
                "run": spec.id,
                "k": spec.k,
                "seed": spec.seed,
                "strategy": spec.strategy,
                "train_cases": [case_name(c["image"]) for c in train_cases],
                "iterations": train.get("iterations"),
                "train_seconds": result.get("train_seconds"),
                "evaluate_seconds": result.get("evaluate_seconds"),
                "wall_seconds": seconds,
                "model": str(Path(result["model"]).relative_to(self.out)),
                "labels": evaluation["labels"],
                "mean_dice": evaluation["mean_dice"],
                "mean_hd95": evaluation["mean_hd95"],
                "hd95_penalized": evaluation.get("hd95_penalized"),
                "mean": evaluation["mean"],
                "cases": evaluation["cases"],
                "curve": training_curve(self.run_dir(spec) / "events.jsonl"),
            }
        )


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def training_curve(events_path: Path, points: int = CURVE_POINTS) -> Dict[str, List[List[float]]]:
    """``{stage: [[iteration, loss], ...]}`` from a run's progress events (the latest report of each
    iteration wins, so a resumed run's curve is continuous), thinned to about ``points`` per stage."""
    curves: Dict[str, Dict[int, float]] = {}
    if events_path.exists():
        for line in events_path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "progress" and isinstance(event.get("loss"), (int, float)) and "iteration" in event:
                curves.setdefault(str(event.get("stage")), {})[int(event["iteration"])] = float(event["loss"])
    out = {}
    for stage, values in curves.items():
        items = sorted(values.items())
        step = max(1, len(items) // points)
        kept = items[::step]
        if kept[-1] != items[-1]:
            kept.append(items[-1])
        out[stage] = [[i, v] for i, v in kept]
    return out


class _Child:
    """One running run: its process, the thread that forwards its JSON lines, its state."""

    def __init__(self, spec: RunSpec, process: subprocess.Popen, events: Path):
        self.spec = spec
        self.process = process
        self.started = time.monotonic()
        self.fraction = 0.0
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.events = events
        self.eof = False


class _Scheduler:
    """Starts children up to the parallel limit, forwards their progress, records their results."""

    def __init__(
        self, experiment: Experiment, pending: Sequence[RunSpec], *, device: str, parallel: int, progress: Progress,
        total: int,
    ):
        self.experiment = experiment
        self.queue = list(pending)
        self.device = device
        self.parallel = max(1, int(parallel))
        self.progress = progress
        self.total = total
        self.done = total - len(pending)
        self.failed: List[Dict[str, str]] = []
        self.finished = 0  # runs finished by this invocation
        self.running: Dict[str, _Child] = {}
        self.lines: queue.Queue = queue.Queue()

    def run(self) -> List[Dict[str, str]]:
        if not self.queue:
            return []
        self.progress.start("experiment", self.total, unit="run", initial=self.done)
        try:
            while self.queue or self.running:
                while self.queue and len(self.running) < self.parallel:
                    self._start(self.queue.pop(0))
                try:
                    run_id, line = self.lines.get(timeout=0.5)
                except queue.Empty:
                    pass
                else:
                    child = self.running[run_id]
                    if line is None:  # the reader's end marker: every line of the child is handled
                        child.eof = True
                    else:
                        self._handle(child, line)
                for child in [c for c in self.running.values() if c.eof and c.process.poll() is not None]:
                    self._finish(child)
        except BaseException:
            for child in self.running.values():  # Ctrl-C / SIGTERM: stop the children; their checkpoints survive
                child.process.terminate()
            for child in self.running.values():
                child.process.wait()
            raise
        finally:
            self.progress.close()
        return self.failed

    def _start(self, spec: RunSpec) -> None:
        experiment = self.experiment
        run_dir = experiment.run_dir(spec)
        spec_path = experiment.spec_file(spec, self.device)
        env = dict(os.environ)
        if self.parallel > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.parallel))
        log = open_append(run_dir / "log.txt")  # closed below: the child holds its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "lwi.experiment_run", str(spec_path)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", env=env, bufsize=1,
        )
        log.close()  # the child holds its own descriptor
        child = _Child(spec, process, run_dir / "events.jsonl")
        self.running[spec.id] = child
        threading.Thread(target=self._read, args=(spec.id, process), daemon=True).start()
        self.progress.log(f"Started {spec.id} ({spec.strategy} on K={spec.k} cases of draw {spec.seed}).")
        self.progress.emit("run_started", run=spec.id, k=spec.k, seed=spec.seed, strategy=spec.strategy)

    def _read(self, run_id: str, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.put((run_id, line))
        self.lines.put((run_id, None))

    def _handle(self, child: _Child, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return
        with open_append(child.events) as f:
            f.write(line if line.endswith("\n") else line + "\n")
        kind = event.get("event")
        if kind == "progress":
            if "iteration" in event:  # training's whole-run fraction (preprocessing and evaluation are short)
                child.fraction = float(event.get("fraction") or 0.0)
            self._update(run=child.spec.id, run_stage=event.get("stage"), run_fraction=event.get("fraction"))
        elif kind == "result":
            child.result = event
        elif kind == "error":
            child.error = str(event.get("message"))

    def _update(self, **fields: Any) -> None:
        """The experiment's progress: finished runs plus the running ones' fractions."""
        done = round(self.done + sum(c.fraction for c in self.running.values()), 3)
        self.progress.update(done, self.total, runs_done=done, runs=self.total, **fields)

    def _finish(self, child: _Child) -> None:
        spec = child.spec
        del self.running[spec.id]
        seconds = time.monotonic() - child.started
        code = child.process.wait()
        if code == 0 and child.result is not None:
            line = self.experiment.result_line(spec, child.result, seconds)
            with open_append(self.experiment.results_path) as f:
                f.write(json.dumps(line) + "\n")
            self.done += 1
            self.finished += 1
            dice = line.get("mean_dice")
            self.progress.log(
                f"Finished {spec.id} in {seconds / 60:.1f} min: mean test Dice "
                f"{'n/a' if dice is None else f'{dice:.4f}'} ({self.done}/{self.total} runs)."
            )
            self.progress.emit(
                "run_finished", run=spec.id, k=spec.k, seed=spec.seed, strategy=spec.strategy,
                mean_dice=dice, mean_hd95=line.get("mean_hd95"), seconds=seconds,
            )
            self._update(run=spec.id)
            return
        message = child.error or f"the run's process ended with exit code {code}"
        if "out of memory" in message.lower() and self.parallel > 1:
            # Parallel runs share one GPU: retry this one (from its checkpoint) with fewer at once.
            self.parallel -= 1
            self.queue.insert(0, spec)
            self.progress.log(f"{spec.id} ran out of memory; retrying it with at most {self.parallel} run(s) at once.")
            self.progress.emit("run_retried", run=spec.id, parallel=self.parallel, message=message)
            return
        log = self.experiment.run_dir(spec) / "log.txt"
        self.failed.append({"run": spec.id, "message": message})
        self.progress.log(f"{spec.id} failed: {message} (details in {log}).")
        if self.finished == 0 and self.queue:
            # Nothing has worked yet: most likely a setting that fails every run; do not repeat it.
            self.progress.log(f"Not starting the other {len(self.queue)} run(s) until a run has succeeded.")
            self.queue.clear()
        self.progress.emit("run_failed", run=spec.id, k=spec.k, seed=spec.seed, strategy=spec.strategy, message=message)


def strategy_planner(
    options: Mapping[str, Any],
    strategies: Sequence[str],
    *,
    device: str = "auto",
    time_budget: Optional[float] = None,
    progress: Optional[Progress] = None,
    probe: bool = True,
) -> Callable[[Path, str], Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``plan(pool, strategy)`` for :meth:`Experiment.prepare`: every option not given comes from lwi
    train's plan for ``strategy`` on the training pool, so all of a strategy's runs share the network,
    ROI and iterations, whatever the order of ``strategies``.

    Under a time budget (``time_budget``, or the CPU default) each strategy gets the same time with its
    own plan (scratch: all of it for its one stage). With a fixed iteration budget (the GPU's, or
    iterations given), scratch trains as many iterations as the first listed strategy with a Step 1
    does in Step 1 + Step 2 (:func:`lwi.strategies.settings.matched_iterations`).
    """
    from lwi.plan import plan_options, report_plan, runs_step1

    made: Dict[str, Any] = {}
    budget_keys = ("epochs", "pretrain_epochs", "iterations", "pretrain_iterations")

    def make(pool: Path, name: str):
        if name not in made:
            made[name] = plan_options(pool, options, strategy=name, device=device, time_budget=time_budget, probe=probe)
            if progress is not None:
                report_plan(progress, made[name][1])
        return made[name]

    def plan(pool: Path, strategy: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        planned, chosen = make(pool, strategy)
        fixed = chosen.time_budget is None or any(options.get(k) is not None for k in budget_keys)
        two_stage = [s for s in strategies if runs_step1(s, options)]
        if fixed and not runs_step1(strategy, options) and two_stage:
            planned, chosen = make(pool, two_stage[0])
        return planned, chosen.to_dict()

    return plan


def run_experiment(
    data: PathLike,
    out: PathLike,
    *,
    strategies: Sequence[str],
    ks: Sequence[int],
    seeds: Sequence[int],
    test: Optional[PathLike] = None,
    test_cases: Optional[int] = None,
    options: Optional[Mapping[str, Any]] = None,
    unlabeled: Optional[Sequence[PathLike]] = None,
    device: str = "auto",
    parallel: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    plan: Optional[Callable[[Path, str], Tuple[Dict[str, Any], Dict[str, Any]]]] = None,
) -> Dict[str, Any]:
    """Run (or resume) an experiment in ``out`` and write its results and report.

    ``options`` are :class:`lwi.strategies.Settings` fields applied to every run (``seed`` is each
    draw's). Returns ``{"runs", "finished", "failed": [{"run", "message"}], "report", "html", "plots"}``.
    """
    progress = progress or Progress("none")
    if parallel < 1:
        raise LWIError("--parallel must be at least 1.")
    options = dict(options or {})
    if "seed" in options:
        raise LWIError("The seeds of an experiment are its --seeds; leave --seed out.")
    experiment = Experiment(out)
    specs = experiment.prepare(
        data=data, test=test, test_cases=test_cases, strategies=strategies, ks=ks, seeds=seeds, options=options,
        unlabeled=unlabeled, resume=resume, overwrite=overwrite, progress=progress, plan=plan,
    )
    progress.log(
        f"Experiment in {experiment.out}: {len(specs)} runs ({', '.join(experiment.config['strategies'])}; "
        f"K = {', '.join(map(str, experiment.config['k']))}; seeds {', '.join(map(str, experiment.config['seeds']))}), "
        f"{len(experiment.config['test_cases'])} test cases, pool of {len(experiment.config['pool'])}."
    )
    return experiment.run(specs, device=device, parallel=parallel, progress=progress)
