"""The report of an experiment folder (:mod:`lwi.experiment`): ``report.md``, ``report.html`` and
PNG plots in ``plots/``, all made from ``experiment.json`` and ``results.jsonl`` alone, so a report
can be rewritten at any time (``lwi experiment ... --resume`` does it at the end).

Contents: the setup; test Dice and HD95 per strategy and K as mean +- SD over seeds (each seed's
value being that run's mean over the test cases); per K a paired comparison of the first strategy
with each other one, by draw (the main one: :func:`lwi.statistics.draw_level_comparison`, Holm-corrected
over the report's comparisons, with the number of draws needed to call a difference) and, secondary,
per case pooled over draws (:func:`lwi.statistics.paired_comparison`); plots of the learning curve (Dice vs K with SD error
bars), per-case scatter (strategy A vs B) and training curves. The plots need matplotlib (the
``report`` extra); without it the report says how to get them and lists no plots.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lwi.experiment_files import CONFIG, RESULTS, read_results
from lwi.statistics import draw_level_comparison, draws_needed, holm, paired_comparison, summary

Table = Tuple[List[str], List[List[str]]]  # header, rows (already formatted cells)

MATPLOTLIB_HINT = "Plots need matplotlib: pip install 'lwi[report]' (or pip install matplotlib), then resume the experiment."


def case_mean(values: Mapping[str, Optional[float]]) -> Optional[float]:
    """The mean over labels of one case's values (labels without a defined value skipped)."""
    return summary(list(values.values()))["mean"]


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean_sd(values: Sequence[Optional[float]], digits: int = 3) -> str:
    s = summary(values)
    if s["mean"] is None:
        return "n/a"
    return _fmt(s["mean"], digits) + (f" ± {_fmt(s['sd'], digits)}" if s["sd"] is not None else "")


def _p(value: Optional[float]) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def load(out: Path) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    config = json.loads((out / CONFIG).read_text(encoding="utf-8"))
    return config, read_results(out / RESULTS)


def label_names(results: Sequence[Mapping[str, Any]]) -> List[str]:
    for r in results:
        return [v for _, v in sorted(r["labels"].items(), key=lambda kv: int(kv[0]))]
    return []


def runs_by(results: Sequence[Mapping[str, Any]]) -> Dict[Tuple[str, int, int], Mapping[str, Any]]:
    return {(r["strategy"], int(r["k"]), int(r["seed"])): r for r in results}


