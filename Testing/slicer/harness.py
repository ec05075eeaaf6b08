"""A Slicer application without Qt, for tests on real MRML nodes (slicer-core, Python >= 3.10).

Slicer's own start-up (``qSlicerCoreApplication::setMRMLScene`` and each loadable module's
``setup()``) makes one ``vtkMRMLScene``, one ``vtkSlicerApplicationLogic`` holding the default colour
nodes, and one logic per module, registered on the application logic under the module's name. Python
code then reaches them as ``slicer.mrmlScene``, ``slicer.app`` and ``slicer.modules.<name>.logic()``.
:class:`SlicerCoreApp` builds the same objects from the ``slicer-core`` wheel and installs the same
three names, so that the LWI modules' Qt-free logic (``LWICommon``) and ``slicer.util`` run unchanged.
What needs Qt (``slicer.util.loadVolume`` through the IO manager, layouts, dialogs) is not offered:
calling it fails loudly instead of doing something else.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import types
from typing import Dict, Optional

import slicer
import vtk

#: Slicer's terminology files are not in slicer-core; trame-slicer (installed with --no-deps by
#: .ci/run) ships the same JSON files as Slicer's Modules/Loadable/Terminologies/Resources.
TERMINOLOGY_PACKAGE = "trame_slicer"


def terminology_folder() -> Optional[str]:
    """The folder with Slicer's terminology JSON files, or None when it is not installed."""
    spec = importlib.util.find_spec(TERMINOLOGY_PACKAGE)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "resources", "terminologies")
    return folder if os.path.isdir(folder) else None


class _Module:
    """What ``slicer.modules.<name>`` and ``moduleManager().module(Name)`` give: ``logic()``."""

    def __init__(self, name: str, logic) -> None:
        self.name = name
        self._logic = logic

    def logic(self):
        return self._logic


class _ModuleManager:
    def __init__(self, modules: Dict[str, _Module]) -> None:
        self._modules = modules

    def module(self, name: str):
        return self._modules.get(name)


class _Environment:
    """``QProcessEnvironment`` as ``slicer.util.startupEnvironment`` reads it."""

    def __init__(self, values: Dict[str, str]) -> None:
        self._values = dict(values)

    def keys(self):
        return list(self._values)

    def value(self, key: str) -> str:
        return self._values.get(key, "")


class _App:
    """The attributes of ``slicer.app`` the LWI logic and ``slicer.util`` use without Qt."""

    def __init__(self, applicationLogic, modules: Dict[str, _Module], temporaryPath: str) -> None:
        self._applicationLogic = applicationLogic
        self._moduleManager = _ModuleManager(modules)
        self.temporaryPath = temporaryPath
        self.majorVersion, self.minorVersion = 5, 13  # slicer-core 5.13
        self.applicationName = "Slicer"

    def applicationLogic(self):
        return self._applicationLogic

    def moduleManager(self):
        return self._moduleManager

    def startupEnvironment(self):
        return _Environment(os.environ)

    def layoutManager(self):  # no views without Qt (slicer.util checks for None)
        return None

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self) -> None:  # no event loop: nothing is queued
        pass


# The loadable modules whose logic the LWI modules call, with the class slicer-core has for each.
# Colors uses vtkMRMLColorLogic (what the application logic holds): vtkSlicerColorLogic also wants
# Slicer's home folder for its colour files, which slicer-core does not have.
MODULE_LOGICS = {
    "Volumes": "vtkSlicerVolumesLogic",
    "Terminologies": "vtkSlicerTerminologiesModuleLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Plots": "vtkSlicerPlotsLogic",
    "Tables": "vtkSlicerTablesLogic",
    "VolumeRendering": "vtkSlicerVolumeRenderingLogic",
}


class SlicerCoreApp:
    """One scene with the application logic and the module logics, installed as ``slicer.mrmlScene``,
    ``slicer.app`` and ``slicer.modules`` until :meth:`close`.

    ``python_modules`` adds scripted modules (name -> their logic object) reachable through
    ``slicer.util.getModuleLogic``, as Slicer does for LWISegmentation and LWITraining.
    """

    def __init__(self, temporaryPath: Optional[str] = None) -> None:
        self.scene = slicer.vtkMRMLScene()
        # As qSlicerCoreApplication::setMRMLScene: the application logic, its colour nodes, one crosshair.
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.applicationLogic = slicer.vtkSlicerApplicationLogic()
        self.applicationLogic.SetMRMLScene(self.scene)
        self.applicationLogic.GetColorLogic().SetMRMLScene(self.scene)
        self.applicationLogic.GetColorLogic().AddDefaultColorNodes()
        self.applicationLogic.SetSliceLogics(vtk.vtkCollection())
        self.applicationLogic.SetViewLogics(vtk.vtkCollection())
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        self.applicationLogic.SetModuleLogic("Colors", self.applicationLogic.GetColorLogic())

        self.logics = {"Colors": self.applicationLogic.GetColorLogic()}
        for name, className in MODULE_LOGICS.items():
            logic = getattr(slicer, className)()
            if name == "Terminologies" and terminology_folder():
                logic.SetModuleShareDirectory(terminology_folder())  # loads Slicer's default contexts
            logic.SetMRMLApplicationLogic(self.applicationLogic)
            logic.SetMRMLScene(self.scene)
            self.applicationLogic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        self.modules = {name: _Module(name, logic) for name, logic in self.logics.items()}

        self._ownTemp = temporaryPath is None
        self.temporaryPath = temporaryPath or tempfile.mkdtemp(prefix="slicer-core-app-")
        self.app = _App(self.applicationLogic, self.modules, self.temporaryPath)
        self._saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "app", "modules")}
        self._install()

    def _install(self) -> None:
        slicer.mrmlScene = self.scene
        slicer.app = self.app
        # slicer.modules.<lowercase name>, as Slicer's Python start-up fills it.
        slicer.modules = types.SimpleNamespace(**{n.lower(): m for n, m in self.modules.items()})
        if not hasattr(slicer, "qSlicerScriptedLoadableModule"):
            # slicer.util.getModuleLogic tells scripted from C++ modules by this class; ours all have logic().
            slicer.qSlicerScriptedLoadableModule = type("qSlicerScriptedLoadableModule", (), {})

    def addPythonModule(self, name: str, logic) -> None:
        """Make ``slicer.util.getModuleLogic(name)`` return ``logic``."""
        self.modules[name] = _Module(name, logic)
        setattr(slicer.modules, name.lower(), self.modules[name])

    def nodesByClass(self, className: str = "vtkMRMLNode"):
        """Every node of ``className`` in the scene."""
        collection = self.scene.GetNodesByClass(className)
        return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]

    def close(self) -> None:
        """Clear the scene and give ``slicer`` its previous attributes back."""
        self.scene.Clear(True)
        for name, value in self._saved.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)
        if self._ownTemp:
            import shutil

            shutil.rmtree(self.temporaryPath, ignore_errors=True)
