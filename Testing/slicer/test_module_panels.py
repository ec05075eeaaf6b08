"""The module panels (the Widget classes of LWISegmentation.py and LWITraining.py) and the module
files' life cycle, with Slicer's Qt layer stood in for.

The widgets are made from the modules' real .ui files (names, ``SlicerParameterName`` properties);
the background runs are real subprocesses. What Slicer itself would do is emulated by
:class:`ParameterNodeWrapper56`: the GUI binding contract of ``slicer.parameterNodeWrapper`` in
Slicer 5.6-5.8, read in ``Base/Python/slicer/parameterNodeWrapper/`` (``wrapper.py``:
``connectGui`` returns None before 5.10 - commit b5a65a49a0 added the ``return`` - while
``connectParametersToGui`` returns its tag and ``disconnectGui(tag)`` removes only a known tag;
``guiConnectors.py``: the QComboBox connector clears and refills its combo box when it is made, and
reads ``choices[currentIndex]``; ``serializers.py``: a ``pathlib.Path`` defaults to ``Path()``).
A stub QComboBox emits ``currentIndexChanged`` as Qt documents it (-1 on ``clear()``, 0 when the
first item is added to an empty box).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import textwrap
import time
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from qt_stand_ins import Timer

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIRS = {"LWISegmentation": ROOT / "LWISegmentation", "LWITraining": ROOT / "LWITraining"}
#: The module files and the Lib files that import Slicer's Python layer (imported afresh with the stand-ins).
MODULE_FILES = [
    f"{m}{part}" for m in MODULE_DIRS for part in ("", "Lib.parameters", "Lib.logic", "Lib.widget")
]


# -- Qt stand-ins ------------------------------------------------------------------------------


class Widget:
    """A Qt widget: plain attributes for properties, and the calls the modules make."""

    def __init__(self, name: str, cls: str = "QWidget", properties=None):
        self.name, self.cls = name, cls
        self._properties = dict(properties or {})
        self.text, self.toolTip, self.enabled, self.visible, self.value = "", "", True, True, 0
        self.lines, self.items, self.currentIndex, self.plainText = [], [], -1, ""
        self.directory = self.currentPath = ""
        self.currentNode = None
        self.slots = {}
        self.indexListeners = []  # connectors' callbacks: currentIndexChanged

    def property(self, name):
        return self._properties.get(name)

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def setMRMLScene(self, scene):
        pass

    def setVisible(self, visible):
        self.visible = visible

    def setValue(self, value):
        self.value = value

    def appendPlainText(self, line):
        self.lines.append(line)

    def browse(self):
        pass

    # QComboBox, with Qt's documented currentIndexChanged emissions
    def _setIndex(self, index):
        if index != self.currentIndex:
            self.currentIndex = index
            for listener in list(self.indexListeners):
                listener()

    def clear(self):
        if self.items:
            self.items = []
            self._setIndex(-1)

    def addItem(self, text):
        self.items.append(str(text))
        if self.currentIndex == -1:
            self._setIndex(0)

    def removeItem(self, index):
        del self.items[index]
        if self.currentIndex >= len(self.items):
            self._setIndex(len(self.items) - 1)

    def setItemText(self, index, text):
        self.items[index] = text

    def setCurrentIndex(self, index):
        self._setIndex(index)

    def count(self):
        return len(self.items)

    # QTableWidget
    def setColumnCount(self, n):
        pass

    def setHorizontalHeaderLabels(self, labels):
        pass

    def setRowCount(self, n):
        pass

    def setItem(self, row, column, item):
        pass

    def currentRow(self):
        return -1


def ui_widgets(module: str) -> types.SimpleNamespace:
    """``slicer.util.childWidgetVariables`` of the module's real .ui file."""
    root = ET.parse(MODULE_DIRS[module] / "Resources" / "UI" / f"{module}.ui").getroot()
    widgets = {}
    for element in root.iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                properties["SlicerParameterName"] = prop.find("string").text
        widget = Widget(element.get("name"), element.get("class"), properties)
        text = element.find("property[@name='text']/string")
        widget.text = text.text or "" if text is not None else ""
        widgets[element.get("name")] = widget
    return types.SimpleNamespace(**widgets)


