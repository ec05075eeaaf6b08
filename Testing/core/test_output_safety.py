"""Nothing a user points ``lwi`` at is destroyed (issue 20): outputs that collide with inputs or with
each other, writes that would follow a symlink or replace a device, companion files, and failures while
writing.

Refusals run as real ``python -m lwi`` subprocesses, in parallel (one thread each), and must pass
:func:`hostile.assert_refused`: non-zero exit, one sentence naming the option, no traceback, no
catch-all, every file as it was. Model files as untrusted input and label tables are in
test_untrusted_files.py.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Optional, Tuple

import pytest
import SimpleITK as sitk
from hostile import (
    CATCH_ALL,
    REPO,
    Case,
    Cases,
    Kit,
    check_refused,
    kit_files,
    last_line,
    lwi,
    snapshot,
)

from lwi.outputs import Input, Output, check_collisions, check_outputs, write_file, write_text, writing

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


def _copy(kit: Kit, root: Path) -> Tuple[Path, Path]:
    """A private copy of the kit's model and image (the cases below may point outputs at them)."""
    return Path(shutil.copy(kit.model, root / "m.lwi.safetensors")), Path(shutil.copy(kit.image, root / "ct.nii.gz"))


def _dataset(kit: Kit, root: Path) -> Path:
    return Path(shutil.copytree(kit.data, root / "data"))


# -- 1: an output that is an input, or another output, is refused (with or without --overwrite) -------
@case("segment output is the input through ..")
def _(root, kit):
    model, image = _copy(kit, root)
    (root / "sub").mkdir()
    return Case(["segment", "--model", model, "--input", "ct.nii.gz", "--output", "sub/../ct.nii.gz", "--overwrite"],
                [root], ("--output", "--input reads", "even with --overwrite"), cwd=root)


@case("segment output is a hard link of the input")
def _(root, kit):
    model, image = _copy(kit, root)
    os.link(image, root / "result.nii.gz")
    return Case(["segment", "--model", model, "--input", image, "--output", root / "result.nii.gz", "--overwrite"],
                [root], ("--output", "result.nii.gz", "--input reads"))


@case("segment output is a symlink to the input")
def _(root, kit):
    model, image = _copy(kit, root)
    (root / "result.nii.gz").symlink_to(image)
    return Case(["segment", "--model", model, "--input", image, "--output", root / "result.nii.gz", "--overwrite"],
                [root], ("--output", "--input reads"))


@case("segment colour table is the model")
def _(root, kit):
    model, image = _copy(kit, root)
    return Case(["segment", "--model", model, "--input", image, "--output", root / "o.nii.gz", "--color-table", model,
                 "--overwrite"], [root], ("--color-table", "m.lwi.safetensors", "--model reads"))


@case("segment probabilities are the output")
def _(root, kit):
    model, image = _copy(kit, root)
    return Case(["segment", "--model", model, "--input", image, "--output", root / "o.nii.gz", "--probabilities",
                 root / "o.nii.gz"], [root], ("--probabilities", "also written as --output"))


@case("segment folder into itself")
def _(root, kit):
    model, _ = _copy(kit, root)
    images = root / "images"
    images.mkdir()
    shutil.copy(kit.image, images / "a.nii.gz")
    return Case(["segment", "--model", model, "--input", images, "--output", images, "--overwrite"], [root],
                ("a.nii.gz", "--input reads"))


@case("segment output mhd whose raw file is the input's data")
def _(root, kit):
    model, _ = _copy(kit, root)
    sitk.WriteImage(sitk.ReadImage(str(kit.image)), str(root / "scan.mhd"), False)  # scan.mhd + scan.raw
    return Case(["segment", "--model", model, "--input", root / "scan.mhd", "--output", root / "scan.nhdr"], [root],
                ("scan.raw", "--input reads"))


@case("evaluate json is dataset.json")
def _(root, kit):
    model, _ = _copy(kit, root)
    data = _dataset(kit, root)
    return Case(["evaluate", "--model", model, "--data", data, "--json", data / "dataset.json", "--overwrite"], [root],
                ("--json", "dataset.json", "--data reads"))


@case("evaluate json is one of the predictions")
def _(root, kit):
    model, _ = _copy(kit, root)
    return Case(["evaluate", "--model", model, "--data", kit.data, "--predictions", root / "p", "--json",
                 root / "p" / "phantom_001.seg.nrrd"], [root], ("--json", "phantom_001.seg.nrrd", "also written as"))


@case("train out is a training image")
def _(root, kit):
    data = _dataset(kit, root)
    return Case(["train", "--data", data, "--out", data / "imagesTr" / "phantom_000.nii.gz", "--overwrite", *NET],
                [root], ("--out", "phantom_000.nii.gz", "--data reads"))


@case("finetune out is its init")
def _(root, kit):
    model, _ = _copy(kit, root)
    return Case(["finetune", "--data", kit.data, "--init", model, "--out", model, "--overwrite", "--device", "cpu"],
                [root], ("--out", "--init reads"))


