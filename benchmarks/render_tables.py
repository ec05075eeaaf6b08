"""Render the benchmark tables of the README (and of docs/*.md) from the JSON files in ``benchmarks/results/``.

The README (or a docs/ page) marks each table's place with ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``,
where NAME is a result file's name without ``.json`` (``train-cpu``, ``folder-cpu``, ...). Everything
between the two markers is replaced by the table of that file, or by a line saying the figures are
still to be measured (and with which command) when the file does not exist yet.

    python benchmarks/render_tables.py           # rewrite README.md in place
    python benchmarks/render_tables.py --check   # exit 1 if README.md differs from the files
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
#: The pages with tables: the README, then the docs/ pages (a table there is as much the file's as one in the README).
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))
MARKER = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)

# How to produce each result file (shown while it is missing).
COMMANDS = {
    "train-cpu": "python benchmarks/train_benchmark.py --device cpu",
    "train-cuda": "benchmarks/run_all_gpu.sh",
    "train-ddp-cuda": "benchmarks/run_all_gpu.sh",
    "segment-cpu": "python benchmarks/segment_benchmark.py --device cpu",
    "segment-cuda": "benchmarks/run_all_gpu.sh",
    "folder-cpu": "python benchmarks/folder_benchmark.py",
    "folder-cuda": "benchmarks/run_all_gpu.sh",
    "ct-lowres-cpu": "python benchmarks/cli_benchmark.py --input CT --name ct-lowres -- --spacing-scale 2 --device cpu",
    "warm-cuda": "benchmarks/run_all_gpu.sh",
    "order-heads-cpu": "python benchmarks/order_head_stability.py --label after --plot",
    "improve-cpu": "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/improve_benchmark.py --data DATA --shares 0.1 0.25",
    "mechanisms-anatomask-cpu": "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mechanisms.py --data DATA --part anatomask",
    "small-data-cpu": "benchmarks/small_data.sh DATA OUT && python benchmarks/small_data_compare.py OUT",
}


def _f(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _footer(r: Dict[str, Any]) -> str:
    m = r["machine"]
    load = m.get("load_average_at_start")
    where = ", ".join(m.get("gpus") or []) or f"{m.get('cpu')} ({m.get('logical_cpus')} logical CPUs)"
    parts = [f"`{r['command']}`", r["date"], where, f"torch {r['versions'].get('torch')}",
             f"MONAI {r['versions'].get('monai')}"]
    if load:
        parts.append(f"load average {load[0]:.1f} at the start")
    return "<sub>" + "; ".join(parts) + f" (file `benchmarks/results/{r['_file']}`)</sub>\n"


def _train(r: Dict[str, Any]) -> str:
    f = r["figures"]
    net = f["network"]
    rates, ratios = f["iterations_per_second"], f["ratios"]
    lines = [
        f"| {net['arch']}, batch {net['batch']} x {'x'.join(map(str, net['roi']))}, on {r['device']} | iterations/s | ours / this |",
        "| --- | --- | --- |",
        f"| ours: `lwi train`'s loop (case cache on the device) | {_f(rates['ours'])} | |",
        f"| MONAI tutorial: CacheDataset + DataLoader ({f['tutorial_workers']} workers) | {_f(rates['tutorial'])} | "
        f"{_f(ratios['ours / tutorial'])}x |",
        f"| model only (fixed batch on the device) | {_f(rates['model only'])} | {_f(ratios['ours / model only'])}x |",
    ]
    return "\n".join(lines) + "\n\n" + _footer(r)


def _train_ddp(r: Dict[str, Any]) -> str:
    f = r["figures"]
    lines = [
        "| GPUs | iterations/s | crops/s | scaling vs 1 GPU |",
        "| --- | --- | --- | --- |",
        *(f"| {row['world_size']} | {_f(row['iterations_per_second'])} | {_f(row['crops_per_second'])} | "
          f"{_f(row.get('scaling'))}x |" for row in f["runs"]),
    ]
    return "\n".join(lines) + "\n\n" + _footer(r)


def _folder(r: Dict[str, Any]) -> str:
    f = r["figures"]
    one, pipe, once = f["one_by_one"], f["pipeline"], f["once"]
    rows = ["read", "preprocess", "network forward", "sliding-window bookkeeping", "back to input grid",
            "assemble label map", "write"]
    lines = [
        f"| per image, {f['images']} images of {' x '.join(map(str, f['image_size']))}, {f['model']}, "
        f"{r['device']} ({f['threads']} thread(s)) | one by one (s) | folder pipeline (s) |",
        "| --- | --- | --- |",
        *(f"| {k} | {_f(one[k], 3)} | |" for k in rows),
        f"| **total** | {_f(one['total'], 3)} | {_f(pipe['total'], 3)} |",
        f"| **overhead** (total - network forward) | {_f(one['overhead'], 3)} | {_f(pipe['overhead'], 3)} |",
        f"| overhead, CPU time | {_f(one.get('overhead CPU time'), 3)} | {_f(pipe.get('overhead CPU time'), 3)} |",
        f"| once per folder: listing + DICOM probing, model load | {_f(once['listing'], 3)}, {_f(once['model_load'], 2)} | |",
        f"| target: overhead below 0.1 s per image | {_met(one['overhead'] < 0.1)} | {_met(pipe['overhead'] < 0.1)} |",
    ]
    return "\n".join(lines) + "\n\n" + _footer(r)


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _cli(r: Dict[str, Any]) -> str:
    f = r["figures"]
    lines = [
        f"| `lwi segment {' '.join(f['options'])}`: {f['input']} ({' x '.join(map(str, f['input_size']))} at "
        f"{' x '.join(map(str, f['input_spacing']))} mm), {f['model']} | measured | target |",
        "| --- | --- | --- |",
        f"| wall time, whole process | {_f(f['seconds'], 1)} s | < {f['target_seconds']:.0f} s: "
        f"{_met(f['seconds'] < f['target_seconds'])} |",
        f"| CPU time (user + system) | {_f(f.get('cpu_seconds'), 1)} s | |",
        f"| peak memory (RSS) | {_f(f['peak_rss_gb'])} GB | < {f['target_gb']:.0f} GB: {_met(f['peak_rss_gb'] < f['target_gb'])} |",
    ]
    return "\n".join(lines) + "\n\n" + _footer(r)


def _median(value: Any) -> Any:
    """A figure's median (result files before medians hold the single value)."""
    return value.get("median") if isinstance(value, dict) else value


