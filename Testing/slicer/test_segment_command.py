"""The "equivalent command" LWI Segmentation shows (LWICommon.cli_args.segment_command, built from
the worker's option keys) is one the real ``lwi segment`` parser accepts, and every option value the
GUI gives reaches the Segmenter (or the label-map writer) unchanged."""

from __future__ import annotations

import pytest
from LWICommon import cli_args

from lwi.cli import build_parser
from lwi.commands.segment import make_segmenter
from lwi.names import MODEL_SUFFIX
from lwi.progress import Progress
from lwi.worker import SEGMENTER_OPTIONS, WRITE_OPTIONS

#: A value for every option a worker request (and so the GUI) may carry, none of them the default.
GUI_OPTIONS = {
    "roi_size": [32, 32, 16],
    "overlap": 0.125,
    "sw_batch_size": 3,
    "spacing_scale": 2.0,
    "amp": False,
    "largest_component": True,
    "compress": False,
    "uncertainty_path": "uncertainty.nrrd",
    "mirror": True,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory, make_bundle):
    return make_bundle(tmp_path_factory.mktemp("model") / f"tiny{MODEL_SUFFIX}")


def _parse(model, options):
    command = cli_args.segment_command(str(model), "in.nrrd", "out.seg.nrrd", device="cpu", options=options)
    assert command[1:4] == ["-m", "lwi", "segment"]
    return build_parser().parse_args(command[3:])  # exits (SystemExit 2) on an unknown flag


def test_every_worker_option_has_a_gui_value():
    assert set(GUI_OPTIONS) == set(SEGMENTER_OPTIONS) | set(WRITE_OPTIONS)


def test_the_gui_command_with_every_option_parses_and_reaches_the_segmenter(model):
    args = _parse(model, GUI_OPTIONS)
    segmenter = make_segmenter(args, Progress("none"))
    assert segmenter.roi_size == (32, 32, 16)
    assert segmenter.overlap == 0.125 and segmenter.sw_batch_size == 3
    assert segmenter.spacing_scale == 2.0 and segmenter.amp is False
    assert args.largest_component is True and args.compress is False
    assert str(segmenter.device) == "cpu"


@pytest.mark.parametrize("key", sorted(GUI_OPTIONS))
def test_each_option_alone_and_at_its_default(model, key):
    args = _parse(model, {key: GUI_OPTIONS[key]})
    segmenter = make_segmenter(args, Progress("none"))
    given = {
        "roi_size": segmenter.roi_size,
        "overlap": segmenter.overlap,
        "sw_batch_size": segmenter.sw_batch_size,
        "spacing_scale": segmenter.spacing_scale,
        "amp": segmenter.amp,
    }.get(key, getattr(args, key, None))
    expected = tuple(GUI_OPTIONS[key]) if key == "roi_size" else GUI_OPTIONS[key]
    assert given == expected
    # The defaults the GUI may send explicitly (amp on, compressed files) parse to the same defaults.
    defaults = _parse(model, {"amp": True, "compress": True, "largest_component": False})
    assert make_segmenter(defaults, Progress("none")).amp is True
    assert defaults.compress is True and defaults.largest_component is False
