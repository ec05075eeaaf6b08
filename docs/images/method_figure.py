"""Draw docs/images/method-step1.png: what LWI's Step 1 shows the network, on a real volume.

It runs ``lwi preview`` (the same transformation module as training) on one MR case of the hippocampus
development set and draws one coronal slice of the preprocessed crop, of the shuffled view (the N axial
sub-volumes in the order the network sees them) and of the shuffled and masked view, with the
sub-volume borders and which original sub-volume each slot holds. Run from the repository root::

    python docs/images/method_figure.py --image hippocampus-dev/imagesTr/hippocampus_001.nii.gz
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

HERE = Path(__file__).resolve().parent
#: The preview's settings: SegResNet's 8x down-sampling at a 32-voxel depth gives N = 4 sub-volumes.
PREVIEW = ["--arch", "segresnet", "--roi", "32", "48", "32", "--cube-size", "8", "--seed", "0", "--device", "cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="a 3D image (e.g. a hippocampus-dev case)")
    parser.add_argument("--out", default=str(HERE / "method-step1.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "lwi", "preview", "--input", args.image, "--out-dir", folder, "--json", *PREVIEW]
        info = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        # SimpleITK gives (z, y, x); the preview's depth axis is the volume's last (superior) axis.
        views = [sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / info["files"][k])))
                 for k in ("preprocessed", "shuffled", "shuffled_masked")]
    n, depth, order = info["num_subvolumes"], info["subvolume_depth"], info["permutation"]
    row = views[0].shape[1] // 2  # a coronal slice through the middle
    titles = ["preprocessed crop", "shuffled sub-volumes", "shuffled and masked\n(the network's input)"]
    fig, axes = plt.subplots(1, 3, figsize=(9, 4.2))
    for ax, view, title in zip(axes, views, titles):
        ax.imshow(np.flipud(view[:, row, :]), cmap="gray", aspect="equal")
        height = view.shape[0]
        for j in range(1, n):
            ax.axhline(height - j * depth - 0.5, color="orange", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for j in range(n):
        y = views[0].shape[0] - (j + 0.5) * depth
        axes[0].text(-1, y, f"{j}", color="orange", ha="right", va="center", fontsize=9)
        axes[1].text(-1, y, f"{order[j]}", color="orange", ha="right", va="center", fontsize=9)
    fig.suptitle(
        f"LWI Step 1 on a hippocampus MR case: {n} axial sub-volumes shuffled, {info['masked_cubes']} cubes of "
        f"{info['cube_size']}^3 masked ({info['mask_ratio']:.0%});\nthe order heads predict each slot's "
        "original sub-volume (orange numbers), the decoder reconstructs the unmasked shuffled crop",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