def _spread(value: Any, digits: int = 1, unit: str = "") -> str:
    """``median (min-max)`` of a figure (the value alone in files before medians)."""
    if not isinstance(value, dict):
        return _f(value, digits) + unit
    if value.get("median") is None:
        return "n/a"
    return f"{_f(value['median'], digits)}{unit} ({_f(value['min'], digits)}-{_f(value['max'], digits)})"


def _segment(r: Dict[str, Any]) -> str:
    f = r["figures"]
    results = f["results"]
    names = list(results)
    base = results["tutorial"]
    ratios = f.get("ratios", {})
    medians = "median (min-max) of " + str(f.get("repeat")) + " rounds, " if ratios else ""
    head = f"| {f['description']}; {medians}tutorial / ours in brackets | " + " | ".join(names) + " |"
    lines = [head, "| --- |" + " --- |" * len(names)]

    def ratio(n: str, key: str) -> str:
        if n == "tutorial":
            return "1.00x"
        if n in ratios:  # round by round: two runs back to back share the machine's load
            return _spread(ratios[n][key], 2, "x")
        steps = key == "network"
        b = base["steps"][key] if steps else base[key]
        o = results[n]["steps"][key] if steps else results[n][key]
        return f"{_f(_median(b) / _median(o))}x"

    lines.append("| total time, file to label file (s) | " + " | ".join(
        f"{_spread(results[n]['seconds'])} [{ratio(n, 'seconds')}]" for n in names) + " |")
    for step in ("read + preprocess", "network", "back to input grid", "write"):
        cells = [_spread(results[n]["steps"].get(step)) + (f" [{ratio(n, 'network')}]" if step == "network" else "")
                 for n in names]
        lines.append(f"| {step} (s) | " + " | ".join(cells) + " |")
    lines.append("| peak process memory (GB) | " + " | ".join(_spread(results[n]["rss_gb"], 2) for n in names) + " |")
    if any(_median(results[n].get("gpu_gb")) for n in names):
        lines.append("| peak GPU memory (GB) | " + " | ".join(_spread(results[n].get("gpu_gb"), 2) for n in names) + " |")
    for name, agree in f.get("agreement", {}).items():
        lines.append(f"| agreement {name} | mean Dice {agree['mean_dice']:.4f}, "
                     f"{100 * agree['identical_voxels']:.2f}% identical voxels |" + " |" * (len(names) - 1))
    return "\n".join(lines) + "\n\n" + _footer(r)


def _warm(r: Dict[str, Any]) -> str:
    f = r["figures"]
    lines = ["| warm worker, same volume again | first call (s) | repeat (s) |", "| --- | --- | --- |",
             f"| {f['description']} | {_f(f['first'])} | {_f(f['repeat'])} |"]
    return "\n".join(lines) + "\n\n" + _footer(r)


