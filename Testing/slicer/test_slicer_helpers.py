"""The plain (Slicer-free) helpers of the Slicer modules: command lines, environment, dependencies,
label table, colours, terminology and file names (LWICommon)."""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import cli_args, core_path, dependencies, files, labels  # noqa: E402

# -- command lines ---------------------------------------------------------------------------


def test_python_executable_prefers_pythonslicer():
    assert cli_args.python_executable(
        which=lambda n: "/opt/Slicer/bin/PythonSlicer", current="/x/python"
    ) == ("/opt/Slicer/bin/PythonSlicer")
    assert cli_args.python_executable(which=lambda n: None, current="/x/python") == "/x/python"


def test_core_dir_finds_the_core_installed_next_to_the_modules_and_in_a_checkout(tmp_path):
    installed = tmp_path / "qt-scripted-modules"
    (installed / "lwi").mkdir(parents=True)
    (installed / "lwi" / "__init__.py").write_text("")
    assert core_path.core_dir(str(installed)) == str(installed)
    assert core_path.core_dir(str(ROOT / "LWITraining")) == str(ROOT)
    assert core_path.core_dir(str(tmp_path / "empty")) is None


def test_subprocess_env_puts_the_core_first_and_keeps_the_rest():
    base = {"PATH": "/bin", "PYTHONPATH": os.pathsep.join(["/other", "/core"])}
    env = cli_args.subprocess_env("/core", base, extra={"CUDA_VISIBLE_DEVICES": 0})
    assert env["PYTHONPATH"] == os.pathsep.join(["/core", "/other"])
    assert env["PATH"] == "/bin"
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert base["PYTHONPATH"] == os.pathsep.join(["/other", "/core"])  # not modified


def test_options_to_args():
    args = cli_args.options_to_args(
        {
            "roi": (96, 96, 64),
            "device": "cuda",
            "debug": True,
            "seed": None,
            "amp": False,
            "pretrain_epochs": 5,
        }
    )
    assert args == ["--roi", "96", "96", "64", "--device", "cuda", "--debug", "--pretrain-epochs", "5"]


def test_command_lines_follow_the_cli_contract():
    seg = cli_args.segment_command("m.lwi.safetensors", "in.nrrd", "out.nrrd", device="cpu", python="py")
    assert seg == [
        "py",
        "-m",
        "lwi",
        "segment",
        "--model",
        "m.lwi.safetensors",
        "--input",
        "in.nrrd",
        "--output",
        "out.nrrd",
        "--device",
        "cpu",
        "--progress",
        "json",
    ]
    train = cli_args.train_command(
        "data", "m.lwi.safetensors", options={"arch": "segresnet", "epochs": 3}, python="py"
    )
    assert train[:4] == ["py", "-m", "lwi", "train"]
    assert train[train.index("--arch") + 1] == "segresnet" and train[-2:] == ["--progress", "json"]
    assert cli_args.info_command("m.lwi.safetensors", python="py") == [
        "py",
        "-m",
        "lwi",
        "info",
        "m.lwi.safetensors",
        "--json",
    ]
    preview = cli_args.preview_command("in.nrrd", "outdir", python="py")
    assert preview == ["py", "-m", "lwi", "preview", "--input", "in.nrrd", "--out-dir", "outdir", "--json"]


