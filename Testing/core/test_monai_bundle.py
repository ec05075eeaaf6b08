"""``lwi export --format monai-bundle``: the exported bundle run by MONAI's own runner (``python -m monai.bundle
run``, a real subprocess) labels a volume as ``lwi segment`` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.data.phantoms import make_phantom
from lwi.names import MODEL_SUFFIX

pytest.importorskip("fire")  # python -m monai.bundle's command line needs it (MONAI's optional dependency)


def _lwi(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lwi", *args], capture_output=True, text=True, encoding="utf-8", timeout=240, cwd=cwd
    )


def _dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    return 2.0 * float((x & y).sum()) / float(x.sum() + y.sum())


def _oblique_ct(path: Path, shape=(40, 36, 24)) -> sitk.Image:
    image, _ = make_phantom(0, shape=shape, spacing=(3.0, 3.5, 5.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, 0.0, s, 0.0, -1.0, 0.0, s, 0.0, -c))  # oblique, y flipped: not the network's RAS grid
    image.SetOrigin((12.5, -40.0, 300.0))
    image = sitk.Cast(image, sitk.sitkInt16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


def test_monai_bundle_run_labels_a_volume_as_lwi_segment_does(make_bundle, tmp_path):
    model = make_bundle(tmp_path / f"tiny{MODEL_SUFFIX}", bias=[0.0, 0.1, 0.1])
    bundle = tmp_path / "bundle"
    proc = _lwi("export", "--model", str(model), "--format", "monai-bundle", "--out", str(bundle))
    assert proc.returncode == 0, proc.stderr
    image = _oblique_ct(tmp_path / "in" / "ct.nii.gz")
    ours = tmp_path / "lwi" / "ct.nii.gz"
    proc = _lwi("segment", "--model", str(model), "--input", str(tmp_path / "in" / "ct.nii.gz"), "--output", str(ours),
                "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    # MONAI's runner, from the bundle folder as the Model Zoo's bundles are run.
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
         "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "monai")],
        capture_output=True, text=True, encoding="utf-8", timeout=240, cwd=bundle,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = sitk.ReadImage(str(tmp_path / "monai" / "ct_seg.nii.gz"))
    assert theirs.GetSize() == image.GetSize()
    assert np.allclose(theirs.GetOrigin(), image.GetOrigin(), atol=1e-3)
    assert np.allclose(theirs.GetDirection(), image.GetDirection(), atol=1e-5)
    a, b = sitk.GetArrayFromImage(sitk.ReadImage(str(ours))), sitk.GetArrayFromImage(theirs)
    assert set(np.unique(a)) == {0, 1, 2}  # both labels present: the comparison is not trivial
    for value in (1, 2):
        assert _dice(a, b, value) >= 0.99, (value, _dice(a, b, value))
    # The bundle is MONAI's alone: every component is a MONAI (or torch/numpy) name, none from lwi.
    text = (bundle / "configs" / "inference.json").read_text(encoding="utf-8")
    assert "lwi" not in text
    config = json.loads(text)
    assert config["network_def"]["_target_"] == "monai.networks.nets.SegResNet"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "liver", "2": "left kidney"}


def test_torchscript_and_state_dict_give_the_lwi_network_output(make_bundle, tmp_path):
    from monai.bundle import ConfigParser

    from lwi.bundle import load_bundle
    from lwi.bundle_export import export_monai_bundle

    model = make_bundle(tmp_path / f"tiny{MODEL_SUFFIX}")
    bundle = tmp_path / "bundle"
    assert export_monai_bundle(model, bundle) == {"torchscript": "scripted"}
    adapter, _ = load_bundle(model)
    window = torch.randn(2, 1, 16, 16, 16)
    parser = ConfigParser(json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8")))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    from monai.data import load_net_with_metadata

    scripted, meta, extra = load_net_with_metadata(str(bundle / "models" / "model.ts"), more_extra_files=["inference.json"])
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3  # the configs ride along (MONAI Deploy)
    assert json.loads(extra["inference.json"])["inferer"]["roi_size"] == [16, 16, 16]
    with torch.no_grad():
        expected = adapter(window)
        torch.testing.assert_close(net.eval()(window), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(scripted(window), expected, atol=1e-5, rtol=1e-4)


def test_mr_model_on_a_volume_smaller_than_the_window_in_process(make_bundle, tmp_path):
    """The MR branch (z-score, crop above 0) and the padding of a small volume with its minimum, through
    MONAI's ``run`` in this process (the same runner as the command line)."""
    from monai.bundle import run

    from lwi.bundle_export import export_monai_bundle
    from lwi.inference import Segmenter

    mr = {"orientation": "RAS", "spacing": [4.0, 4.0, 4.0], "modality": "MR", "crop_foreground": True}
    model = make_bundle(tmp_path / f"mr{MODEL_SUFFIX}", preprocessing=mr, bias=[0.0, 0.1, 0.1])
    export_monai_bundle(model, tmp_path / "bundle")
    image = _oblique_ct(tmp_path / "in" / "mr.nii.gz", shape=(16, 14, 10))  # 12 x 12 x 12 at 4 mm: below 16^3
    image = sitk.ReadImage(str(tmp_path / "in" / "mr.nii.gz"))
    ours = sitk.GetArrayFromImage(Segmenter(model, device="cpu").segment(image).label)
    run(config_file=str(tmp_path / "bundle" / "configs" / "inference.json"), bundle_root=str(tmp_path / "bundle"),
        dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
    assert torch.is_grad_enabled()  # the run left the caller's autograd as it was
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "mr_seg.nii.gz")))
    assert len(np.unique(ours)) > 1
    for value in np.unique(ours)[1:]:
        assert _dice(ours, theirs, int(value)) >= 0.99