def _order_heads(r: Dict[str, Any]) -> str:
    runs = r["figures"]
    lines = ["| Step-1 order heads on noise | worst level loss | last iteration's level losses | ln N |",
             "| --- | --- | --- | --- |"]
    for label in sorted(runs, reverse=True):  # before, then after
        run = runs[label]
        last = ", ".join(_f(v) for v in run["rows"][-1]["order"])
        lines.append(f"| {label} ({run['arch']}, ROI {'x'.join(map(str, run['roi']))}, lr {run['lr']:g}, "
                     f"{len(run['rows'])} iterations) | {_f(run['worst'])} | {last} | {_f(run['ln_N'])} |")
    return "\n".join(lines) + "\n\n" + _footer(r)


def _improve(r: Dict[str, Any]) -> str:
    import importlib.util

    # The benchmark defines its tables (one place); loaded by path, as the tests load this file.
    spec = importlib.util.spec_from_file_location("improve_benchmark", Path(__file__).with_name("improve_benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.tables(r["figures"], r["_file"])
    return (made["improve"] + "\nThe uncertainty score against Dice, on the same models and test cases:\n\n"
            + made["uncertainty"] + "\n" + _footer(r))


def _mechanisms(r: Dict[str, Any]) -> str:
    f, lines = r["figures"], []
    if f.get("anatomask"):
        lines += ["| schedule | EMA decay | teacher's initial weights left | teacher loss, first -> last report | "
                  "teacher / student loss on random masks | student loss, guided / random masks |",
                  "|---|---|---|---|---|---|"]
        for a in f["anatomask"]:
            lines.append(
                f"| {a['schedule']} | {a['ema_decay'][0]:g} -> {a['ema_decay'][1]:.4g} | {a['teacher_initial_share']:.2g} | "
                f"{_f(a['teacher_loss_first_report'], 3)} -> {_f(a['teacher_loss_last_report'], 3)} | "
                f"{_f(a['teacher_random'], 3)} / {_f(a['student_random'], 3)} | "
                f"{_f(a['student_guided'], 3)} / {_f(a['student_random'], 3)} = {_f(a['guided_over_random'], 3)} |")
    for m in f.get("medcontext") or []:
        lines.append(
            f"- **MedContext, `--consistency-mode {m['mode']}`** ({m['iterations']} iterations, {m['reports']} progress "
            f"reports): realised gradient share of the consistency term, mean {m['consistency_share_mean']:.3g} "
            f"(min {m['consistency_share_min']:.3g}, max {m['consistency_share_max']:.3g}); last loss {_f(m['last_loss'], 3)}.")
    return "\n".join(lines) + "\n\n" + _footer(r)


def _small_data(r: Dict[str, Any]) -> str:
    lines = ["| comparison (A - B) | K | draws | mean A | mean B | A - B per draw | mean [95% t CI] | paired t p | sign-flip p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in (r["figures"].get("validation") or []) + (r["figures"].get("mirror") or []):
        per_draw = ", ".join(f"{d:+.3f}" for d in c["draw_differences"])
        low, high = c["difference_ci"]
        lines.append(f"| {c['difference']} | {c['k']} | {c['n_draws']} | {_f(c['mean_a'], 3)} | {_f(c['mean_b'], 3)} | "
                     f"{per_draw} | {c['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {c['t_p']:.2g} | "
                     f"{c['sign_flip_p']:.2g} |")
    return "\n".join(lines) + "\n\n" + _footer(r)


RENDERERS: Dict[str, Callable[[Dict[str, Any]], str]] = {
    "improve": _improve, "mechanisms": _mechanisms, "small-data": _small_data,
    "train-ddp": _train_ddp, "train": _train, "folder": _folder, "ct-lowres": _cli, "cli": _cli,
    "segment": _segment, "warm": _warm, "order-heads": _order_heads,
}


def render(name: str) -> str:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        how = COMMANDS.get(name, "its benchmark")
        return f"*Still to be measured: run `{how}`.*\n"
    result = json.loads(path.read_text())
    result["_file"] = path.name
    kind = next(k for k in RENDERERS if name == k or name.startswith(k + "-"))
    return RENDERERS[kind](result)


def rendered_readme(text: str) -> str:
    return MARKER.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the README and docs/ pages are up to date")
    args = parser.parse_args(argv)
    for page in PAGES:
        text = page.read_text()
        new = rendered_readme(text)
        if args.check:
            if new != text:
                print(f"{page.name}'s benchmark tables differ from benchmarks/results/; run benchmarks/render_tables.py")
                return 1
            continue
        if new != text:
            page.write_text(new)
        print(f"{len(MARKER.findall(text))} tables rendered into {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
