"""The three pieces of Slicer's Python layer (``Base/Python/slicer/``) that the LWI module logic
imports and that the slicer-core wheel lacks, written for the harness: ``slicer.ScriptedLoadableModule``
(the logic's parameter node: one ``vtkMRMLScriptedModuleNode`` per module, a singleton in the real
scene, as ``ScriptedLoadableModuleLogic.getParameterNode`` makes it), ``slicer.parameterNodeWrapper``
(typed fields kept in that real node: strings as parameters, nodes as node references, ``Choice`` and
``WithinRange`` refusing other values) and ``slicer.i18n``. Not a test module.

What these do not model (the GUI binding of ``connectGui``, Slicer's serializers' exact strings)
is checked in a real Slicer only (docs/slicer-modules.md).
"""

from __future__ import annotations

import pathlib
import sys
import types
import typing
import unittest

import slicer

_DEFAULTS = {str: "", int: 0, float: 0.0, bool: False, pathlib.Path: pathlib.Path()}


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _isNodeType(base) -> bool:
    return isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode)


def _read(base, text: str):
    if base is bool:
        return text == "True"
    return base(text)


def parameterNodeWrapper(cls):
    """The fields of ``cls`` as properties stored in the wrapped ``vtkMRMLScriptedModuleNode``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        base, rules = (hint.__origin__, hint.__metadata__) if hasattr(hint, "__metadata__") else (hint, ())
        fields[name] = (base, rules, cls.__dict__.get(name, _DEFAULTS.get(base)))

    class Wrapper:
        allParameters = fields

        def __init__(self, node) -> None:
            self.parameterNode = node
            for name, (base, _rules, default) in fields.items():
                if not _isNodeType(base) and not node.GetParameter(name):
                    node.SetParameter(name, str(default))

        def getValue(self, name: str):
            base = fields[name][0]
            if _isNodeType(base):
                return self.parameterNode.GetNodeReference(name)
            return _read(base, self.parameterNode.GetParameter(name))

        def setValue(self, name: str, value) -> None:
            base, rules, _default = fields[name]
            for rule in rules:
                if isinstance(rule, Choice) and value not in rule.choices:
                    raise ValueError(f"{name}: {value!r} is not one of {rule.choices}")
                if isinstance(rule, WithinRange) and not rule.minimum <= value <= rule.maximum:
                    raise ValueError(f"{name}: {value!r} is not within [{rule.minimum}, {rule.maximum}]")
            if _isNodeType(base):
                self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            else:
                self.parameterNode.SetParameter(name, str(value))

        def AddObserver(self, event, callback):
            return self.parameterNode.AddObserver(event, callback)

        def RemoveObserver(self, tag) -> None:
            self.parameterNode.RemoveObserver(tag)

    for name in fields:
        setattr(Wrapper, name, property(lambda self, n=name: self.getValue(n), lambda self, v, n=name: self.setValue(n, v)))
    Wrapper.__name__ = Wrapper.__qualname__ = cls.__name__
    return Wrapper


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleLogic:
    """The module's parameter node: the scene's singleton node tagged with the module's name."""

    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__[: -len("Logic")] if type(self).__name__.endswith("Logic") else ""

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent


def install(monkeypatch) -> None:
    """Make ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and ``slicer.i18n``
    importable for one test (``monkeypatch`` undoes it)."""
    modules = {
        "ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleTest=unittest.TestCase,
        ),
        "parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=parameterNodeWrapper, Choice=Choice, WithinRange=WithinRange
        ),
        "i18n": types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, f"slicer.{name}", module)
        monkeypatch.setattr(slicer, name, module, raising=False)
