"""Step 1's order losses on noise, where the order cannot be learned: each level's loss should stay
near ln N. Trains the UNETR Step-1 model (hidden size 768 as in the paper, a lighter MLP, 3 heads and
a 32x32x64 crop so it runs on a CPU) on fresh noise crops with a CT-like positive mean
(0.5 + 0.2 * N(0, 1)), AdamW at a constant learning rate (no warmup: the harshest case), and records
every level's order loss and the mean absolute pooled feature entering its head, per iteration.

Measurement, not a test. benchmarks/results/order-heads-cpu.json and .png come from (one thread):

    PYTHONPATH=<checkout before the fix> python benchmarks/order_head_stability.py --label before
    PYTHONPATH=. python benchmarks/order_head_stability.py --label after --plot
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import record
import torch

RESULTS = Path(__file__).parent / "results" / "order-heads-cpu.json"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--label", required=True)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--plot", action="store_true", help="also write the PNG of every label in the JSON")
    args = p.parse_args()

    from lwi.order_heads import slot_pool
    from lwi.pretraining import Step1Model, step1_losses
    from lwi.transformation import TransformationModule

    roi = (32, 32, 64)
    params = {"hidden_size": 768, "mlp_dim": 1536, "num_heads": 3, "feature_size": 8, "proj_type": "perceptron"}
    torch.manual_seed(args.seed)
    model = Step1Model.build("unetr", 1, roi, **params)
    n = model.num_subvolumes
    transform = TransformationModule(n, mask_ratio=0.4, cube_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(args.seed)
    scale = []
    model.order_heads.register_forward_pre_hook(
        lambda _m, inputs: scale.append([float(slot_pool(f.detach(), n).abs().mean()) for f in inputs[0]])
    )
    rows = []
    start = time.time()
    for it in range(args.iterations):
        images = 0.5 + 0.2 * torch.randn(2, 1, *roi, generator=gen)
        losses = step1_losses(model, images, transform, generator=gen)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        rows.append({"iteration": it + 1, "order": [float(v) for v in losses["order"]], "feature_mean_abs": scale[-1]})
        print(it + 1, [round(v, 2) for v in rows[-1]["order"]], flush=True)
    data = json.loads(args.out.read_text())["figures"] if args.out.exists() else {}
    data[args.label] = {
        "arch": "unetr", "params": params, "roi": list(roi), "lr": args.lr, "batch_size": 2, "seed": args.seed,
        "N": n, "ln_N": math.log(n), "worst": max(max(r["order"]) for r in rows),
        "seconds": round(time.time() - start, 1), "rows": rows,
    }
    # One record (machine, versions, command, date) holding every label's curves; the results table (docs/results.md)
    # is rendered from it (benchmarks/render_tables.py).
    record.write("order-heads", "cpu", data)
    if args.plot:
        plot(data, args.out.with_suffix(".png"))
    return 0


def plot(data, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 3.5), sharey=True)
    for ax, (label, run) in zip(list(axes) if len(data) > 1 else [axes], sorted(data.items(), reverse=True)):
        its = [r["iteration"] for r in run["rows"]]
        for level in range(len(run["rows"][0]["order"])):
            ax.plot(its, [r["order"][level] for r in run["rows"]], label=f"level {level + 1}")
        ax.axhline(run["ln_N"], color="k", ls="--", lw=1, label="ln N")
        ax.set_title(f"{label}: worst {run['worst']:.2f}")
        ax.set_xlabel("iteration")
    (list(axes) if len(data) > 1 else [axes])[0].set_ylabel("order loss (noise)")
    axes[-1].legend(fontsize=7) if len(data) > 1 else axes.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    raise SystemExit(main())
