"""Training recipes: named sets of options applied under the user's own (``--recipe``).

* ``default``: this project's choices for a few cases on a CPU or one GPU: the plan (lwi/plan.py)
  chooses the network, ROI, spacing and budget, and :data:`DEVIATIONS` lists where the training itself
  departs from the paper, each with its reason.
* ``paper``: LWI as the paper trains it on Synapse/BTCV with UNETR (Kunhimon et al.; the authors'
  UNETR code; docs/reproduce-paper.md): UNETR-B at 96^3 and 1.5 x 1.5 x 2.0 mm, AdamW lr 1e-4 and
  weight decay 1e-5, batch 2, Step 1 800 and Step 2 5000 epochs of the 18 training cases (14,400 +
  90,000 iterations), cubes of 16^3 with mask ratio 0.4, and none of the deviations: plain order
  heads, MONAI's default output layer, depth flips in Step 1 as the authors' code, the whole data
  trained on (no validation split). Options the user gives win over the recipe's.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

RECIPES = ("default", "paper")

#: The paper's UNETR setting (the paper's Table 5 and the authors' UNETR/BTCV scripts).
PAPER: Dict[str, Any] = {
    "arch": "unetr",
    "arch_params": {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12},
    "roi": (96, 96, 96),
    "spacing": (1.5, 1.5, 2.0),
    "batch_size": 2,
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "mask_ratio": 0.4,
    "cube_size": 16,
    "pretrain_iterations": 800 * 18,  # 800 epochs x 18 cases (one volume per iteration in the code)
    "iterations": 5000 * 18,
    "val_fraction": 0.0,
    "order_head_norm": "none",
    "output_bias": "default",
    "step1_flips": "all",
}

#: Where the default recipe departs from the paper: (setting, default, paper, why).
DEVIATIONS: List[Tuple[str, str, str, str]] = [
    ("order_head_norm", "layer (UNETR)", "none",
     "UNETR's intermediate ViT levels are raw residual streams; layer-normalised slot features kept the "
     "order losses from spiking on noise (benchmarks/order_head_stability.py); the head stays linear"),
    ("output_bias", "prior", "default",
     "the output layer starts at the log class priors (RetinaNet), which removed a collapse of a small "
     "label on few cases (benchmarks/label_collapse.py); applied to every strategy, so comparisons stay fair"),
    ("step1_flips", "in-plane", "all (the authors' code flips z with p 0.2)",
     "a depth flip reverses the block order Step 1 predicts, so the code trains on contradictory targets"),
    ("lr / network / ROI / spacing / budget", "the plan's (SegResNet on a CPU, iterations by time)",
     "UNETR, 96^3, 1.5 x 1.5 x 2.0 mm, 14,400 + 90,000 iterations",
     "a few cases on a CPU or one GPU in minutes to hours; UNETR learns poorly at CPU budgets (docs/plan.md: SegResNet vs UNETR at equal time)"),
    ("schedule", "warmup-cosine stepped every iteration", "the code steps it once per 100 epochs",
     "the code's schedule keeps Step 1's learning rate below 1.4e-5; the project follows the paper's text"),
    ("val_fraction", "0.2 from 10 cases on, none below (lwi train)", "0 (all 18 training cases)",
     "from 10 cases a validation split picks the best model; the paper reports the test set only"),
]


def apply_recipe(name: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    """The options of recipe ``name`` under the user's ``given`` ones (given values win), with ``recipe``."""
    from lwi.errors import LWIError

    if name not in RECIPES:
        raise LWIError(f"Unknown --recipe {name!r}; use {' or '.join(RECIPES)}.")
    base: Dict[str, Any] = dict(PAPER) if name == "paper" else {}
    if name == "paper" and given.get("arch_params"):
        base["arch_params"] = {**PAPER["arch_params"], **dict(given["arch_params"])}
        given = {k: v for k, v in given.items() if k != "arch_params"}
    return {**base, **{k: v for k, v in given.items() if v is not None}, "recipe": name}


def recipe_lines(name: str) -> List[str]:
    """What ``lwi plan`` prints about the recipe: which one, and each deviation of the default from the paper."""
    if name == "paper":
        return [
            "Recipe: paper (LWI as the paper trains UNETR on Synapse/BTCV; options you give still win). "
            "None of the default recipe's deviations apply."
        ]
    lines = ["Recipe: default (this project's choices; --recipe paper trains as the paper does). Deviations from the paper:"]
    lines += [f"  {name}: {ours} instead of {paper}  [{why}]" for name, ours, paper, why in DEVIATIONS]
    return lines