@case("finetune last state is its init")
def _(root, kit):
    init = Path(shutil.copy(kit.model, root / "m.last.lwi.safetensors"))
    return Case(["finetune", "--data", kit.data, "--init", init, "--out", root / "m.lwi.safetensors", "--overwrite",
                 "--device", "cpu"], [root], ("m.last.lwi.safetensors", "--init reads"))


@case("preview writes over its input")
def _(root, kit):
    (root / "views").mkdir()
    image = Path(shutil.copy(kit.image, root / "views" / "mask.nii.gz"))
    return Case(["preview", "--input", image, "--out-dir", root / "views", "--overwrite"], [root],
                ("mask.nii.gz", "--input reads"))


@case("experiment would empty the folder of its test set")
def _(root, kit):
    test = Path(shutil.copytree(kit.data, root / "exp" / "splits" / "test"))
    (root / "exp" / "experiment.json").write_text("{}")
    return Case(["experiment", "--data", kit.data, "--test", test, "--out", root / "exp", "--k", "1", "--overwrite",
                 *NET[:-4]], [root], ("--out", "--test reads"))


# -- 2: devices, pipes and what a planted link points to are never written -----------------------------
@case("segment output is a pipe")
def _(root, kit):
    os.mkfifo(root / "o.nii.gz")
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "o.nii.gz", "--overwrite"],
                [root], ("--output", "is a pipe", "regular file"))


@case("segment output is a device node")
def _(root, kit):
    if os.geteuid() != 0:
        return Case([], [], skip="making a device node needs root")
    os.mknod(root / "null.nii.gz", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "null.nii.gz",
                 "--overwrite"], [root], ("--output", "is a device"))


@case("segment colour table links to a pipe")
def _(root, kit):
    os.mkfifo(root / "pipe")
    (root / "labels.ctbl").symlink_to(root / "pipe")
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "o.nii.gz",
                 "--color-table", root / "labels.ctbl", "--overwrite"], [root], ("--color-table", "is a pipe"))


@case("segment mhd whose data file is a pipe")
def _(root, kit):
    os.mkfifo(root / "o.zraw")
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "o.mhd", "--overwrite"],
                [root], ("o.zraw", "is a pipe"))


@case("segment mhd whose data file is left from an earlier run")
def _(root, kit):
    (root / "o.zraw").write_bytes(b"an earlier result's voxels")
    return Case(["segment", "--model", kit.model, "--input", kit.image, "--output", root / "o.mhd"], [root],
                ("o.zraw", "already exists", "--overwrite"))


@pytest.mark.parametrize("name", list(CASES))
def test_refused_before_any_work(outcomes, name):
    check_refused(outcomes["cases"][name])


def test_shared_inputs_are_untouched(outcomes, kit):
    assert snapshot(kit.root) == outcomes["shared"]


