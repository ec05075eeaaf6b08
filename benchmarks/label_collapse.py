"""Does every label get learned from five cases? Trains on K-case draws of an MSD dataset and reports
per-label Dice on held-out cases (validation Dice on the preprocessed grid, best checkpoint).

Measurement, not a test. Example (CPU, one thread):

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/label_collapse.py --data DIR --draws 0 1 2 \
        --k 5 --test 10 --out /tmp/collapse --name before -- --strategy scratch --arch segresnet \
        --init-filters 8 --roi 32 48 32 --batch-size 2 --iterations-per-epoch 20 --epochs 30 --lr 1e-4

Draw ``d``: the cases are sorted by name, the last ``--test`` are the test cases (the same for every
draw), and K training cases are sampled from the others with ``random.Random(d)``. Everything after
``--`` is passed to ``lwi train`` (the seed is the draw's unless ``--seed`` is given there).
Writes one JSON line per draw to ``OUT/NAME.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path


def make_draw(data: Path, k: int, n_test: int, draw: int, folder: Path) -> dict:
    meta = json.loads((data / "dataset.json").read_text())
    entries = sorted(meta["training"], key=lambda e: e["image"])
    test, pool = entries[-n_test:], entries[:-n_test]
    train = random.Random(draw).sample(pool, k)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(exist_ok=True)
    for e in train + test:
        for key in ("image", "label"):
            src = (data / e[key]).resolve()
            dst = folder / e[key]
            if not dst.exists():
                dst.symlink_to(src)
    names = [Path(e["image"]).name.split(".")[0] for e in test]
    out = {**meta, "training": train + test, "validation": names, "numTraining": len(train) + len(test)}
    (folder / "dataset.json").write_text(json.dumps(out, indent=1))
    return {"train": [Path(e["image"]).name.split(".")[0] for e in train], "test": names}


def main() -> int:
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--test", type=int, default=10)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--name", required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / f"{args.name}.jsonl"
    for draw in args.draws:
        folder = args.out / f"draw{draw}_k{args.k}"
        cases = make_draw(args.data, args.k, args.test, draw, folder)
        model = args.out / f"{args.name}_draw{draw}.lwi.safetensors"
        cmd = [sys.executable, "-m", "lwi", "train", "--data", str(folder), "--out", str(model), "--overwrite",
               "--device", "cpu", "--progress", "json", *extra]
        if "--seed" not in extra:
            cmd += ["--seed", str(draw)]
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        result = next((e for e in events if e["event"] in ("result", "error")), {})
        warnings = [e for e in events if e["event"] == "warning"]
        line = {
            "name": args.name, "draw": draw, **cases, "command": " ".join(cmd[1:]),
            "seconds": round(time.time() - start, 1), "validation_dice": result.get("validation_dice"),
            "best_epoch": result.get("best_epoch"),
            "error": result.get("message") or (proc.stderr.strip().splitlines()[-1:] if proc.returncode else None),
            "warnings": [w.get("message") for w in warnings],
        }
        with results.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
