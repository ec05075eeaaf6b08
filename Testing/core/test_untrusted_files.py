"""Model files and label tables as untrusted input (issue 20, classes 4, 5 and 7).

A model file's header is checked against the schema, sane bounds and the tensors the file actually
holds before anything is allocated; label tables are refused or warned about as a user expects; the
messages are true (an intact file too large for memory is not called corrupt, a truncated checkpoint
is not offered to --resume). Refusals run as real ``python -m lwi`` subprocesses in parallel and pass
:func:`hostile.assert_refused`.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable, List, Optional

import pytest
import torch
from hostile import CATCH_ALL, SHAPE, Case, Cases, Kit, check_refused, kit_files, lwi, snapshot, write
from safetensors.torch import load_file, save_file

from lwi.data.dataset import load_dataset
from lwi.data.phantoms import PHANTOM_LABELS
from lwi.errors import LWIError
from lwi.names import read_header_metadata

NET = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]", "--arch-param",
       "blocks_up=[1]", "--roi", "16", "16", "16", "--device", "cpu", "--pretrain-epochs", "1", "--epochs", "1"]
pytestmark = pytest.mark.timeout(900)


CASES = Cases()
case = CASES.add


@pytest.fixture(scope="module")
def kit(tmp_path_factory, make_bundle) -> Kit:
    return Kit(**kit_files(tmp_path_factory.mktemp("kit"), make_bundle))


@pytest.fixture(scope="module")
def outcomes(kit, tmp_path_factory):
    return CASES.run(kit, tmp_path_factory)


def _edited(kit: Kit, path: Path, edit: Callable[[dict], None], tensors: Optional[dict] = None) -> Path:
    """The kit's model with its real tensors (or ``tensors``) and its metadata changed by ``edit``."""
    meta = read_header_metadata(kit.model)
    edit(meta)
    save_file(tensors if tensors is not None else load_file(str(kit.model)), str(path), metadata={"lwi": json.dumps(meta)})
    return path


def _segment(kit: Kit, model: Path, root: Path) -> List[object]:
    return ["segment", "--model", model, "--input", kit.image, "--output", root / "o.nii.gz", "--device", "cpu"]


# -- 4: model metadata against the schema, bounds and the tensors in the file --------------------------
@case("output channels that the weights do not have")
def _(root, kit):
    def edit(meta):
        meta["architecture"]["out_channels"] = 9

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("m.lwi.safetensors", "do not match", "9 output channels"))


@case("a network far larger than its tensors")
def _(root, kit):
    def edit(meta):
        meta["architecture"]["params"]["init_filters"] = 60000  # ~ 10^11 weights if allocated

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("m.lwi.safetensors", "do not match"))


@case("a network parameter beyond the bounds")
def _(root, kit):
    def edit(meta):
        meta["architecture"]["params"]["init_filters"] = 10**12

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("architecture.params.init_filters", "at most"))


@case("two labels on one value")
def _(root, kit):
    def edit(meta):
        meta["labels"][1]["value"] = meta["labels"][0]["value"]

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("labels[1].value", "too"))


@case("two labels of one name")
def _(root, kit):
    def edit(meta):
        meta["labels"][1]["name"] = meta["labels"][0]["name"].upper()

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(["info", model], [root], ("labels[1].name", "too"))


@case("a label without a channel")
def _(root, kit):
    def edit(meta):
        meta["labels"][0]["value"] = 40

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("labels[0].value", "channels 0 to 4"))


@case("a label with an empty name")
def _(root, kit):
    def edit(meta):
        meta["labels"][2]["name"] = "  "

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    return Case(_segment(kit, model, root), [root], ("labels[2].name", "empty"))


@case("a header nested too deeply")
def _(root, kit):
    path = root / "m.lwi.safetensors"
    body = ("[" * 200_000).encode()  # the safetensors header itself: 200000 nested lists
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    return Case(_segment(kit, path, root), [root], ("m.lwi.safetensors", "nested too deeply"))