@pytest.mark.parametrize(
    "name, build",
    [
        (
            "segment",
            lambda: cli_args.segment_command("m.lwi.safetensors", "in.nrrd", "out.nrrd", device="cpu"),
        ),
        (
            "train",
            lambda: cli_args.train_command(
                "data", "m.lwi.safetensors", options={"epochs": 2, "pretrain_epochs": 1}
            ),
        ),
        ("preview", lambda: cli_args.preview_command("in.nrrd", "outdir")),
        ("info", lambda: cli_args.info_command("m.lwi.safetensors")),
    ],
)
def test_command_lines_parse_with_the_core_command_modules(name, build):
    """The arguments the modules build are accepted by the core's own argument parser."""
    try:
        module = importlib.import_module(f"lwi.commands.{name}")
    except ModuleNotFoundError:
        pytest.skip(f"lwi.commands.{name} is not written yet")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    parsed = parser.parse_args(build()[4:])
    if name == "segment":
        assert (parsed.model, parsed.input, parsed.output, parsed.device) == (
            "m.lwi.safetensors",
            "in.nrrd",
            "out.nrrd",
            "cpu",
        )
    if name in ("segment", "train"):
        assert parsed.progress == "json"
    if name in ("preview", "info"):
        assert parsed.json is True


# -- dependencies ----------------------------------------------------------------------------


def _versions(**installed):
    return lambda name: installed.get(dependencies.canonical_name(name).replace("-", "_"))


