"""Hostile inputs against the ``lwi`` command line, refused before any work (issue 13).

Each case builds its own bad input in its own folder, hashes everything there, runs a real
``python -m lwi ...`` subprocess and checks the contract of :func:`hostile.assert_refused`: non-zero
exit, the last stderr line one sentence (never the catch-all "Unexpected error", never a progress
bar), no traceback, every input and earlier output byte-identical and no partial file left. The
subprocesses run in parallel (one thread each) to keep the module fast.

Classes of issue 13 covered here: 2 (output locations), 3 (header schema), 4 (non-finite and
truncated images), 5 (overwrite), 6 (option values), 7 (degenerate inputs), 10 (locks), and the
"also cover" list (evaluate, demo, DICOM folders). Mid-run failures, stopping, the umask and the
worker are in test_robustness_runs.py.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List

import hostile
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hostile import SHAPE, Case, Cases, check_refused, dicom_series, kit_files, snapshot, volume, write
from safetensors.torch import save_file

from lwi.outputs import Lock

ROI = ("16", "16", "16")
NET_ONLY = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]",
            "--arch-param", "blocks_up=[1]", "--roi", *ROI, "--device", "cpu"]
NET = [*NET_ONLY, "--pretrain-epochs", "1", "--epochs", "1"]
PRE = {"orientation": "RAS", "spacing": [4.0, 4.0, 4.0], "modality": "CT", "ct_window": [-175, 250]}  # a Step-1 header's
# All cases run in the first test's fixture (in parallel): on a busy machine that exceeds the default.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Kit(hostile.Kit):
    """The shared inputs, the tiny-bundle builder (Testing/conftest.py), a folder no one can write in,
    and the locks the lock cases hold."""

    make_bundle: Callable[..., Path]
    read_only: Path
    held: List[Lock] = field(default_factory=list)


CASES = Cases()
case = CASES.add


def _read_only_folder(root: Path) -> Path:
    """A folder no one can write in: chmod 555 for a normal user; as root (who ignores permissions),
    /proc, whose entries cannot be created by anyone."""
    if getattr(os, "geteuid", lambda: 1)() == 0:
        return Path("/proc")
    folder = root / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture(scope="module")
def kit(tmp_path_factory, make_bundle) -> Kit:
    root = tmp_path_factory.mktemp("kit")
    kit = Kit(**kit_files(root, make_bundle), make_bundle=make_bundle, read_only=_read_only_folder(root))
    yield kit
    for lock in kit.held:  # held until every case was checked, so the lock file is part of the "before"
        lock.release()
    if kit.read_only != Path("/proc"):
        kit.read_only.chmod(0o755)


@pytest.fixture(scope="module")
def outcomes(kit, tmp_path_factory):
    return CASES.run(kit, tmp_path_factory)


# -- 2: output locations, checked before any work ------------------------------------------------
@case("segment-output-is-a-folder")
def _(root, kit):
    (root / "out.seg.nrrd").mkdir()
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "out.seg.nrrd"], [root],
                ("--output", "is a folder"))


@case("segment-into-a-read-only-folder")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", kit.read_only / "lwi-x" / "s.nrrd"],
                [root], ("cannot be written", "not writable"))


@case("segment-probabilities-beyond-the-free-space")
def _(root, kit):
    # A header-only NRRD declaring 6000^3 voxels over a sparse data file: the estimate (4 bytes x 5
    # labels x voxels) exceeds any test machine's disk, and nothing may be computed before saying so.
    (root / "huge.raw").open("wb").truncate(6000**3)
    (root / "huge.nhdr").write_text(
        "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 6000 6000 6000\nspacings: 1 1 1\nencoding: raw\n"
        "data file: huge.raw\n"
    )
    skip = "" if shutil.disk_usage(root).free < 20 * 6000**3 else "this disk has room for 4 TB"
    return Case(["segment", "--model", kit.model, "--input", root / "huge.nhdr", "--output", root / "o.nii.gz",
                 "--probabilities", root / "p.nii.gz"], [root / "huge.nhdr"], ("not enough free space",), skip=skip)


@case("segment-fails-after-writing-the-colour-table")
def _(root, kit):
    array = np.full((12, 16, 16), 50.0, np.float32)
    array[4:8, 4:8, 4:8] = np.nan
    write(sitk.GetImageFromArray(array), root / "nan.nrrd")
    return Case(["segment", "--model", kit.model, "--input", root / "nan.nrrd", "--output", root / "o.nii.gz",
                 "--color-table", root / "labels.ctbl"], [root], ("not numbers",))  # the table waits for the label map


@case("train-into-a-read-only-folder")
def _(root, kit):
    return Case(["train", "--data", kit.data, "--out", kit.read_only / "lwi-x" / "m.lwi.safetensors", *NET], [root],
                ("--out", "not writable"))


@case("train-out-is-a-folder")
def _(root, kit):
    (root / "model.lwi.safetensors").mkdir()
    return Case(["train", "--data", kit.data, "--out", root / "model.lwi.safetensors", *NET], [root], ("is a folder",))


@case("demo-in-a-read-only-folder")
def _(root, kit):
    return Case(["demo", "--quick", "--device", "cpu"], [root], ("not writable",), cwd=kit.read_only)


@case("demo-out-dir-is-a-file")
def _(root, kit):
    (root / "lwi-demo").write_text("my notes\n")
    return Case(["demo", "--quick", "--device", "cpu"], [root], ("is a file",), cwd=root)


@case("demo-larger-than-the-free-space")
def _(root, kit):
    return Case(["demo", "--quick", "--cases", str(10**7), "--device", "cpu"], [root], ("not enough free space",), cwd=root)


@case("evaluate-predictions-is-a-file")
def _(root, kit):
    (root / "predictions").write_text("x")
    return Case(["evaluate", "--model", kit.model, "--data", kit.data, "--predictions", root / "predictions",
                 "--device", "cpu"], [root], ("--predictions", "is a file"))


# -- 5: nothing replaced without --overwrite -------------------------------------------------------
@case("segment-existing-output")
def _(root, kit):
    (root / "earlier.seg.nrrd").write_bytes(b"an earlier result")
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "earlier.seg.nrrd"], [root],
                ("already exists", "--overwrite"))


@case("segment-folder-input-existing-output")
def _(root, kit):
    shutil.copy(kit.image, root / "a.nii.gz")
    (root / "out").mkdir()
    (root / "out" / "a.nii.gz").write_bytes(b"earlier")
    return Case(["segment", "--model", kit.model, "--input", root, "--output", root / "out"], [root], ("already exists",))


@case("evaluate-existing-json")
def _(root, kit):
    (root / "scores.json").write_text("{}")
    return Case(["evaluate", "--model", kit.model, "--data", kit.data, "--json", root / "scores.json"], [root],
                ("already exists", "--overwrite"))


@case("preview-existing-views")
def _(root, kit):
    (root / "views").mkdir()
    (root / "views" / "preview.json").write_text("{}")
    return Case(["preview", "--input", kit.image, "--out-dir", root / "views"], [root], ("already exists",))


@case("train-existing-model")
def _(root, kit):
    (root / "m.lwi.safetensors").write_bytes(b"an earlier model")
    return Case(["train", "--data", kit.data, "--out", root / "m.lwi.safetensors", *NET], [root],
                ("already exists", "--resume", "--overwrite"))


# -- 10: two runs writing the same output ------------------------------------------------------------
@case("train-while-another-run-holds-the-lock")
def _(root, kit):
    out = root / "m.lwi.safetensors"
    kit.held.append(Lock(out, command="lwi train --out m.lwi.safetensors (the test)").acquire())
    return Case(["train", "--data", kit.data, "--out", out, *NET], [root],
                (f"process {os.getpid()}", "being written by another LWI run"))


# -- 3: headers checked against the schema --------------------------------------------------------------
def _header(path: Path, text: str) -> Path:
    save_file({"w": torch.zeros(2)}, str(path), metadata={"lwi": text})
    return path


def _model_header(kit: Kit) -> dict:
    from lwi import checkpoint

    return checkpoint.read_metadata(kit.model)


@case("segment-model-header-not-json")
def _(root, kit):
    model = _header(root / "m.lwi.safetensors", '{"format": "lwi-model", "architecture": {')
    return Case(["segment", "--model", model, "--input", kit.image, "--output", root / "o.nrrd"], [root],
                ("m.lwi.safetensors", "corrupt"))


@case("segment-model-roi-of-the-wrong-type")
def _(root, kit):
    meta = _model_header(kit)
    meta["architecture"]["roi_size"] = "96"
    model = _header(root / "m.lwi.safetensors", json.dumps(meta))
    return Case(["segment", "--model", model, "--input", kit.image, "--output", root / "o.nrrd"], [root],
                ("m.lwi.safetensors", "architecture.roi_size"))


@case("info-model-without-labels")
def _(root, kit):
    meta = _model_header(kit)
    del meta["labels"]
    model = _header(root / "m.lwi.safetensors", json.dumps(meta))
    return Case(["info", model], [root], ("'labels' is missing",))


@case("evaluate-model-overlap-out-of-range")
def _(root, kit):
    meta = _model_header(kit)
    meta["inference"]["overlap"] = 7
    model = _header(root / "m.lwi.safetensors", json.dumps(meta))
    return Case(["evaluate", "--model", model, "--data", kit.data], [root], ("inference.overlap", "less than 1"))


@case("finetune-step1-mask-ratio-out-of-range")
def _(root, kit):
    meta = _model_header(kit)
    header = {"format": "lwi-step1", "format_version": 1, "architecture": meta["architecture"],
              "preprocessing": PRE, "step1": {"num_subvolumes": 2, "mask_ratio": 1.5, "cube_size": 8}}
    step1 = _header(root / "step1.safetensors", json.dumps(header))
    return Case(["finetune", "--data", kit.data, "--init", step1, "--out", root / "m.lwi.safetensors", "--device", "cpu"],
                [root], ("step1.safetensors", "step1.mask_ratio"))


@case("train-resume-from-a-damaged-state")
def _(root, kit):
    meta = _model_header(kit)
    header = {"format": "lwi-step2-state", "format_version": 1, "architecture": meta["architecture"],
              "labels": {"1": "liver"}, "preprocessing": PRE, "settings": {},
              "training": {"stage": "finetune", "iteration": "twelve", "epochs": 1, "iterations_per_epoch": 1,
                           "total_iterations": 1, "state": {}, "scheduler": {}}}
    _header(root / "m.last.lwi.safetensors", json.dumps(header))
    return Case(["train", "--strategy", "scratch", "--data", kit.data, "--out", root / "m.lwi.safetensors", "--resume",
                 "--device", "cpu"], [root], ("m.last.lwi.safetensors", "training.iteration"))


# -- 4: non-finite and truncated images -----------------------------------------------------------------
def _nan_image(path: Path, value: float = np.nan) -> Path:
    image = volume(SHAPE)
    array = sitk.GetArrayFromImage(image)
    array[2:10, 2:10, 2:10] = value  # a 512-voxel block
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return write(out, path)


def _truncated(source: Path, path: Path, compress: bool = True) -> Path:
    image = sitk.ReadImage(str(source))
    sitk.WriteImage(image, str(path), compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@case("segment-nan-voxels-nifti")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _nan_image(root / "nan.nii.gz"), "--output", root / "o.nrrd"],
                [root], ("nan.nii.gz", "512 voxel(s)", "not numbers"))


@case("segment-infinite-voxels-nrrd")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _nan_image(root / "inf.nrrd", np.inf), "--output",
                 root / "o.nrrd"], [root], ("inf.nrrd", "not numbers"))


@case("segment-truncated-nii-gz")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _truncated(kit.image, root / "cut.nii.gz"), "--output",
                 root / "o.nrrd"], [root], ("cut.nii.gz", "truncated"))


@case("segment-truncated-nii")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _truncated(kit.image, root / "cut.nii", False), "--output",
                 root / "o.nrrd"], [root], ("cut.nii", "truncated"))


def _dataset_with(root: Path, kit: Kit, replace: Callable[[Path], None]) -> Path:
    data = root / "data"
    shutil.copytree(kit.data, data)
    replace(data / "imagesTr" / "phantom_001.nii.gz")
    return data


@case("train-case-with-nan-voxels")
def _(root, kit):
    data = _dataset_with(root, kit, lambda p: _nan_image(p))
    return Case(["train", "--data", data, "--out", root / "m.lwi.safetensors", *NET], [root],
                ("phantom_001", "not numbers"))


@case("train-case-truncated")
def _(root, kit):
    data = _dataset_with(root, kit, lambda p: _truncated(kit.image, p))
    return Case(["pretrain", "--data", data, "--out", root / "s1.safetensors", *NET_ONLY, "--epochs", "1"], [root],
                ("phantom_001", "truncated"))


# -- 7: degenerate inputs, decided once for train, segment and evaluate ------------------------------
def _constant(path: Path) -> Path:
    image = volume(SHAPE)
    out = sitk.Image(image.GetSize(), sitk.sitkFloat32)
    out.CopyInformation(image)
    return write(out, path)


def _sliver(path: Path) -> Path:
    return write(volume((64, 64, 4), spacing=(0.1, 0.1, 50.0)), path)


def _same_grid_label(image_path: Path, label_path: Path) -> None:
    label = sitk.ReadImage(str(label_path))
    image = sitk.ReadImage(str(image_path))
    fixed = sitk.Image(image.GetSize(), label.GetPixelID())
    fixed.CopyInformation(image)
    fixed[1, 1, 1] = 1
    write(fixed, label_path)


@case("train-constant-image")
def _(root, kit):
    data = _dataset_with(root, kit, _constant)
    return Case(["train", "--data", data, "--out", root / "m.lwi.safetensors", *NET], [root],
                ("phantom_001", "constant image"))


@case("train-sliver-voxels")
def _(root, kit):
    def replace(path: Path) -> None:
        _sliver(path)
        _same_grid_label(path, path.parent.parent / "labelsTr" / path.name)

    data = _dataset_with(root, kit, replace)
    return Case(["train", "--data", data, "--out", root / "m.lwi.safetensors", *NET], [root], ("phantom_001", "sliver"))


@case("evaluate-constant-image")
def _(root, kit):
    data = _dataset_with(root, kit, _constant)
    return Case(["evaluate", "--model", kit.model, "--data", data, "--device", "cpu"], [root],
                ("phantom_001", "constant image"))


@case("segment-constant-image")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _constant(root / "zeros.nii.gz"), "--output",
                 root / "o.nrrd", "--device", "cpu"], [root], ("zeros.nii.gz", "constant image"))


@case("segment-sliver-voxels")
def _(root, kit):
    return Case(["segment", "--model", kit.model, "--input", _sliver(root / "sliver.nrrd"), "--output", root / "o.nrrd",
                 "--device", "cpu"], [root], ("sliver.nrrd", "sliver"))


# -- 6: option values ----------------------------------------------------------------------------------
OPTIONS = {
    "segment --sw-batch 0": ["segment", "--model", "m", "--input", "i", "--output", "o", "--sw-batch", "0"],
    "segment --sw-batch-size 0": ["segment", "--model", "m", "--input", "i", "--output", "o", "--sw-batch-size", "0"],
    "segment --overlap 1.5": ["segment", "--model", "m", "--input", "i", "--output", "o", "--overlap", "1.5"],
    "segment --roi 0 16 16": ["segment", "--model", "m", "--input", "i", "--output", "o", "--roi", "0", "16", "16"],
    "segment --spacing-scale nan": ["segment", "--model", "m", "--input", "i", "--output", "o", "--spacing-scale", "nan"],
    "evaluate --spacing-scale 0": ["evaluate", "--model", "m", "--data", "d", "--spacing-scale", "0"],
    "train --checkpoint-every -1": ["train", "--data", "d", "--out", "o", "--checkpoint-every", "-1"],
    "train --lr inf": ["train", "--data", "d", "--out", "o", "--lr", "inf"],
    "train --batch-size 0": ["train", "--data", "d", "--out", "o", "--batch-size", "0"],
    "train --val-fraction 1": ["train", "--data", "d", "--out", "o", "--val-fraction", "1"],
    "pretrain --mask-ratio -0.1": ["pretrain", "--data", "d", "--out", "o", "--mask-ratio", "-0.1"],
    "finetune --sw-batch-size 0": ["finetune", "--data", "d", "--init", "i", "--out", "o", "--sw-batch-size", "0"],
    "preview --subvolumes 0": ["preview", "--input", "i", "--out-dir", "o", "--subvolumes", "0"],
    "demo --cases 0": ["demo", "--cases", "0"],
    "demo --seed -3": ["demo", "--seed", "-3"],
}
for _label, _args in OPTIONS.items():
    def _make(root, kit, args=_args, option=_label.split()[1]):
        return Case(list(args), [root], (option, "must be"), cwd=root)

    case(f"option {_label}")(_make)


# -- also cover: evaluate, DICOM folders -----------------------------------------------------------
@case("evaluate-case-without-label-map")
def _(root, kit):
    data = root / "data"
    shutil.copytree(kit.data, data)
    (data / "labelsTr" / "phantom_002.nii.gz").unlink()
    return Case(["evaluate", "--model", kit.model, "--data", data, "--json", root / "scores.json"], [root],
                ("phantom_002",))


@case("evaluate-label-sets-differ")
def _(root, kit):
    model = kit.make_bundle(root / "two-labels.lwi.safetensors", {0: "background", 1: "liver", 2: "spleen"})
    return Case(["evaluate", "--model", model, "--data", kit.data, "--json", root / "scores.json"], [root],
                ("do not match", "cannot predict [3, 4]"))


@case("segment-dicom-folder-with-two-series")
def _(root, kit):
    folder = root / "dicom"
    dicom_series(folder, volume((16, 16, 8)))
    dicom_series(folder, volume((16, 16, 8), seed=1), series_uid="1.2.826.0.1.3680043.2.1125.2")
    return Case(["segment", "--model", kit.model, "--input", folder, "--output", root / "o.nrrd"], [root],
                ("2 dicom series", "own folder"))


@case("segment-dicom-missing-slice")
def _(root, kit):
    folder = dicom_series(root / "dicom", volume((16, 16, 8)), positions=[0, 2, 4, 8, 10, 12, 14, 16])
    return Case(["segment", "--model", kit.model, "--input", folder, "--output", root / "o.nrrd"], [root],
                ("misses 1 slice",))


@case("segment-dicom-uneven-spacing")
def _(root, kit):
    folder = dicom_series(root / "dicom", volume((16, 16, 8)), positions=[0, 2, 4, 6, 9, 11, 14, 16])
    return Case(["segment", "--model", kit.model, "--input", folder, "--output", root / "o.nrrd"], [root],
                ("uneven slice spacing",))


# -- the checks (after every case above is registered) -----------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_refused_before_any_work(outcomes, name):
    check_refused(outcomes["cases"][name])


def test_shared_inputs_are_untouched(outcomes, kit):
    assert snapshot(kit.root) == outcomes["shared"]