@pytest.mark.parametrize(
    "arch, roi, params",
    [
        ("unetr", (16, 16, 16), dict(feature_size=4, hidden_size=48, mlp_dim=96, num_heads=4)),
        ("swinunetr", (32, 32, 32), dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], norm_name="batch")),
        ("mednext", (32, 32, 32), dict(init_filters=4, blocks_down=[1, 1, 1, 1], blocks_bottleneck=1, blocks_up=[1, 1, 1, 1])),
    ],
)
def test_every_architecture_exports_as_its_plain_monai_network(arch, roi, params, tmp_path):
    """export_monai_bundle builds network_def alone, loads the weights strictly and compares outputs with the
    LWI network before writing; it refuses otherwise."""
    from lwi.architectures import build
    from lwi.bundle import save_bundle
    from lwi.bundle_export import export_monai_bundle

    torch.manual_seed(0)
    model = save_bundle(tmp_path / f"{arch}{MODEL_SUFFIX}", build(arch, 1, 3, roi, **params),
                        {0: "background", 1: "liver", 2: "spleen"}, {"spacing": [4.0, 4.0, 4.0], "modality": "CT"})
    result = export_monai_bundle(model, tmp_path / "bundle")
    assert result["torchscript"] in ("scripted", "traced")  # checked against the network's output on a window
    assert (tmp_path / "bundle" / "models" / "model.ts").is_file()
    config = json.loads((tmp_path / "bundle" / "configs" / "inference.json").read_text(encoding="utf-8"))
    assert config["network_def"]["_target_"].startswith("monai.networks.nets.")
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()


def _refusal(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_export_requests_are_refused_with_one_sentence(make_bundle, tmp_path):
    model = make_bundle(tmp_path / "models" / f"tiny{MODEL_SUFFIX}")
    existing = tmp_path / "existing"
    (existing / "configs").mkdir(parents=True)
    message = _refusal(_lwi("export", "--model", str(model), "--format", "monai-bundle", "--out", str(existing)))
    assert "already exists" in message and "--overwrite" in message
    (existing / "notes.txt").write_text("mine")  # a folder of the user's files is never replaced
    message = _refusal(_lwi("export", "--model", str(model), "--format", "monai-bundle", "--out", str(existing),
                            "--overwrite"))
    assert "no MONAI Bundle" in message and (existing / "notes.txt").read_text(encoding="utf-8") == "mine"
    from lwi.cli import main  # an earlier bundle is replaced with --overwrite

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    assert main(["export", "--model", str(model), "--format", "monai-bundle", "--out", str(bundle), "--overwrite"]) == 0
    assert json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))["network_def"]["out_channels"] == 3
    message = _refusal(_lwi("export", "--model", str(model), "--format", "monai-bundle", "--out", str(tmp_path / "models"),
                            "--overwrite"))
    assert "replaced as a whole" in message and "--model reads" in message and model.is_file()
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    message = _refusal(_lwi("export", "--model", str(not_a_model), "--format", "monai-bundle", "--out", str(tmp_path / "b")))
    assert str(not_a_model) in message
    assert not (tmp_path / "b").exists()
    proc = _lwi("export", "--model", str(model), "--format", "onnx", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "argument --format: invalid choice: 'onnx'" in proc.stderr.strip().splitlines()[-1]