def summary_table(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> Table:
    """Per strategy and K: test Dice (all labels and each label) and HD95, mean +- SD over seeds."""
    labels = label_names(results)
    header = ["strategy", "K", "seeds", "Dice (mean of labels)"] + [f"Dice {n}" for n in labels]
    header += ["HD95 mm", "HD95 penalised (label misses)", "iterations", "train min"]
    rows = []
    for strategy in config["strategies"]:
        for k in config["k"]:
            runs = [r for r in results if r["strategy"] == strategy and int(r["k"]) == k]
            if not runs:
                continue
            iterations = sorted({sum((r.get("iterations") or {}).values()) for r in runs})
            minutes = summary([(r.get("train_seconds") or 0) / 60 for r in runs])["mean"]
            rows.append(
                [strategy, str(k), str(len(runs)), _mean_sd([r["mean_dice"] for r in runs])]
                + [_mean_sd([r["mean"]["dice"].get(n) for r in runs]) for n in labels]
                + [_mean_sd([r["mean_hd95"] for r in runs], 2), str(sum(_misses(r) for r in runs))]
                + ["/".join(map(str, iterations)), _fmt(minutes, 1)]
            )
    return header, rows


def _misses(run: Mapping[str, Any]) -> int:
    """(case, label) pairs of a run whose HD95 is the penalty (one side lacks the label)."""
    return sum(len(c.get("hd95_penalized") or ()) for c in run["cases"])


def paired_values(
    a_runs: Sequence[Mapping[str, Any]], b_runs: Sequence[Mapping[str, Any]], metric: str, label: Optional[str]
) -> Tuple[List[Optional[float]], List[Optional[float]]]:
    """Per-case values of two strategies on the same draws (runs paired by seed, cases by name), pooled."""
    xs: List[Optional[float]] = []
    ys: List[Optional[float]] = []
    for a, b in paired_draws(a_runs, b_runs, metric, label):
        xs.extend(a)
        ys.extend(b)
    return xs, ys


def paired_draws(
    a_runs: Sequence[Mapping[str, Any]], b_runs: Sequence[Mapping[str, Any]], metric: str, label: Optional[str]
) -> List[Tuple[List[Optional[float]], List[Optional[float]]]]:
    """Per draw (seed) that both strategies finished, the per-case values ``(a, b)`` on the same cases."""
    b_by_seed = {int(r["seed"]): r for r in b_runs}
    draws = []
    for a in sorted(a_runs, key=lambda r: int(r["seed"])):
        b = b_by_seed.get(int(a["seed"]))
        if b is None:
            continue
        b_cases = {c["case"]: c for c in b["cases"]}
        xs: List[Optional[float]] = []
        ys: List[Optional[float]] = []
        for case in a["cases"]:
            other = b_cases.get(case["case"])
            if other is None:
                continue
            if label is None:
                xs.append(case_mean(case[metric]))
                ys.append(case_mean(other[metric]))
            else:
                xs.append(case[metric].get(label))
                ys.append(other[metric].get(label))
        draws.append((xs, ys))
    return draws


PRIMARY = "Dice (mean of labels)"
HD95_TITLE = "HD95 mm (mean of labels; a missed label counts as the image diagonal; lower is better)"


def comparisons(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Paired comparisons: per K, the first strategy against each other one, for the mean Dice, each
    label's Dice and the mean HD95 of a case.

    Each row holds the draw-level comparison (:func:`lwi.statistics.draw_level_comparison`, the main
    one) at its top level, its p-values Holm-corrected over every row of the report (``t_p_holm``,
    ``sign_flip_p_holm``; family size ``family``), and the pooled per-case comparison under
    ``pooled`` (secondary: a case repeats across draws).
    """
    labels = label_names(results)
    strategies = list(config["strategies"])
    out = []
    for other in strategies[1:]:
        a_name, b_name = strategies[0], other
        for k in config["k"]:
            a_runs = [r for r in results if r["strategy"] == a_name and int(r["k"]) == k]
            b_runs = [r for r in results if r["strategy"] == b_name and int(r["k"]) == k]
            seeds = sorted({int(r["seed"]) for r in a_runs} & {int(r["seed"]) for r in b_runs})
            if not seeds:
                continue
            metrics = [(PRIMARY, "dice", None)] + [(f"Dice {n}", "dice", n) for n in labels]
            metrics.append((HD95_TITLE, "hd95", None))
            for title, metric, label in metrics:
                draws = paired_draws(a_runs, b_runs, metric, label)
                xs = [x for a, _ in draws for x in a]
                ys = [y for _, b in draws for y in b]
                out.append({
                    "a": a_name, "b": b_name, "k": k, "seeds": seeds, "metric": title, "primary": title == PRIMARY,
                    **draw_level_comparison(draws), "pooled": paired_comparison(xs, ys),
                })
    for key in ("t_p", "sign_flip_p"):
        for row, adjusted in zip(out, holm([row[key] for row in out])):
            row[f"{key}_holm"] = adjusted
    for row in out:
        row["family"] = len(out)
    return out


def _ci(values: Optional[Sequence[float]], digits: int = 3) -> str:
    return f"[{_fmt(values[0], digits)}, {_fmt(values[1], digits)}]" if values else "n/a"


def draw_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The main comparison: the draw is the unit (per draw, the mean over test cases of A - B)."""
    header = [
        "K", "A vs B", "metric", "draws", "mean A", "mean B", "A - B per draw", "A - B [95% t CI over draws]",
        "[95% bootstrap CI, draws then cases]", "paired t p (Holm)", "sign-flip p (Holm)", "A higher / lower (draws)",
    ]
    body = []
    for c in rows:
        body.append([
            str(c["k"]), f"{c['a']} vs {c['b']}", c["metric"], str(c["n_draws"]), _fmt(c["mean_a"]), _fmt(c["mean_b"]),
            ", ".join(f"{d:+.3f}" for d in c["draw_differences"]),
            f"{_fmt(c['mean_difference'])} {_ci(c['difference_ci'])}", _ci(c["bootstrap_ci"]),
            f"{_p(c['t_p'])} ({_p(c['t_p_holm'])})", f"{_p(c['sign_flip_p'])} ({_p(c['sign_flip_p_holm'])})",
            f"{c['a_better_draws']} / {c['b_better_draws']}",
        ])
    return header, body


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """The secondary comparison: per-case pairs pooled over draws."""
    header = [
        "K", "A vs B", "metric", "pairs", "mean A", "mean B", "A - B [95% CI]", "d_z [95% CI]",
        "paired t p", "Wilcoxon p", "A higher / lower / tied",
    ]
    body = []
    for row in rows:
        c = row["pooled"]
        ci = c["difference_ci"]
        dz = c["dz_ci"]
        body.append([
            str(row["k"]), f"{row['a']} vs {row['b']}", row["metric"], str(c["n"]), _fmt(c["mean_a"]), _fmt(c["mean_b"]),
            f"{_fmt(c['mean_difference'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(c["mean_difference"]),
            f"{_fmt(c['cohens_dz'], 2)} [{_fmt(dz[0], 2)}, {_fmt(dz[1], 2)}]" if dz else "n/a",
            _p(c["t_p"]), _p(c["wilcoxon_p"]), f"{c['a_better']} / {c['b_better']} / {c['ties']}",
        ])
    return header, body


def power_lines(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """What the number of draws allows to call (the sign-flip test's floor against Holm's threshold)."""
    if not rows:
        return []
    family = rows[0]["family"]
    n = max(r["n_draws"] for r in rows)
    floor = 2.0 / 2**n if n else 1.0
    lines = [
        f"Family: {family} comparisons (strategy pairs x K x metrics, each label's Dice and HD95 included); "
        f"p-values in brackets are Holm-corrected over this family. The mean Dice of all labels is the primary "
        f"metric; the others are exploratory.",
        f"With {n} draw(s) the exact sign-flip test cannot give p below {floor:.3g}: "
        f"{draws_needed(0.05)} draws are needed to call one comparison at p < 0.05, "
        f"{draws_needed(0.05, family)} for every comparison of this family after Holm's correction.",
    ]
    if n < draws_needed(0.05):
        lines.append(
            f"These {n} draw(s) cannot show a difference by the sign-flip test: add draws with --seeds and --resume."
        )
    return lines


def setup_lines(config: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> List[str]:
    n_runs = len(config["strategies"]) * len(config["k"]) * len(config["seeds"])
    test = config["test"] or f"{len(config['test_cases'])} cases held out of the data"
    def text(options: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(options.items())) or "defaults"

    plans = config.get("plans") or {}
    distinct = {json.dumps(v, sort_keys=True) for v in plans.values()}
    if len(distinct) > 1:
        option_lines = [f"Training options of {s} (its own plan): {text(o)}" for s, o in plans.items()]
    else:
        option_lines = [f"Training options (every run): {text(config['options'])}"]
    return [
        f"Data: {config['data']} (pool of {len(config['pool'])} training cases)",
        f"Test set: {test} ({len(config['test_cases'])} cases: {', '.join(config['test_cases'])})",
        f"Strategies: {', '.join(config['strategies'])}; K = {', '.join(map(str, config['k']))}; "
        f"seeds (draws) {', '.join(map(str, config['seeds']))}",
        *option_lines,
        f"Runs finished: {len(results)} of {n_runs}",
    ]


NOTES = [
    "Each seed draws its own K training cases (nested: K=5 cases are the first five of the seed's K=10 draw) "
    "and seeds the training; SD is over seeds.",
    "Main comparison (by draw): per draw, the mean over test cases of the paired difference A - B; across "
    "draws, its mean with a t interval, the paired t-test and the exact sign-flip test over draws, and a "
    "hierarchical bootstrap interval (10,000 resamples of draws, then of cases within each draw; seed 0). "
    "The bootstrap interval is too narrow with few draws; trust the t interval there.",
    "Secondary comparison (pooled): per-case values of the two strategies on the same draw, pooled over "
    "draws; d_z = mean difference / SD of the differences, with a noncentral-t interval. A test case appears "
    "once per draw, so these pairs are not independent and their p-values are optimistic.",
    "HD95: a label that one side has and the other misses counts as the reference image's diagonal (mm), "
    "so a method that misses a structure does not look better for it.",
]


# -- rendering ------------------------------------------------------------------------------------
def markdown_table(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sections(config, results, comparison_rows, plots) -> List[Tuple[str, Any]]:
    """The report as (kind, content) items, rendered to Markdown and HTML alike."""
    items: List[Tuple[str, Any]] = [("h1", "LWI experiment"), ("list", setup_lines(config, results))]
    items += [("h2", "Test results (mean ± SD over seeds)"), ("table", summary_table(config, results))]
    items.append(("h2", "Paired comparison per K, by draw (main)"))
    if comparison_rows:
        items.append(("list", power_lines(comparison_rows)))
        items.append(("table", draw_table(comparison_rows)))
        items.append(("h2", "Paired comparison per K, test cases pooled over draws (secondary)"))
        items.append(("table", comparison_table(comparison_rows)))
    else:
        items.append(("p", "Needs two strategies with finished runs on the same draw."))
    items += [("h2", "Plots")]
    if plots is None:
        items.append(("p", MATPLOTLIB_HINT))
    for title, name in plots or []:
        items.append(("image", (title, name)))
    items += [("h2", "Notes"), ("list", NOTES)]
    return items


def render_markdown(items) -> str:
    parts = []
    for kind, content in items:
        if kind == "h1":
            parts.append(f"# {content}")
        elif kind == "h2":
            parts.append(f"## {content}")
        elif kind == "list":
            parts.append("\n".join(f"- {line}" for line in content))
        elif kind == "table":
            parts.append(markdown_table(content))
        elif kind == "image":
            parts.append(f"![{content[0]}](plots/{content[1]})")
        else:
            parts.append(str(content))
    return "\n\n".join(parts) + "\n"


def render_html(items) -> str:
    parts = []
    for kind, content in items:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
        elif kind == "table":
            parts.append(html_table(content))
        elif kind == "image":
            title, name = content
            parts.append(f'<figure><img src="plots/{html.escape(name)}" alt="{html.escape(title)}">'
                         f"<figcaption>{html.escape(title)}</figcaption></figure>")
        else:
            parts.append(f"<p>{html.escape(str(content))}</p>")
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>LWI experiment</title><style>{style}</style>'
        f"</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


# -- plots ----------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(plt, config, results, path: Path) -> None:
    """Test Dice vs K per strategy (mean over seeds, SD error bars): all labels, then each label."""
    labels = label_names(results)
    panels = [("all labels", None)] + [(n, n) for n in labels]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5), squeeze=False)
    for ax, (title, label) in zip(axes[0], panels):
        for strategy in config["strategies"]:
            ks, means, sds = [], [], []
            for k in config["k"]:
                runs = [r for r in results if r["strategy"] == strategy and int(r["k"]) == k]
                values = [r["mean_dice"] if label is None else r["mean"]["dice"].get(label) for r in runs]
                s = summary(values)
                if s["mean"] is not None:
                    ks.append(k)
                    means.append(s["mean"])
                    sds.append(s["sd"] or 0.0)
            if ks:
                ax.errorbar(ks, means, yerr=sds, marker="o", capsize=4, label=strategy)
        ax.set_title(f"Dice, {title}")
        ax.set_xlabel("K (training cases)")
        ax.set_xticks(list(config["k"]))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test Dice (mean ± SD over seeds)")
    axes[0][0].legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_scatter(plt, config, results, a: str, b: str, path: Path) -> None:
    """Per-case mean Dice of strategy A (y) against B (x), one colour per K, seeds pooled."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for k in config["k"]:
        a_runs = [r for r in results if r["strategy"] == a and int(r["k"]) == k]
        b_runs = [r for r in results if r["strategy"] == b and int(r["k"]) == k]
        xs, ys = paired_values(a_runs, b_runs, "dice", None)
        pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
        if pairs:
            ax.scatter([p[1] for p in pairs], [p[0] for p in pairs], s=14, alpha=0.7, label=f"K={k}")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{b}: case Dice")
    ax.set_ylabel(f"{a}: case Dice")
    ax.set_title(f"{a} vs {b} per test case (above the line: {a} better)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_training_curves(plt, config, results, path: Path) -> None:
    """Training loss vs iteration of the whole run, one panel per K: the segmentation loss (Step 2,
    after Step 1's iterations for two-step strategies) on top, Step-1 losses below when there are any."""
    ks = list(config["k"])
    has_step1 = any("pretrain" in (r.get("curve") or {}) for r in results)
    rows = 2 if has_step1 else 1
    fig, axes = plt.subplots(rows, len(ks), figsize=(4.5 * len(ks), 3.2 * rows), squeeze=False)
    colours = {s: f"C{i}" for i, s in enumerate(config["strategies"])}
    styles = ["-", "--", ":", "-."]
    for col, k in enumerate(ks):
        top = axes[0][col]
        for r in sorted((r for r in results if int(r["k"]) == k), key=lambda r: (r["strategy"], r["seed"])):
            curve = r.get("curve") or {}
            offset = (r.get("iterations") or {}).get("pretrain", 0) if "pretrain" in curve else 0
            style = styles[config["seeds"].index(r["seed"]) % len(styles)] if r["seed"] in config["seeds"] else "-"
            label = f"{r['strategy']} seed {r['seed']}"
            for stage, points in curve.items():
                if stage == "pretrain" or not points:
                    continue
                top.plot([p[0] + offset for p in points], [p[1] for p in points], style, color=colours.get(r["strategy"]),
                         label=label, linewidth=1)
            if has_step1 and curve.get("pretrain"):
                points = curve["pretrain"]
                axes[1][col].plot([p[0] for p in points], [p[1] for p in points], style,
                                  color=colours.get(r["strategy"]), label=label, linewidth=1)
        top.set_title(f"K={k}: segmentation loss")
        top.set_xlabel("iteration of the run")
        top.grid(alpha=0.3)
        if has_step1:
            axes[1][col].set_title(f"K={k}: Step-1 loss")
            axes[1][col].set_xlabel("iteration")
            axes[1][col].grid(alpha=0.3)
    axes[0][0].set_ylabel("DiceCE loss")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def write_plots(out: Path, config, results) -> Optional[List[Tuple[str, str]]]:
    """Write the PNGs into ``out/plots``; returns ``[(title, file name)]``, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots: List[Tuple[str, str]] = []
    if not results:
        return plots
    plot_learning_curve(plt, config, results, folder / "learning_curve.png")
    plots.append(("Learning curve: test Dice vs K (mean ± SD over seeds)", "learning_curve.png"))
    strategies = list(config["strategies"])
    for other in strategies[1:]:
        name = f"scatter_{strategies[0]}_vs_{other}.png"
        plot_scatter(plt, config, results, strategies[0], other, folder / name)
        plots.append((f"Per-case Dice: {strategies[0]} vs {other}", name))
    plot_training_curves(plt, config, results, folder / "training_curves.png")
    plots.append(("Training curves", "training_curves.png"))
    return plots


def _save_figure(fig: Any, path: Path) -> None:
    from lwi.outputs import write_file

    write_file(path, lambda tmp: fig.savefig(tmp, dpi=100), "--out")


def _write_text(path: Path, text: str) -> None:
    from lwi.outputs import write_text

    write_text(path, text, "--out")


def write_report(out: Any, progress: Any = None) -> Dict[str, Any]:
    """Write report.md, report.html and the plots of the experiment in ``out`` from its files.

    Returns ``{"report", "html", "plots": [paths], "comparisons": [paired comparison dicts]}``.
    """
    out = Path(out)
    config, results = load(out)
    plots = write_plots(out, config, results)
    if plots is None and progress is not None:
        progress.log(MATPLOTLIB_HINT)
    rows = comparisons(config, results)
    items = _sections(config, results, rows, plots)
    _write_text(out / "report.md", render_markdown(items))
    _write_text(out / "report.html", render_html(items))
    return {
        "report": str(out / "report.md"),
        "html": str(out / "report.html"),
        "plots": [str(out / "plots" / name) for _, name in plots or []],
        "comparisons": rows,
    }
