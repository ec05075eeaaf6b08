"""Every Slicer API the modules call is listed in docs/slicer-api.md, with the Slicer source file
that defines it and the first Slicer version that has it (checked against Slicer's source). The
modules target Slicer 5.6 and newer: an API that came later must not be used unguarded.

The scan covers the module files, the LWICommon helpers and the self-tests (``Testing/Python/``): dotted uses of ``slicer``, ``qt``,
``ctk``, ``vtk`` and ``PyTorchUtils``; names imported from ``slicer``; C++ (MRML, VTK) methods,
which are CamelCase; methods inherited from Slicer's base classes or the parameter node wrapper
(called on ``self``, ``super()``, ``self.logic``, ``self._parameterNode``); ``self.parent``
properties; and the widget classes, properties, signals and slots of the .ui files.
"""

from __future__ import annotations

import ast
import re
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Set, Tuple

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "slicer-api.md"
MINIMUM_SLICER = (5, 6)
ROOTS = {"slicer", "qt", "ctk", "vtk", "PyTorchUtils"}
SOURCES = sorted(
    [ROOT / "LWISegmentation" / "LWISegmentation.py", ROOT / "LWITraining" / "LWITraining.py"]
    + list((ROOT / "LWICommon").glob("*.py"))
    + list(ROOT.glob("LWI*/LWI*Lib/*.py"))
    + list(ROOT.glob("LWI*/Testing/Python/*.py"))  # the self-tests, run in a real Slicer
)
UI_FILES = sorted(ROOT.glob("LWI*/Resources/UI/*.ui"))
# Properties a .ui file sets that come from plain Qt (QWidget, QLabel, ...), not from Slicer or CTK.
QT_PROPERTIES = {
    "geometry",
    "text",
    "toolTip",
    "enabled",
    "value",
    "wordWrap",
    "readOnly",
    "maximumBlockCount",
}


def _chain(node: ast.AST):
    """``slicer.util.loadUI`` for the Attribute/Name chain of ``node``, or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _defined_names() -> Set[str]:
    """Names that are ours or plain Python: functions, methods, classes and ``self.x = ...``
    attributes defined in the scanned files, and unittest.TestCase methods (assertEqual, ...)."""
    names = set(dir(unittest.TestCase))
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and _chain(node.value) == "self"
            ):
                names.add(node.attr)
    return names


def used_python_apis() -> Dict[str, Set[str]]:
    """API name -> files using it. Method names without a known class are reported bare."""
    ours = _defined_names()
    found: Dict[str, Set[str]] = {}

    def add(name: str, path: Path) -> None:
        found.setdefault(name, set()).add(path.name)

    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        python_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ROOTS:
                        if alias.name not in ("slicer", "qt", "ctk", "vtk"):  # the namespaces themselves
                            add(alias.name, path)
                    else:
                        python_modules.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
                for alias in node.names:
                    add(f"{node.module}.{alias.name}", path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = _chain(node)
                if chain and chain.split(".")[0] in ROOTS:
                    add(chain, path)  # prefixes (slicer.util of slicer.util.loadUI) are dropped later
                if chain and chain.startswith("self.parent.") and chain.count(".") == 2:
                    add("parent." + node.attr, path)  # the module's qSlicerScriptedLoadableModule(Widget)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name, receiver = node.func.attr, node.func.value
                receiver_chain = _chain(receiver)
                if name[:1].isupper():
                    # C++ (MRML/VTK) methods, unless called on a plain Python module (subprocess.Popen)
                    # or one of our own classes (``cases.CaseSource(...)``).
                    if name not in ours and not (isinstance(receiver, ast.Name) and receiver.id in python_modules):
                        if not (receiver_chain and receiver_chain.split(".")[0] in ROOTS):
                            add(name, path)
                elif (
                    isinstance(receiver, ast.Call)
                    and isinstance(receiver.func, ast.Name)
                    and receiver.func.id == "super"
                ):
                    add(name, path)  # a Slicer base-class method, even where we override it
                elif name not in ours and receiver_chain in ("self", "self.logic", "self._parameterNode"):
                    add(name, path)
    return found


def _fix_chains(found: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """Keep only maximal dotted chains (``slicer.util.loadUI``, not also ``slicer.util``)."""
    names = set(found)
    return {
        n: f
        for n, f in found.items()
        if "." not in n or not any(o != n and o.startswith(n + ".") for o in names)
    }


def used_ui_apis() -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for path in UI_FILES:
        root = ET.parse(path).getroot()
        classes = {}
        for widget in root.iter("widget"):
            cls = widget.get("class")
            classes[widget.get("name")] = cls
            if cls.startswith(("qMRML", "ctk", "qSlicer")):
                found.setdefault(cls, set()).add(path.name)
                for prop in widget.findall("property"):
                    pname = prop.get("name")
                    if pname not in QT_PROPERTIES and pname != "SlicerParameterName":
                        found.setdefault(f"{cls}.{pname}", set()).add(path.name)
        for connection in root.iter("connection"):
            sender, receiver = connection.findtext("sender"), connection.findtext("receiver")
            signal = connection.findtext("signal").split("(")[0]
            slot = connection.findtext("slot").split("(")[0]
            found.setdefault(f"{classes[sender]}.{signal}", set()).add(path.name)
            found.setdefault(f"{classes[receiver]}.{slot}", set()).add(path.name)
    return found


def listed_apis() -> Dict[str, Tuple[str, str]]:
    """API -> (defining source file, first Slicer version), from the doc's tables."""
    listed = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`"):
            for api in re.findall(r"`([^`]+)`", cells[0]):
                listed[api] = (cells[1], cells[2])
    return listed


def _is_listed(name: str, listed: Dict[str, Tuple[str, str]]) -> bool:
    if name in listed:
        return True
    # A bare method name (receiver class unknown to the scan) matches `Class.Method` rows.
    return "." not in name and any(api.rsplit(".", 1)[-1] == name for api in listed)


def test_every_slicer_api_the_modules_use_is_listed():
    used = _fix_chains(used_python_apis())
    used.update(used_ui_apis())
    listed = listed_apis()
    missing = sorted(
        f"{name} (in {', '.join(sorted(files))})"
        for name, files in used.items()
        if not _is_listed(name, listed)
    )
    assert not missing, (
        "add these to docs/slicer-api.md after checking them in Slicer's source:\n" + "\n".join(missing)
    )


def test_the_scan_finds_what_the_modules_obviously_use():
    """Guards against a scanner that silently finds nothing."""
    used = _fix_chains(used_python_apis())
    used.update(used_ui_apis())
    for expected in (
        "slicer.util.loadUI",
        "slicer.util.childWidgetVariables",
        "ImportLabelmapToSegmentationNode",
        "disconnectGui",
        "resourcePath",
        "qMRMLNodeComboBox.nodeTypes",
        "slicer.mrmlScene.StartCloseEvent",
    ):
        assert expected in used, expected


def test_every_listed_api_names_its_source_and_a_supported_version():
    listed = listed_apis()
    assert len(listed) > 20
    for api, (source, version) in listed.items():
        assert source and "`" in source or "/" in source, f"{api}: no defining source file"
        match = re.match(r"^(\d+)\.(\d+)", version.replace("≤", "").replace("<=", "").strip())
        assert match, f"{api}: first version {version!r} is not a version"
        first = (int(match.group(1)), int(match.group(2)))
        assert first <= MINIMUM_SLICER or "guarded" in version, (
            f"{api} needs Slicer {version}, newer than the supported 5.6: guard it with a version check"
        )