@case("metadata nested too deeply")
def _(root, kit):
    path = root / "m.lwi.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"lwi": "[" * 200_000})
    return Case(["info", path], [root], ("m.lwi.safetensors", "nested too deeply"))


@case("a header claiming gigabytes")
def _(root, kit):
    path = root / "m.lwi.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    return Case(_segment(kit, path, root), [root], ("m.lwi.safetensors", "header claims"))


@case("tensors beyond the end of the file")
def _(root, kit):
    path = root / "m.lwi.safetensors"
    data = kit.model.read_bytes()
    path.write_bytes(data[: len(data) - 4096])
    return Case(_segment(kit, path, root), [root], ("m.lwi.safetensors", "truncated"), absent=("--resume",))


@case("a model without colours")
def _(root, kit):
    def edit(meta):
        for entry in meta["labels"]:
            del entry["color"]

    model = _edited(kit, root / "m.lwi.safetensors", edit)
    # The schema makes colours optional: the model is used; the refusal here is the constant image.
    blank = root / "blank.nii.gz"
    import SimpleITK as sitk

    write(sitk.Image(list(SHAPE), sitk.sitkFloat32), blank)
    return Case(["segment", "--model", model, "--input", blank, "--output", root / "o.nii.gz", "--device", "cpu"],
                [root], ("blank.nii.gz", "constant image"))


# -- 5: label tables ------------------------------------------------------------------------------------
def _dataset_with_labels(kit: Kit, root: Path, labels: dict) -> Path:
    data = Path(shutil.copytree(kit.data, root / "data"))
    meta = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = labels
    (data / "dataset.json").write_text(json.dumps(meta))
    return data


@case("dataset labels with one name twice")
def _(root, kit):
    data = _dataset_with_labels(kit, root, {"0": "background", "1": "liver", "2": "Liver", "3": "kidney", "4": "vertebra"})
    return Case(["train", "--data", data, "--out", root / "m.lwi.safetensors", *NET], [root],
                ("dataset.json", "values 1 and 2", "own name"))


@case("dataset label with an empty name")
def _(root, kit):
    data = _dataset_with_labels(kit, root, {"0": "background", "1": "liver", "2": "", "3": "kidney", "4": "vertebra"})
    return Case(["evaluate", "--model", kit.model, "--data", data], [root], ("dataset.json", "label value 2", "empty"))


@case("resume on a dataset with other labels")
def _(root, kit):
    data = _dataset_with_labels(kit, root, {"0": "background", "1": "liver", "2": "spleen", "3": "kidney",
                                            "4": "vertebra", "5": "aorta"})
    meta = read_header_metadata(kit.model)
    state = {"format": "lwi-step2-state", "format_version": 1, "architecture": meta["architecture"],
             "labels": {str(k): v for k, v in PHANTOM_LABELS.items()}, "preprocessing": meta["preprocessing"],
             "settings": {"arch": "segresnet", "roi": [16, 16, 16], "epochs": 2,
                          "arch_params": meta["architecture"]["params"]},
             "training": {"stage": "finetune", "iteration": 1, "epochs": 2, "iterations_per_epoch": 1,
                          "total_iterations": 2, "state": {}, "scheduler": {}}}
    save_file(load_file(str(kit.model)), str(root / "m.last.lwi.safetensors"), metadata={"lwi": json.dumps(state)})
    return Case(["train", "--strategy", "scratch", "--data", data, "--out", root / "m.lwi.safetensors", "--resume",
                 "--device", "cpu"], [root], ("trained on the labels", "5 aorta", "dataset.json"))


# -- 7: true messages ------------------------------------------------------------------------------------
@case("resume from a truncated checkpoint")
def _(root, kit):
    data = kit.model.read_bytes()
    (root / "m.last.lwi.safetensors").write_bytes(data[: len(data) // 2])
    return Case(["train", "--strategy", "scratch", "--data", kit.data, "--out", root / "m.lwi.safetensors", "--resume",
                 "--device", "cpu"], [root], ("m.last.lwi.safetensors", "truncated"),
                absent=("run the same command with --resume",))


def _schedule() -> dict:
    """A real schedule state (the trainer's class), so only the optimizer state is damaged."""
    from monai.optimizers import WarmupCosineSchedule

    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    return WarmupCosineSchedule(optimizer, warmup_steps=1, t_total=2).state_dict()


def _resumable(kit: Kit, root: Path, state: object) -> Path:
    """A Step-2 checkpoint next to ``root/m.lwi.safetensors`` for the kit's dataset and model, whose
    training state (optimizer and scaler skeleton) is ``state``."""
    meta = read_header_metadata(kit.model)
    labels = {str(k): v for k, v in load_dataset(kit.data).labels.items()}
    checkpoint = {"format": "lwi-step2-state", "format_version": 1, "architecture": meta["architecture"],
                  "labels": labels, "preprocessing": meta["preprocessing"],
                  "settings": {"arch": "segresnet", "roi": [16, 16, 16], "epochs": 2,
                               "arch_params": meta["architecture"]["params"]},
                  "training": {"stage": "train", "iteration": 1, "epochs": 2, "iterations_per_epoch": 1,
                               "total_iterations": 2, "state": state, "scheduler": _schedule()}}
    path = root / "m.last.lwi.safetensors"
    tensors = dict(load_file(str(kit.model)), **{"train_state/rng/torch": torch.get_rng_state()})
    save_file(tensors, str(path), metadata={"lwi": json.dumps(checkpoint)})
    return path


def _resume(kit: Kit, root: Path) -> List[object]:
    return ["train", "--strategy", "scratch", "--data", kit.data, "--out", root / "m.lwi.safetensors", "--resume",
            "--device", "cpu"]


_DAMAGED_OPTIMIZER = {
    "no optimizer": {"__dict__": [["scaler", False, {"__dict__": []}]]},
    "a tensor the file lacks": {"__dict__": [["optimizer", False, {"__dict__": [
        ["state", False, {"__dict__": [[0, True, {"__dict__": [["exp_avg", False, {"__tensor__": "gone"}]]}]]}],
        ["param_groups", False, [{"__dict__": [["params", False, [0]]]}]]]}]]},
    "other parameter groups": {"__dict__": [["optimizer", False, {"__dict__": [
        ["state", False, {"__dict__": []}], ["param_groups", False, [{"__dict__": [["params", False, [0]]]}]]]}]]},
    "moments of another shape": {"__dict__": [["optimizer", False, {"__dict__": [
        ["state", False, {"__dict__": [[0, True, {"__dict__": [["step", False, 1.0],
                                                               ["exp_avg", False, {"__tensor__": "train_state/rng/torch"}],
                                                               ["exp_avg_sq", False, {"__tensor__": "train_state/rng/torch"}]]}]]}],
        ["param_groups", False, "GROUPS"]]}]]},
    "not a dict": [1, 2, 3],
}

for _name, _state in _DAMAGED_OPTIMIZER.items():
    @case(f"resume from a damaged optimizer state: {_name}")
    def _(root, kit, _state=_state):
        if '"GROUPS"' in json.dumps(_state):  # the real parameter groups, so only the moments are wrong
            count = len(load_file(str(kit.model)))
            groups = [{"__dict__": [["params", False, list(range(count))], ["lr", False, 1e-4],
                                    ["betas", False, [0.9, 0.999]], ["eps", False, 1e-8],
                                    ["weight_decay", False, 1e-5], ["amsgrad", False, False]]}]
            _state = json.loads(json.dumps(_state).replace('"GROUPS"', json.dumps(groups)))
        _resumable(kit, root, _state)
        return Case(_resume(kit, root), [root], ("m.last.lwi.safetensors", "training state"),
                    absent=("--resume",))


@case("a dataset.json nested too deeply")
def _(root, kit):
    data = Path(shutil.copytree(kit.data, root / "data"))
    (data / "dataset.json").write_text("[" * 200_000)
    return Case(["train", "--data", data, "--out", root / "new" / "m.lwi.safetensors", *NET], [root],
                ("dataset.json", "nested too deeply"))


@pytest.mark.parametrize("name", list(CASES))
def test_refused_with_a_true_sentence(outcomes, name):
    check_refused(outcomes["cases"][name])


def test_shared_inputs_are_untouched(outcomes, kit):
    assert snapshot(kit.root) == outcomes["shared"]


def test_an_intact_model_too_large_for_memory_is_called_too_large_not_corrupt(kit, tmp_path, make_bundle):
    """A sparse file whose header and length agree, with terabytes of weights: refused before
    allocating, with the memory it needs, and not called damaged."""
    from lwi.architectures import build

    meta = read_header_metadata(kit.model)
    spec = dict(meta["architecture"])
    spec["params"] = dict(spec["params"], init_filters=32768)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build(**spec).state_dict().items()}
    meta["architecture"] = spec
    header, offset = {"__metadata__": {"lwi": json.dumps(meta)}}, 0
    for name, shape in shapes.items():
        size = 4 * int(torch.Size(shape).numel())
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    body = json.dumps(header).encode()
    path = tmp_path / "huge.lwi.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body)
        f.truncate(8 + len(body) + offset)  # sparse: no disk used
    proc = lwi("segment", "--model", path, "--input", kit.image, "--output", tmp_path / "o.nii.gz", "--device", "cpu")
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and CATCH_ALL not in proc.stderr, proc.stderr[-1500:]
    assert "too large for this computer's memory" in line and "intact" in line, line
    assert "corrupt" not in line and "damaged" not in line and "truncated" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.lwi.safetensors"]


def test_a_declared_label_in_no_case_is_warned_about(kit, tmp_path):
    data = _dataset_with_labels(kit, tmp_path, {**{str(k): v for k, v in PHANTOM_LABELS.items()}, "5": "aorta"})
    dataset = load_dataset(data)
    assert dataset.unused_labels == [5]
    assert "5 (aorta)" in dataset.unused_labels_note() and "never learns" in dataset.unused_labels_note()
    assert load_dataset(kit.data).unused_labels_note() is None


def test_dataset_labels_of_one_name_are_refused_by_the_reader(tmp_path):
    from lwi.data.dataset import parse_labels

    with pytest.raises(LWIError, match="own name"):
        parse_labels({"0": "background", "1": "liver", "2": " liver "})
    assert parse_labels({"background": 0, "liver": 1}) == {0: "background", 1: "liver"}