def drive(until, seconds: float = 60.0) -> None:
    """Fire the active timers (Slicer's event loop) until ``until()`` is true."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "timed out"
        for timer in list(Timer.timers):
            if timer.active:
                timer.callback()
        time.sleep(0.02)


# -- the parameter node wrapper's GUI contract in Slicer 5.6-5.8 --------------------------------


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class ScriptedModuleNode:
    """vtkMRMLScriptedModuleNode: the values, and ModifiedEvent observers."""

    def __init__(self):
        self.values, self.observers = {}, []

    def modified(self):
        for callback in list(self.observers):
            callback(self, "ModifiedEvent")


class ComboBoxConnector:
    """QComboBoxToStringableConnector: refills the box when made; reads choices[currentIndex]."""

    def __init__(self, widget, choices):
        self.widget, self.choices, self.callback = widget, choices, None
        widget.clear()
        for choice in choices:
            widget.addItem(str(choice))
        widget.indexListeners.append(self._changed)

    def _changed(self):
        if self.callback is not None:
            self.callback()

    def read(self):
        return self.choices[self.widget.currentIndex]

    def write(self, value):
        self.widget.setCurrentIndex(self.choices.index(value))


class AttributeConnector:
    """The other connectors: the value shown in one widget property."""

    ATTRIBUTE = {"ctkDirectoryButton": "directory", "ctkPathLineEdit": "currentPath", "qMRMLNodeComboBox": "currentNode"}

    def __init__(self, widget):
        self.widget, self.callback = widget, None
        self.attribute = self.ATTRIBUTE.get(widget.cls, "value")

    def read(self):
        return getattr(self.widget, self.attribute)

    def write(self, value):
        setattr(self.widget, self.attribute, str(value) if isinstance(value, Path) else value)


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        base, metadata = (hint.__origin__, hint.__metadata__) if hasattr(hint, "__metadata__") else (hint, ())
        if name in cls.__dict__:
            default = cls.__dict__[name]
        else:
            default = {Path: Path(), str: "", int: 0, float: 0.0, bool: False}.get(base)
        fields[name] = (base, metadata, default)

    def validate(name, value):
        for rule in fields[name][1]:
            if isinstance(rule, Choice) and value not in rule.choices:
                raise ValueError(f"{name}: {value!r} is not one of {rule.choices}")
            if isinstance(rule, WithinRange) and not rule.minimum <= value <= rule.maximum:
                raise ValueError(f"{name}: {value!r} out of range")

    class Wrapper:
        allParameters = fields

        def __init__(self, node):
            self.parameterNode, self._guis, self._nextTag = node, {}, 0
            for name, (_, _, default) in fields.items():
                node.values.setdefault(name, default)
            node.observers.append(lambda caller, event: self._updateGui())

        def getValue(self, name):
            return self.parameterNode.values[name]

        def setValue(self, name, value):
            validate(name, value)
            self.parameterNode.values[name] = value
            self.parameterNode.modified()

        def _updateGui(self):
            for mapping in self._guis.values():
                for name, connector in mapping.items():
                    connector.write(self.getValue(name))

        def connectParametersToGui(self, mapping):
            connectors = {}
            for name, widget in mapping.items():
                choices = next((r.choices for r in fields[name][1] if isinstance(r, Choice)), None)
                connectors[name] = ComboBoxConnector(widget, choices) if choices else AttributeConnector(widget)
            tag = self._nextTag
            self._nextTag += 1
            self._guis[tag] = connectors
            for name, connector in connectors.items():
                connector.write(self.getValue(name))
                connector.callback = lambda name=name, connector=connector: self.setValue(name, connector.read())
            return tag

        def connectGui(self, gui):
            mapping = {w.property("SlicerParameterName"): w for w in vars(gui).values() if w.property("SlicerParameterName")}
            self.connectParametersToGui(mapping)  # Slicer 5.6-5.8: no return

        def disconnectGui(self, tag):
            if tag in self._guis:
                for connector in self._guis.pop(tag).values():
                    connector.callback = None

        def connections(self):
            return len(self._guis)

        def AddObserver(self, event, callback):
            self.parameterNode.observers.append(callback)
            return callback

        def RemoveObserver(self, callback):
            if callback in self.parameterNode.observers:
                self.parameterNode.observers.remove(callback)

    for name in fields:
        setattr(
            Wrapper,
            name,
            property(lambda self, n=name: self.getValue(n), lambda self, value, n=name: self.setValue(n, value)),
        )
    Wrapper.__name__ = cls.__name__
    return Wrapper


# -- Slicer stand-ins and the modules imported with them ----------------------------------------


class Scene:
    StartCloseEvent, EndCloseEvent = "StartCloseEvent", "EndCloseEvent"

    def __init__(self):
        self.nodes = []

    def IsNodePresent(self, node):
        return node in self.nodes

    def RemoveNode(self, node):
        self.nodes.remove(node)


class Node:
    def __init__(self, name, classes=("vtkMRMLScalarVolumeNode",)):
        self.name, self.classes = name, classes

    def GetName(self):
        return self.name

    def IsA(self, cls):
        return cls in self.classes


@pytest.fixture
def slicer_env(monkeypatch, tmp_path):
    """Install the stand-ins, import both module files afresh; yields a namespace with them."""
    Timer.timers = []
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    errors = []
    confirmations, answers = [], []  # confirmOkCancelDisplay's questions, and the user's answers
    parameterNodes = {}
    scene = Scene()

    class VTKObservationMixin:
        def __init__(self):
            self.observations = []

        def addObserver(self, obj, event, method):
            if isinstance(obj, Scene):
                self.observations.append((obj, event, method, None))
            else:
                self.observations.append((obj, event, method, obj.AddObserver(event, method)))

        def removeObserver(self, obj, event, method):
            for entry in list(self.observations):
                if entry[0] is obj and entry[1] == event and entry[2] == method:
                    if entry[3] is not None:
                        obj.RemoveObserver(entry[3])
                    self.observations.remove(entry)

        def removeObservers(self):
            for obj, event, method, _tag in list(self.observations):
                self.removeObserver(obj, event, method)

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent or types.SimpleNamespace(isEntered=True)
            self.layout = types.SimpleNamespace(addWidget=lambda w: None)
            self.moduleName = type(self).__name__[: -len("Widget")]
            self.reloaded = 0

        def setup(self):
            pass

        def resourcePath(self, relative):
            return str(MODULE_DIRS[self.moduleName] / "Resources" / relative)

        def onReload(self):
            self.reloaded += 1

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            return parameterNodes.setdefault(type(self).__name__, ScriptedModuleNode())

    def loadUI(path):
        widget = Widget(Path(path).stem)
        widget.module = Path(path).stem
        return widget

    util = types.SimpleNamespace(
        VTKObservationMixin=VTKObservationMixin,
        loadUI=loadUI,
        childWidgetVariables=lambda widget: ui_widgets(widget.module),
        errorDisplay=errors.append,
        confirmOkCancelDisplay=lambda text: confirmations.append(text) or answers.pop(0),
        WaitCursor=contextlib.nullcontext,
        startupEnvironment=lambda: dict(os.environ),
        getNodesByClass=lambda cls: [n for n in scene.nodes if n.IsA(cls)],
    )
    slm = types.SimpleNamespace(
        ScriptedLoadableModule=type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: None}),
        ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
        ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest=unittest.TestCase,
    )
    pnw = types.SimpleNamespace(parameterNodeWrapper=parameterNodeWrapper, Choice=Choice, WithinRange=WithinRange)
    slicer = types.ModuleType("slicer")
    slicer.__path__ = []
    slicer.util, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper = util, slm, pnw
    slicer.i18n = types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text)
    slicer.mrmlScene = scene
    slicer.app = types.SimpleNamespace(temporaryPath=str(tmp_path / "slicer-tmp"))
    slicer.vtkMRMLScalarVolumeNode = type("vtkMRMLScalarVolumeNode", (), {})
    slicer.vtkMRMLSegmentationNode = type("vtkMRMLSegmentationNode", (), {})
    for name, module in {
        "slicer": slicer,
        "slicer.util": util,
        "slicer.ScriptedLoadableModule": slm,
        "slicer.parameterNodeWrapper": pnw,
        "slicer.i18n": slicer.i18n,
        "qt": types.SimpleNamespace(
            QTimer=Timer,
            QSettings=lambda: types.SimpleNamespace(value=lambda key: None),
            QTableWidgetItem=lambda text: types.SimpleNamespace(text=text, setToolTip=lambda tip: None),
        ),
        "vtk": types.SimpleNamespace(vtkCommand=types.SimpleNamespace(ModifiedEvent="ModifiedEvent")),
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    for path in MODULE_DIRS.values():
        monkeypatch.syspath_prepend(str(path))
    for name in MODULE_FILES:
        sys.modules.pop(name, None)
    env = types.SimpleNamespace(
        seg=importlib.import_module("LWISegmentation"),
        train=importlib.import_module("LWITraining"),
        errors=errors,
        scene=scene,
        home=home,
        nodes=parameterNodes,
        confirmations=confirmations,
        answers=answers,
        trainWidget=importlib.import_module("LWITrainingLib.widget"),
        trainParameters=importlib.import_module("LWITrainingLib.parameters"),
    )
    yield env
    for name in MODULE_FILES:
        sys.modules.pop(name, None)


def _script(tmp_path: Path, name: str, code: str) -> list:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return [sys.executable, str(path)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _training_panel(env):
    """The LWITraining panel set up and shown."""
    widget = env.train.LWITrainingWidget()
    widget.setup()
    widget.enter()  # Slicer shows the panel right after setup (qSlicerModulePanel)
    return widget


# -- F1: parameter node <-> GUI connections ----------------------------------------------------


def test_leaving_and_entering_the_panel_keeps_one_connection_and_the_users_values(slicer_env):
    widget = _training_panel(slicer_env)
    p = widget._parameterNode
    module = slicer_env.trainParameters
    declared = module.LWITrainingParameterNode.allParameters["roiSize"][2]
    assert p.roiSize == declared and p.connections() == 1  # the declared default survives the first display
    ui = widget.ui
    ui.roiSizeComboBox.setCurrentIndex(module.ROI_SIZES.index(128))  # the user picks 128, the GPU, SegResNet
    ui.deviceComboBox.setCurrentIndex(module.DEVICES.index("cuda"))
    ui.architectureComboBox.setCurrentIndex(module.ARCHITECTURES.index("segresnet"))
    assert (p.roiSize, p.device, p.architecture) == (128, "cuda", "segresnet")
    for _visit in range(2):
        widget.exit()
        assert p.connections() == 0
        widget.enter()
        p = widget._parameterNode
    assert (p.roiSize, p.device, p.architecture) == (128, "cuda", "segresnet")
    assert p.connections() == 1

    segmentation = slicer_env.seg.LWISegmentationWidget()
    segmentation.setup()
    segmentation.ui.deviceComboBox.setCurrentIndex(2)
    segmentation.exit()
    segmentation.enter()
    assert segmentation._parameterNode.device == "cpu"


# -- F10, F17: the strategy list ---------------------------------------------------------------


def test_the_strategy_list_is_the_cores_and_opening_the_panel_starts_no_process(slicer_env, monkeypatch):
    def noProcess(*args, **kwargs):
        raise AssertionError("opening the panel started a process")

    monkeypatch.setattr(subprocess, "Popen", noProcess)
    monkeypatch.setattr(subprocess, "run", noProcess)
    widget = _training_panel(slicer_env)
    from LWICommon.vocabulary import names

    box = widget.ui.strategyComboBox
    assert box.items == list(names.STRATEGY_CHOICES)  # nothing hidden, so indexes map 1:1 to choices
    assert widget._parameterNode.strategy == "auto" and box.currentIndex == 0  # the plan's choice by default
    training_settings = importlib.import_module("LWITrainingLib.training_settings")
    args = training_settings.train_args(widget._settings(), "/d", "/o", python="/py")
    assert "--strategy" not in args  # lwi train's default: its plan chooses, and Show plan says which
    for index, strategy in enumerate(names.STRATEGY_CHOICES):
        box.setCurrentIndex(index)
        assert widget._parameterNode.strategy == strategy


# -- F16: folder parameters --------------------------------------------------------------------


def test_folder_buttons_show_the_real_default_folders_not_the_working_directory(slicer_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder that exists: "." would enable "Add folder cases"
    widget = _training_panel(slicer_env)
    p = widget._parameterNode
    home = slicer_env.home
    assert widget.ui.modelsFolderButton.directory == str(home / "LWI" / "models")
    assert widget.ui.dataFolderButton.directory == str(home / "LWI" / "training-cases")
    assert not widget.ui.addFolderCasesButton.enabled  # that folder does not exist yet
    (home / "LWI" / "training-cases").mkdir(parents=True)
    p.modelName = "liver"  # any change updates the buttons
    assert widget.ui.addFolderCasesButton.enabled

    segmentation = slicer_env.seg.LWISegmentationWidget()
    segmentation.setup()
    assert segmentation.ui.trainingFolderButton.directory == str(home / "LWI" / "training-cases")


# -- F10, F11, F12: runs started from the panels ----------------------------------------------


def test_training_panel_preview_and_segment_run_in_the_background_and_report_failures(slicer_env, tmp_path):
    widget = _training_panel(slicer_env)
    logic = widget.logic
    sleeper = _script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n")
    failing = _script(tmp_path, "fail.py", "import sys\nprint('RuntimeError: no GPU', file=sys.stderr)\nsys.exit(3)\n")
    from LWICommon.process import ProcessRunner

    runners = []
    logic.startPreview = lambda case, settings: runners.append(ProcessRunner(sleeper)) or runners[-1]
    widget._selectedCase = lambda: "case"
    started = time.monotonic()
    widget.onPreview()
    assert time.monotonic() - started < 1.0 and widget.previewTask.running
    assert widget.ui.previewButton.text == "Cancel"

    volume = Node("CT")
    slicer_env.scene.nodes.append(volume)  # the volume in the views: the one "Segment current volume" takes
    logic.segmentationLogic = slicer_env.seg.LWISegmentationLogic
    logic.lastModelPath = str(tmp_path / "m.lwi.safetensors")
    logic.startSegmentWithModel = lambda volume, device, onImported: ProcessRunner(failing)
    widget.onSegmentButton()
    drive(lambda: not widget.segmentTask.running)
    assert len(slicer_env.errors) == 1 and "no GPU" in slicer_env.errors[0]  # the failure is shown

    pid = runners[0].proc.pid
    widget.onSceneStartClose(None, None)  # closing the scene stops the preview, without waiting
    drive(lambda: not widget.previewTask.running)
    assert runners[0].cancelled and not _alive(pid)


def test_the_training_preview_says_where_its_auto_settings_came_from(slicer_env, tmp_path):
    """The logic's note on the preview's "auto" network and ROI (the plan's, or stand-ins) goes to the
    log when the preview starts and stays in the preview's status when it has finished."""
    widget = _training_panel(slicer_env)
    logic = widget.logic
    note = "No current plan: this preview stands in network segresnet, ROI 64x64x64 ..."
    from LWICommon.process import ProcessRunner

    def startPreview(case, settings):
        logic.lastPreviewNote = note
        return ProcessRunner(_script(tmp_path, "ok.py", "print('{}')\n"))

    logic.startPreview = startPreview
    widget._selectedCase = lambda: "case"
    widget.onPreview()
    drive(lambda: not widget.previewTask.running)
    assert widget.ui.previewStatusLabel.text == note and note in widget.ui.logTextEdit.lines


def test_show_plan_runs_in_the_background_and_shows_the_plan_before_training(slicer_env, tmp_path, monkeypatch):
    """Show plan runs the logic's plan (``lwi plan``, here a stand-in script printing its event) without
    blocking; the summary appears in the plan area, which says when the settings changed since."""
    from lwi.data.phantoms import write_phantom_dataset

    widget = _training_panel(slicer_env)
    module = slicer_env.trainWidget
    assert not widget.ui.planButton.enabled  # no cases yet
    widget._parameterNode.dataFolder = write_phantom_dataset(tmp_path / "ph", 2, shape=(16, 16, 16))
    widget.onAddFolderCases()
    assert widget.ui.planButton.enabled
    plan = {"event": "plan", "summary": ["Plan for 2 training case(s) on cpu, time budget 20 min:",
                                         "  network: segresnet (init_filters 8)", "  On a CUDA GPU the plan would ..."]}
    asked = []

    def planArgs(settings, data, python=None, probe=True):
        asked.append((settings.time_budget, sorted(os.listdir(data))))
        return _script(tmp_path, "plan.py", f"import json, time\ntime.sleep(0.5)\nprint(json.dumps({plan!r}))\n")

    training_settings = importlib.import_module("LWITrainingLib.training_settings")
    monkeypatch.setattr(training_settings, "plan_args", planArgs)
    widget._parameterNode.timeBudget = "20m"
    started = time.monotonic()
    widget.onPlanButton()
    assert time.monotonic() - started < 2.0 and widget.planTask.running and widget.ui.planButton.text == "Cancel"
    assert asked == [("20m", ["dataset.json", "imagesTr", "labelsTr"])]  # the panel's settings, the cases as Train exports them
    drive(lambda: not widget.planTask.running)
    assert widget.ui.planTextEdit.plainText == "\n".join(plan["summary"])
    assert widget.ui.planStatusLabel.text == module.PLAN_DONE and widget.ui.planButton.text == "Show plan"
    widget._parameterNode.timeBudget = "1h"
    assert widget.ui.planStatusLabel.text == module.PLAN_CHANGED
    widget._parameterNode.timeBudget = "20m"
    assert widget.ui.planStatusLabel.text == module.PLAN_DONE

    failing = (  # as the core fails: the sentence on stderr and as the error event
        "import json, sys\nprint('Error: the dataset has no labels.', file=sys.stderr)\n"
        "print(json.dumps({'event': 'error', 'message': 'the dataset has no labels.'}))\nsys.exit(1)\n"
    )
    monkeypatch.setattr(training_settings, "plan_args", lambda *a, **k: _script(tmp_path, "fail.py", failing))
    widget.onPlanButton()
    drive(lambda: not widget.planTask.running)
    assert "the dataset has no labels" in slicer_env.errors[-1]
    assert widget.ui.planTextEdit.plainText == "" and "no labels" in widget.ui.planStatusLabel.text

    sleeping = _script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n")
    monkeypatch.setattr(training_settings, "plan_args", lambda *a, **k: sleeping)
    widget.onPlanButton()
    runner = widget.logic.planRunner
    widget.onPlanButton()  # Cancel
    drive(lambda: not widget.planTask.running)
    assert runner.cancelled and not _alive(runner.proc.pid) and not os.path.exists(runner.temp_dir)

    widget._onEvent(plan)  # lwi train's own plan, before it trains, shows in the same place
    assert widget.ui.planTextEdit.plainText == "\n".join(plan["summary"])
    assert widget.ui.planStatusLabel.text == module.PLAN_OF_TRAINING


def test_segmentation_panel_cancels_its_runs_when_the_scene_closes(slicer_env, tmp_path):
    widget = slicer_env.seg.LWISegmentationWidget()
    widget.setup()
    from LWICommon.process import ProcessRunner

    runner = ProcessRunner(_script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n"))
    widget.task.start(runner)
    started = time.monotonic()
    widget.onSceneStartClose(None, None)
    assert time.monotonic() - started < 1.0
    drive(lambda: not widget.task.running)
    assert runner.cancelled and not _alive(runner.proc.pid)


def test_a_result_is_not_imported_next_to_a_node_that_left_the_scene(slicer_env):
    check = importlib.import_module("LWISegmentationLib.segmentation_logic")._checkStillInScene
    volume = Node("CT")
    slicer_env.scene.nodes.append(volume)
    check(volume, None)
    slicer_env.scene.RemoveNode(volume)
    with pytest.raises(RuntimeError, match="CT was removed from the scene"):
        check(volume, None)


# (F8, the worker kept across Reload, is tested with the logic in test_segmentation_logic_reload.py.)


# -- F22: Reload reloads the helpers -----------------------------------------------------------


def test_reload_loads_the_helper_package_again_from_its_files(slicer_env, tmp_path, monkeypatch):
    package = tmp_path / "LWIHelperCopy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("VALUE = 1\n")
    (package / "b.py").write_text("from LWIHelperCopy.a import VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import LWIHelperCopy.b

    assert LWIHelperCopy.b.VALUE == 1
    from LWICommon.gui import reloadPackage

    (package / "a.py").write_text("VALUE = 2\n_kept = globals().get('_kept', [])\n")
    sys.modules["LWIHelperCopy.a"]._kept = state = ["worker"]
    assert reloadPackage("LWIHelperCopy") == ["LWIHelperCopy", "LWIHelperCopy.a", "LWIHelperCopy.b"]
    assert sys.modules["LWIHelperCopy.b"].VALUE == 2  # b sees the new a
    assert sys.modules["LWIHelperCopy.a"]._kept is state  # module state kept, as Slicer's Reload needs
    for name in ("LWIHelperCopy", "LWIHelperCopy.a", "LWIHelperCopy.b"):
        sys.modules.pop(name, None)

    reloaded = []
    monkeypatch.setattr(sys.modules["LWICommon.gui"], "reloadPackage", reloaded.append)
    for module in (slicer_env.seg, slicer_env.train):
        widget = getattr(module, module.__name__ + "Widget")()
        widget.onReload()
        assert widget.reloaded == 1  # and then Slicer's own Reload of the module file
    assert reloaded == ["LWICommon", "LWISegmentationLib", "LWICommon", "LWITrainingLib"]


# -- the self-tests in Testing/Python -------------------------------------------------------------


@pytest.mark.parametrize("name", ["LWISegmentation", "LWITraining"])
def test_reload_and_test_finds_the_self_test_in_testing_python_only_when_asked(slicer_env, name, monkeypatch):
    """Slicer's ``ScriptedLoadableModule.runTest`` (Reload and Test) takes the test class as
    ``getattr(importlib.import_module(self.__module__), moduleName + "Test")``: the module file must
    answer that with the class in ``Testing/Python/``, and must not read it while loading."""
    testName = name + "Test"
    monkeypatch.delitem(sys.modules, testName, raising=False)
    module = {"LWISegmentation": slicer_env.seg, "LWITraining": slicer_env.train}[name]
    assert testName not in vars(module) and testName not in sys.modules  # nothing read at load time

    testClass = getattr(importlib.import_module(module.__name__), testName)  # what runTest does
    assert issubclass(testClass, sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleTest)
    assert Path(sys.modules[testClass.__module__].__file__) == MODULE_DIRS[name] / "Testing" / "Python" / (
        testName + ".py"
    )
    assert unittest.TestLoader().getTestCaseNames(testClass)  # CTest runs its test_ methods
    with pytest.raises(AttributeError):
        module.NoSuchAttribute  # noqa: B018 (other lookups still fail as on any module)
    sys.modules.pop(testName, None)


def test_the_self_test_is_read_again_from_its_file_on_each_lookup(tmp_path, monkeypatch):
    """Reload and Test re-reads the module file; the test class must be the edited one as well."""
    from LWICommon.selftest import loadSelfTest

    moduleFile = tmp_path / "MyModule.py"
    moduleFile.write_text("")
    folder = tmp_path / "Testing" / "Python"
    folder.mkdir(parents=True)
    monkeypatch.delitem(sys.modules, "MyModuleTest", raising=False)
    (folder / "MyModuleTest.py").write_text("class MyModuleTest:\n    VERSION = 1\n")
    assert loadSelfTest(str(moduleFile), "MyModuleTest").VERSION == 1
    (folder / "MyModuleTest.py").write_text("class MyModuleTest:\n    VERSION = 2\n")
    assert loadSelfTest(str(moduleFile), "MyModuleTest").VERSION == 2
    (folder / "MyModuleTest.py").unlink()  # an installed extension ships no tests
    with pytest.raises(AttributeError, match="no self-test"):
        loadSelfTest(str(moduleFile), "MyModuleTest")


# -- F24: the staging folder -------------------------------------------------------------------


def test_staged_scene_cases_are_deleted_when_cleared_and_when_the_module_closes(slicer_env):
    widget = _training_panel(slicer_env)
    logic = widget.logic
    staging = Path(logic._staging())
    (staging / "000-ct.nrrd").write_bytes(b"x" * 100)
    logic.clearCases()
    assert not staging.exists()
    staging = Path(logic._staging())
    widget.cleanup()
    assert not staging.exists()


# -- F25: the default input volume -------------------------------------------------------------


def test_default_input_is_never_a_label_map(slicer_env):
    labels = Node("labels", ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"))
    ct = Node("CT")
    slicer_env.scene.nodes += [labels, ct]
    logic = slicer_env.seg.LWISegmentationLogic()
    assert logic.shownVolume() is ct
    slicer_env.scene.nodes.remove(ct)
    assert logic.shownVolume() is None


# -- G3-G6, G8 of the 2026-12-06 review: what the panels add to the logic ---------------------------


def test_roi_auto_reads_auto_and_an_unset_model_path_shows_empty(slicer_env):
    """G4: the ROI box's first choice (0) reads "auto (plan)", also after leaving and entering the
    panel (the connector refills the box); G5: an unset model path shows empty, not "."."""
    widget = _training_panel(slicer_env)
    box = widget.ui.roiSizeComboBox
    assert box.items[0] == "auto (plan)" and box.items[1:] == ["32", "64", "96", "128", "160"]
    widget.exit()
    widget.enter()
    assert box.items[0] == "auto (plan)" and widget._parameterNode.roiSize == 0

    segmentation = slicer_env.seg.LWISegmentationWidget()
    segmentation.setup()
    assert segmentation.ui.modelPathLineEdit.currentPath == ""


def test_train_asks_before_replacing_and_clear_stops_a_running_plan(slicer_env, tmp_path):
    """G3: Train over an existing model asks first, and Cancel trains nothing; G8: Clear stops a
    plan reading the cases instead of pulling its files away."""
    widget = _training_panel(slicer_env)
    logic = widget.logic
    logic.setupDependencies = lambda askConfirmation=True: True
    logic.trainConflict = lambda name, folder=None: f"a model '{name}' exists"
    calls = []
    logic.train = lambda *args, **kwargs: calls.append(kwargs["replace"]) or None
    slicer_env.answers[:] = [False]
    widget.onTrainButton()
    assert calls == [] and "a model 'model' exists" in slicer_env.confirmations[0]

    from LWICommon.process import ProcessRunner

    runner = ProcessRunner(_script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n"))
    widget.planTask.start(runner)
    widget.onClearCases()
    assert runner.cancelled and not widget.planTask.running and not _alive(runner.proc.pid)


def test_the_improve_button_names_the_parent_and_the_cases_added_since(slicer_env, tmp_path, make_bundle):
    """Issue 24: next to Train, "Improve <model> with the new cases" once a finished model and cases are
    there; the line under it names the parent and the cases it has not trained on."""
    from lwi.data.phantoms import PHANTOM_LABELS, write_phantom_dataset

    widget = _training_panel(slicer_env)
    logic = widget.logic
    assert not widget.ui.improveButton.enabled  # no model, no cases
    parent = make_bundle(tmp_path / "organs.lwi.safetensors", PHANTOM_LABELS,
                         provenance={"training_cases": ["phantom_000", "phantom_001"], "held_out": []})
    logic.segmentationLogic = slicer_env.seg.LWISegmentationLogic
    logic.lastModelPath = str(parent)
    logic.addCases(logic.collectCasesFromFolder(str(write_phantom_dataset(tmp_path / "cases", 3, shape=(16, 16, 8)))))
    widget._updateButtons()
    assert widget.ui.improveButton.enabled
    assert widget.ui.improveButton.text == "Improve organs with the new cases"
    assert widget.ui.improveInfoLabel.text == (
        "Parent model: organs (trained on 2 case(s)); cases added since: phantom_002."
    )
