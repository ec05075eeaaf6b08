"""The paper's Synapse/BTCV split as two dataset folders: ``OUT/train18`` and ``OUT/test12``, each a
dataset.json listing the cases of ``--data`` (an MSD-layout BTCV folder) by absolute path, nothing copied.

A case belongs to the split by the number in its name (img0005, case_0005 and BTCV_005 are case 5);
the split is benchmarks/splits/synapse-18-12.json. Refuses a folder missing any of the 30 cases.

    python benchmarks/synapse_split.py --data /data/BTCV --out splits/synapse
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SPLIT = Path(__file__).parent / "splits" / "synapse-18-12.json"


def case_number(name: str) -> int:
    digits = re.findall(r"\d+", name)
    if not digits:
        raise ValueError(f"no case number in {name!r}")
    return int(digits[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the BTCV folder (MSD layout: imagesTr/, labelsTr/, dataset.json)")
    p.add_argument("--out", type=Path, required=True, help="where train18/ and test12/ are written")
    args = p.parse_args()

    from lwi.data.dataset import load_dataset
    from lwi.experiment import write_subset

    split = json.loads(SPLIT.read_text())
    dataset = load_dataset(args.data, require_labels=True)
    by_number = {case_number(c.name): c.name for c in dataset.cases}
    for part, title in (("train", "train18"), ("test", "test12")):
        missing = [n for n in split[part] if n not in by_number]
        if missing:
            print(f"{args.data} has no case numbered {missing} of the {part} split ({SPLIT.name}).", file=sys.stderr)
            return 1
        folder = write_subset(args.out / title, dataset, [by_number[n] for n in split[part]], f"Synapse {title}")
        print(f"{folder}/dataset.json: {len(split[part])} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