def test_core_requirements_match_pyproject():
    declared = dependencies.requirements_from_pyproject((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ours = {
        dependencies.canonical_name(dependencies.split_requirement(r)[0]): r
        for r in dependencies.CORE_REQUIREMENTS
    }
    ours["torch"] = dependencies.TORCH_REQUIREMENT
    assert ours == declared


def test_missing_requirements_and_version_checks():
    version_of = _versions(
        monai="1.3.2", simpleitk="2.3.1", safetensors="0.4.5", tqdm="4.66.0", numpy="1.26.4"
    )
    missing = dependencies.missing_requirements(dependencies.CORE_REQUIREMENTS, version_of)
    assert missing == ["monai>=1.5", "scipy>=1.9", "nibabel>=4", "einops>=0.6"]
    assert dependencies.satisfies("2.5.1+cu121", ">=2.1")
    assert not dependencies.satisfies("2.0.1", ">=2.1,<3")
    assert dependencies.split_requirement("monai >= 1.4") == ("monai", ">=1.4")


def test_pip_arguments_never_replace_packages_slicer_ships():
    version_of = _versions(numpy="1.26.4", simpleitk="2.3.1", requests="2.31.0", monai=None)
    args = dependencies.pip_install_requirements(
        ["monai>=1.4", "numpy>=1.22", "safetensors>=0.4"], version_of
    )
    assert "monai>=1.4" in args and "safetensors>=0.4" in args
    assert "numpy==1.26.4" in args and "SimpleITK==2.3.1" in args and "requests==2.31.0" in args
    assert not any(a.startswith("numpy>=") for a in args)  # the pin stands for the shipped package
    assert dependencies.pip_install_requirements(["numpy>=1.22"], version_of) == []  # nothing to install
    assert dependencies.shipped_conflicts(["numpy>=2.0", "monai>=1.4"], version_of) == [
        "numpy>=2.0 (Slicer ships numpy 1.26.4)"
    ]


def test_install_question_lists_what_will_be_installed():
    text = dependencies.describe_missing("missing", ["monai>=1.4"])
    assert "PyTorch" in text and "monai>=1.4" in text and "kept as they are" in text


# -- labels, colours, terminology --------------------------------------------------------------


def test_segment_specs_from_bundle_metadata_use_its_names_and_colours():
    metadata = {
        "labels": [
            {"value": 2, "name": "kidney_left", "color": [185, 102, 83]},
            {"value": 1, "name": "liver", "color": [221, 130, 101]},
        ]
    }
    specs = labels.specs_from_metadata(metadata)
    assert [(s.value, s.name) for s in specs] == [(1, "liver"), (2, "kidney_left")]
    assert specs[0].color == pytest.approx((221 / 255, 130 / 255, 101 / 255))
    assert "SCT^10200004^Liver" in specs[0].terminology
    assert specs[1].terminology.split("~")[3] == "SCT^7771000^Left"
    with pytest.raises(ValueError):
        labels.specs_from_metadata({"labels": []})


def test_segment_specs_from_dataset_labels_take_the_core_colours():
    from lwi.labels import default_color

    for style in (
        {"0": "background", "1": "spleen", "2": "Tumour"},
        {"background": 0, "spleen": 1, "Tumour": 2},
    ):
        specs = labels.segment_specs(style)
        assert [(s.value, s.name) for s in specs] == [(1, "spleen"), (2, "Tumour")]
        assert specs[0].color == pytest.approx(tuple(c / 255 for c in default_color("spleen", 1)))
        assert specs[1].terminology is None  # no standard term for a lesion in this table


def test_terminology_entry_format():
    entry = labels.terminology_entry("Right Kidney")
    fields = entry.split("~")
    assert len(fields) == 7
    assert fields[0] == labels.TERMINOLOGY_CONTEXT
    assert fields[1:4] == ["SCT^123037004^Anatomical Structure", "SCT^64033007^Kidney", "SCT^24028007^Right"]
    assert fields[4:] == [labels.ANATOMIC_CONTEXT, "^^", "^^"]
    assert labels.terminology_entry("liver").split("~")[3] == "^^"  # unpaired organs: no laterality
    assert labels.terminology_entry("blob 7") is None


def test_colour_conversion():
    assert labels.color_to_float([255, 0, 51]) == pytest.approx((1.0, 0.0, 0.2))
    assert labels.color_to_float("#ff0033") == pytest.approx((1.0, 0.0, 0.2))
    assert labels.color_to_float((0.5, 0.25, 1.0)) == (0.5, 0.25, 1.0)
    with pytest.raises(ValueError):
        labels.color_to_float("red")


def test_colour_table_rows_and_unique_names():
    specs = labels.segment_specs([{"value": 3, "name": "liver", "color": [1, 2, 3]}])
    rows = labels.color_table_rows(specs)
    assert rows[0][:2] == (0, "background") and rows[1][:2] == (3, "liver")
    assert labels.unique_names(["liver", "Liver", "", "spleen"]) == ["liver", "Liver_2", "segment", "spleen"]


# -- file names ---------------------------------------------------------------------------------


def test_file_names(tmp_path):
    assert files.safe_stem("CT chest: 1/2 (a)") == "CT_chest_1_2_a"
    assert files.safe_stem("???") == "volume"
    run_dir = files.make_run_dir(str(tmp_path))
    assert os.path.isdir(run_dir) and os.listdir(run_dir) == []
    assert files.input_volume_path(run_dir, "MR Head").endswith("input0-MR_Head.nrrd")
    assert files.output_labelmap_path(run_dir, "MR Head").endswith("MR_Head-segmentation.nrrd")
    assert files.model_name_from_path("/m/liver.lwi.safetensors") == "liver"
    (tmp_path / "b.lwi.safetensors").write_bytes(b"")
    (tmp_path / "a.lwi.safetensors").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert [os.path.basename(p) for p in files.list_models(str(tmp_path))] == [
        "a.lwi.safetensors",
        "b.lwi.safetensors",
    ]
    assert files.list_models(str(tmp_path / "missing")) == []
    assert files.model_path(str(tmp_path), "my model") == str(tmp_path / "my_model.lwi.safetensors")


def test_one_models_folder_rule_for_both_modules(tmp_path):
    """LWI Training publishes to, and LWI Segmentation lists, the same folder: the chosen one, else
    the LWI/ModelsFolder application setting, else ~/LWI/models."""
    home = str(tmp_path)
    assert files.models_folder("/chosen", setting="/set", home=home) == "/chosen"
    assert files.models_folder(None, setting="/set", home=home) == "/set"
    assert files.models_folder("", setting="", home=home) == os.path.join(home, "LWI", "models")
    assert files.models_folder(".", setting="/set", home=home) == "/set"  # an unset path widget
    # Outside Slicer there is no application setting: the default.
    assert files.models_folder_setting() == ""