# -- 2: planted symlinks at fixed names are replaced, never followed; companions are cleaned -------------
def test_overwrite_replaces_a_planted_symlink_and_never_writes_through_it(kit, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's notes\n")
    views = tmp_path / "views"
    views.mkdir()
    (views / "preview.json").symlink_to(victim)  # a fixed name of the preview folder
    (views / "mask.nii.gz").symlink_to(victim)
    proc = lwi("preview", "--input", kit.image, "--out-dir", views, "--overwrite", "--roi", "16", "16", "16",
               "--arch", "segresnet", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert victim.read_text(encoding="utf-8") == "someone's notes\n"
    for name in ("preview.json", "mask.nii.gz"):
        assert not (views / name).is_symlink() and (views / name).is_file()
    assert not [p for p in views.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_an_mhd_output_is_written_with_its_data_file_and_the_stale_one_removed(kit, tmp_path):
    out = tmp_path / "o.mhd"
    first = lwi("segment", "--model", kit.model, "--input", kit.image, "--output", out, "--no-compress",
                "--device", "cpu")
    assert first.returncode == 0, first.stderr[-1500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mhd", "o.raw"]
    again = lwi("segment", "--model", kit.model, "--input", kit.image, "--output", out, "--overwrite",
                "--device", "cpu")
    assert again.returncode == 0, again.stderr[-1500:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mhd", "o.zraw"]  # the earlier .raw went with it
    assert "ElementDataFile = o.zraw" in out.read_text(encoding="utf-8")
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(kit.image)).GetSize()


# -- 3: failures while writing --------------------------------------------------------------------------
def _lwi_with_file_limit(limit: int, *args: object, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """``python -m lwi ARGS`` with files limited to ``limit`` bytes (RLIMIT_FSIZE): a write beyond
    fails with EFBIG, as on a full disk, at a size the test chooses."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "LWISegmentation")]),
           "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "lwi", *map(str, args)], capture_output=True, text=True, encoding="utf-8", env=env,
                          cwd=cwd, timeout=600, preexec_fn=limit_files)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="RLIMIT_FSIZE is POSIX")
def test_a_segmentation_failing_to_write_leaves_the_earlier_results_as_they_were(kit, tmp_path):
    out, probs = tmp_path / "o.nii.gz", tmp_path / "p.nrrd"
    out.write_bytes(b"an earlier label map")
    probs.write_bytes(b"earlier probabilities")
    before = snapshot(tmp_path)
    # The label map (~2 kB compressed) fits under 40 kB; the uncompressed probabilities (184 kB) do not.
    proc = _lwi_with_file_limit(40_000, "segment", "--model", kit.model, "--input", kit.image, "--output", out,
                                "--probabilities", probs, "--overwrite", "--no-compress", "--device", "cpu")
    line = last_line(proc.stderr)
    assert proc.returncode == 1, proc.stderr[-1500:]
    assert CATCH_ALL not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert "could not write" in line.lower() and "p.nrrd" in line and "ulimit -f" in line, line
    assert "earlier file is unchanged" in line and "replaced" not in line, line
    assert snapshot(tmp_path) == before  # the label map written first was not put in place either


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="RLIMIT_FSIZE is POSIX")
def test_a_training_whose_model_cannot_be_written_ends_in_a_sentence_and_leaves_nothing(kit, tmp_path):
    out = tmp_path / "m.lwi.safetensors"
    proc = _lwi_with_file_limit(60_000, "train", "--strategy", "scratch", "--data", kit.data, "--out", out, *NET)
    line = last_line(proc.stderr)
    assert proc.returncode == 1, proc.stderr[-2500:]
    assert CATCH_ALL not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2500:]
    assert "file too large" in line.lower() and "m." in line, line
    assert "--resume" not in line, line  # there is nothing to resume from
    assert list(tmp_path.iterdir()) == [], "files left: " + ", ".join(p.name for p in tmp_path.iterdir())


# -- the mechanism itself (what new outputs adopt) -------------------------------------------------------
def test_check_collisions_resolves_relative_paths_links_and_hard_links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.nii.gz").write_bytes(b"x")
    os.link(tmp_path / "in.nii.gz", tmp_path / "hard.nii.gz")
    (tmp_path / "soft.nii.gz").symlink_to("in.nii.gz")
    inputs = [Input(Path("in.nii.gz"), "--input")]
    for name in ("in.nii.gz", "./d/../in.nii.gz", str(tmp_path / "hard.nii.gz"), "soft.nii.gz"):
        with pytest.raises(Exception, match="--input reads"):
            check_collisions(inputs, [Output(Path(name), "--output")])
    check_collisions(inputs, [Output(Path("other.nii.gz"), "--output")])
    with pytest.raises(Exception, match="also written as"):
        check_collisions([], [Output(Path("a.nrrd"), "--output"), Output(tmp_path / "a.nrrd", "--probabilities")])


def test_check_outputs_refuses_a_pipe_even_with_overwrite(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(Exception, match="is a pipe"):
        check_outputs([Output(tmp_path / "pipe.json", "--json")], overwrite=True)


def test_write_file_leaves_the_earlier_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("earlier")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(Exception, match=r"r\.json \(no space left on device\); the earlier file is unchanged"):
        write_file(target, fail, "--json")
    assert target.read_text(encoding="utf-8") == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_all_or_nothing_puts_files_in_place_only_when_the_command_succeeds(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("earlier a")
    with pytest.raises(RuntimeError), writing([Output(a, "--a"), Output(b, "--b")], overwrite=True, all_or_nothing=True):
        write_text(a, "new a")
        raise RuntimeError("the second output failed")
    assert a.read_text(encoding="utf-8") == "earlier a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with writing([Output(a, "--a"), Output(b, "--b")], overwrite=True, all_or_nothing=True):
        write_text(a, "new a")
        write_text(b, "new b")
        assert a.read_text(encoding="utf-8") == "earlier a"  # not yet
    assert a.read_text(encoding="utf-8") == "new a" and b.read_text(encoding="utf-8") == "new b"


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="RLIMIT_FSIZE is POSIX")
def test_an_export_failing_late_removes_the_folders_it_made_and_keeps_an_earlier_bundle(kit, tmp_path):
    # The configs (a few kB) fit under 20 kB, the weights (models/model.pt) do not: the export fails late.
    out = tmp_path / "new" / "deeper" / "bundle"
    proc = _lwi_with_file_limit(20_000, "export", "--model", kit.model, "--format", "monai-bundle", "--out", out)
    line = last_line(proc.stderr)
    assert proc.returncode == 1, proc.stderr[-1500:]
    assert CATCH_ALL not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert "file too large" in line.lower() and "bundle" in line, line
    assert list(tmp_path.iterdir()) == [], "left behind: " + ", ".join(str(p) for p in tmp_path.rglob("*"))

    earlier = tmp_path / "earlier"
    done = lwi("export", "--model", kit.model, "--format", "monai-bundle", "--out", earlier)
    assert done.returncode == 0, done.stderr[-1500:]
    before = snapshot(tmp_path)
    proc = _lwi_with_file_limit(20_000, "export", "--model", kit.model, "--format", "monai-bundle", "--out", earlier,
                                "--overwrite")
    assert proc.returncode == 1 and CATCH_ALL not in proc.stderr, proc.stderr[-1500:]
    assert snapshot(tmp_path) == before
