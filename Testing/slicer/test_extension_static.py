"""Static checks of the Slicer extension: CMake lists, extension descriptions, .ui files and the
modules' parameter nodes agree with each other, so the Extensions Manager package is complete and
the modules load. No Slicer needed: files are parsed (CMake text, XML, Python AST)."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["LWISegmentation", "LWITraining"]
ICON_SUFFIXES = {".png", ".svg", ".jpg", ".jpeg"}


def _cmake_lists(text: str, module_name: str) -> Dict[str, List[str]]:
    """``set(VAR item ...)`` lists of a module CMakeLists.txt, with ``${MODULE_NAME}`` expanded."""
    text = re.sub(r"#[^\n]*", "", text).replace("${MODULE_NAME}", module_name)
    return {m.group(1): m.group(2).split() for m in re.finditer(r"set\(\s*(\w+)\s+([^)]*)\)", text)}


def _module_files(module: str):
    cmake = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    lists = _cmake_lists(cmake, module)
    return cmake, lists.get("MODULE_PYTHON_SCRIPTS", []), lists.get("MODULE_PYTHON_RESOURCES", [])


@pytest.mark.parametrize("module", MODULES)
def test_every_installed_file_is_listed_in_cmake(module):
    cmake, scripts, resources = _module_files(module)
    folder = ROOT / module
    on_disk_py = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts
    }
    tests = {p for p in on_disk_py if p.startswith("Testing/")}
    assert on_disk_py - tests == set(scripts), "every installed .py must be in MODULE_PYTHON_SCRIPTS"
    assert tests == {f"Testing/Python/{t}" for t in _test_scripts(module)}, (
        "every .py under Testing/ must be in Testing/Python's MODULE_PYTHON_TEST_SCRIPTS"
    )
    on_disk_resources = {
        p.relative_to(folder).as_posix()
        for p in (folder / "Resources").rglob("*")
        if p.suffix.lower() in ICON_SUFFIXES | {".ui"}
    }
    assert on_disk_resources == set(resources), "every .ui and icon must be in MODULE_PYTHON_RESOURCES"
    assert f"Resources/UI/{module}.ui" in resources and f"Resources/Icons/{module}.png" in resources
    assert re.search(r"slicerMacroBuildScriptedModule\((?s:.)*WITH_GENERIC_TESTS", cmake)


def _test_scripts(module: str) -> List[str]:
    text = (ROOT / module / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    return _cmake_lists(text, module).get("MODULE_PYTHON_TEST_SCRIPTS", [])


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_are_registered_from_testing_python_as_the_template_does(module):
    """As Slicer's scripted-module template: ``add_subdirectory(Testing)`` when BUILD_TESTING, then
    ``Testing/Python/CMakeLists.txt`` registers each test script with ``slicer_add_python_unittest``
    (CTest runs ``slicer.testing.runUnitTest`` on that folder, which loads the TestCase classes of
    the script). The module file itself holds no TestCase, so it is not registered."""
    cmake = re.sub(r"#[^\n]*", "", (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert re.search(r"if\(BUILD_TESTING\)\s*add_subdirectory\(Testing\)\s*endif\(\)", cmake)
    assert "slicer_add_python_unittest" not in cmake
    testing = re.sub(r"#[^\n]*", "", (ROOT / module / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert re.findall(r"add_subdirectory\((\w+)\)", testing) == ["Python"]
    python = re.sub(r"#[^\n]*", "", (ROOT / module / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert _test_scripts(module) == [f"{module}Test.py"]
    assert re.search(
        r"foreach\(script \$\{MODULE_PYTHON_TEST_SCRIPTS\}\)\s*slicer_add_python_unittest\(SCRIPT \$\{script\}\)",
        python,
    )
    # Reload and Test finds the self-test next to the module file in the build tree as well.
    assert "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Testing/Python/${script} COPYONLY" in python


def test_shared_helper_package_is_its_own_cmake_folder_installed_with_subdir():
    """LWICommon is a sibling of the modules with its own CMake list (WITH_SUBDIR, as Slicer's
    DICOMLib): every .py of it listed there, none in a module's list, and added before the modules."""
    cmake = (ROOT / "LWICommon" / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = _cmake_lists(cmake, "LWICommon")["MODULE_PYTHON_SCRIPTS"]
    on_disk = {p.name for p in (ROOT / "LWICommon").glob("*.py")}
    assert set(scripts) == on_disk
    assert re.search(r"slicerMacroBuildScriptedModule\((?s:.)*WITH_SUBDIR", cmake)
    for module in MODULES:
        assert not any(s.startswith("LWICommon/") for s in _module_files(module)[1])
    order = re.findall(r"add_subdirectory\((\w+)\)", re.sub(r"#[^\n]*", "", _top_cmake()))
    assert order[:3] == ["LWICommon", "LWISegmentation", "LWITraining"]


def _top_cmake() -> str:
    return (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def _cmake_var(name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', _top_cmake())
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


def _s4ext() -> Dict[str, str]:
    fields = {}
    for line in (ROOT / "LWI.s4ext").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_cmake_s4ext_and_catalog_entry_agree():
    project = re.search(r"^project\((\w+)\)", _top_cmake(), re.M).group(1)
    s4ext = _s4ext()
    catalog = json.loads((ROOT / "LWI.json").read_text(encoding="utf-8"))
    assert project == "LWI" == Path("LWI.s4ext").stem == Path("LWI.json").stem
    assert _cmake_var("EXTENSION_CATEGORY") == s4ext["category"] == catalog["category"] == "Segmentation"
    depends = _cmake_var("EXTENSION_DEPENDS").split()
    assert depends == s4ext["depends"].split() == catalog["build_dependencies"] == ["PyTorch"]
    assert _cmake_var("EXTENSION_HOMEPAGE") == s4ext["homepage"]
    assert _cmake_var("EXTENSION_DESCRIPTION") == s4ext["description"]
    assert _cmake_var("EXTENSION_ICONURL") == s4ext["iconurl"]
    assert _cmake_var("EXTENSION_SCREENSHOTURLS") == s4ext["screenshoturls"]
    assert _cmake_var("EXTENSION_CONTRIBUTORS") == s4ext["contributors"]
    assert s4ext["scmurl"] == catalog["scm_url"] and s4ext["scmrevision"] == catalog["scm_revision"]
    assert catalog["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert set(catalog) <= {
        "$schema",
        "build_dependencies",
        "build_subdirectory",
        "category",
        "enabled",
        "scm_revision",
        "scm_type",
        "scm_url",
        "tier",
    }
    # The icon URL points at the extension icon in this repository.
    assert (ROOT / _cmake_var("EXTENSION_ICONURL").split("/main/", 1)[1]).is_file()


def test_screenshot_urls_point_at_pngs_in_this_repository():
    """The Extensions Index validator downloads every screenshot URL: each must be a raw URL of the
    homepage's repository whose file exists here and is a PNG."""
    raw = _cmake_var("EXTENSION_HOMEPAGE").replace("https://github.com/", "https://raw.githubusercontent.com/")
    urls = _cmake_var("EXTENSION_SCREENSHOTURLS").split()
    assert urls
    for url in urls:
        assert url.startswith(raw + "/main/"), url
        path = ROOT / url[len(raw + "/main/") :]
        assert path.is_file(), f"{url}: no {path.relative_to(ROOT)} in the repository"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def test_top_level_cmake_adds_every_module_and_installs_the_core():
    cmake = _top_cmake()
    assert re.findall(r"add_subdirectory\((\w+)\)", cmake) == ["LWICommon", *MODULES]
    assert "find_package(Slicer REQUIRED)" in cmake and "include(${Slicer_EXTENSION_CPACK})" in cmake
    assert "${CMAKE_CURRENT_SOURCE_DIR}/lwi/*.py" in cmake
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/" in cmake
    assert "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/" in cmake
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")


# -- module files, .ui files and parameter nodes ---------------------------------------------


#: The Lib files that hold what Slicer looks up in a module file (which imports them from there).
LIB_FILES = ("parameters.py", "logic.py", "widget.py")


def _sources(module: str) -> List[Path]:
    return [ROOT / module / f"{module}.py"] + [ROOT / module / f"{module}Lib" / f for f in LIB_FILES]


def _tree(module: str) -> ast.Module:
    """The module file and its Lib's parameter node, logic and widget files, as one tree."""
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in _sources(module)]
    return ast.Module(body=[stmt for tree in trees for stmt in tree.body], type_ignores=[])


def _test_tree(module: str) -> ast.Module:
    return ast.parse((ROOT / module / "Testing" / "Python" / f"{module}Test.py").read_text(encoding="utf-8"))


def _ui_widgets(module: str) -> Dict[str, ET.Element]:
    root = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui").getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _parameter_name(widget: ET.Element):
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.find("string").text
    return None


def _parameter_node_fields(module: str) -> Dict[str, ast.expr]:
    for node in _tree(module).body:
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                s.target.id: s.annotation
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def _widget_classes_for(annotation: ast.expr) -> Set[str]:
    """Widget classes that Slicer's parameterNodeWrapper GUI connectors accept for a field type
    (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py)."""
    text = ast.unparse(annotation)
    base = text.split("[", 1)[1].split(",", 1)[0].strip() if text.startswith("Annotated[") else text
    if base.startswith("vtkMRML"):
        return {"qMRMLNodeComboBox"}
    if base in ("pathlib.Path", "Path"):
        return {"ctkPathLineEdit", "ctkDirectoryButton"}
    if base == "bool":
        return {"QCheckBox", "QPushButton"}
    if base == "int":
        return {"QSpinBox", "QSlider"} | ({"QComboBox"} if "Choice(" in text else set())
    if base == "float":
        return {"QDoubleSpinBox", "ctkSliderWidget"} | ({"QComboBox"} if "Choice(" in text else set())
    if base == "str":
        return {"QLineEdit", "QTextEdit"} | ({"QComboBox"} if "Choice(" in text else set())
    return set()


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_attribute_the_module_uses_exists_in_its_ui_file(module):
    source = "\n".join(p.read_text(encoding="utf-8") for p in _sources(module))
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    widgets = _ui_widgets(module)
    assert used, "the module should use its .ui file"
    assert used <= set(widgets), f"missing in {module}.ui: {sorted(used - set(widgets))}"
    assert f'self.resourcePath("UI/{module}.ui")' in source and "slicer.util.loadUI(" in source


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_node_field_is_bound_to_a_matching_widget(module):
    fields = _parameter_node_fields(module)
    bound = {}
    for widget in _ui_widgets(module).values():
        parameter = _parameter_name(widget)
        if parameter is not None:
            assert parameter not in bound, f"two widgets bound to {parameter}"
            bound[parameter] = widget.get("class")
    assert set(bound) == set(fields), "each field needs exactly one widget, and each bound widget a field"
    for name, annotation in fields.items():
        allowed = _widget_classes_for(annotation)
        assert bound[name] in allowed, f"{name}: {ast.unparse(annotation)} cannot be shown by a {bound[name]}"


@pytest.mark.parametrize("module", MODULES)
def test_module_classes_and_metadata(module):
    tree = _tree(module)
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    expected = {
        module: "ScriptedLoadableModule",
        f"{module}Widget": "ScriptedLoadableModuleWidget",
        f"{module}Logic": "ScriptedLoadableModuleLogic",
    }
    for name, base in expected.items():
        assert name in classes, f"{module}.py lacks class {name}"
        assert base in [ast.unparse(b) for b in classes[name].bases]
    assert f"{module}Test" not in classes, "the self-test lives in Testing/Python/"
    test_class = _class_in(_test_tree(module), f"{module}Test")
    assert "ScriptedLoadableModuleTest" in [ast.unparse(b) for b in test_class.bases]
    methods = [f.name for f in test_class.body if isinstance(f, ast.FunctionDef)]
    tests = [name for name in methods if name.startswith("test_")]
    # Reload and Test calls runTest, which must run every test_ method (CTest runs each of them).
    run_test = next(f for f in test_class.body if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    called = {name[len("self.") :] for _node, name in _calls(run_test) if name.startswith("self.test_")}
    assert tests and set(tests) == called

    source = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    for name in expected:  # Slicer finds them in the module file, by the module's name
        assert re.search(rf"^from {module}Lib\.\w+ import {name}$", source, re.M) or f"class {name}(" in source
    namespace: Dict[str, object] = {}
    for stmt in tree.body:  # README_URL / PAPER_CITATION constants used in the metadata
        if (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id.isupper()
        ):
            try:
                namespace[stmt.targets[0].id] = ast.literal_eval(stmt.value)
            except ValueError:  # a computed constant (e.g. names from LWICommon.vocabulary)
                continue
    for field in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{field} =" in source, f"{module} does not set {field}"
    assert "<a href=" in source and namespace["README_URL"].startswith("https://")
    assert (
        "Learnable Weight Initialization" in namespace["PAPER_CITATION"]
        and "Kunhimon" in namespace["PAPER_CITATION"]
    )
    assert (ROOT / module / "Resources" / "Icons" / f"{module}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- conventions Slicer expects of a GUI application's modules -----------------------------------


def _class_in(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == name)


def _class(module: str, name: str) -> ast.ClassDef:
    return _class_in(_tree(module), name)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


@pytest.mark.parametrize("module", MODULES)
def test_module_title_and_category_are_translatable_and_reload_includes_the_helpers(module):
    init = next(f for f in _class(module, module).body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assigned = {
        ast.unparse(s.targets[0]): s.value for s in init.body if isinstance(s, ast.Assign)
    }
    title, categories = assigned["self.parent.title"], assigned["self.parent.categories"]
    assert isinstance(title, ast.Call) and ast.unparse(title.func) == "_"  # slicer.i18n.tr, as the template
    assert all(isinstance(c, ast.Call) and ast.unparse(c.func) == "translate" for c in categories.elts)
    assert "from slicer.i18n import tr as _" in (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    widget = _class(module, f"{module}Widget")
    reload = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == "onReload")
    assert "reloadPackage('LWICommon')" in ast.unparse(reload) and f"reloadPackage('{module}Lib')" in ast.unparse(reload)
    dependencies = ast.literal_eval(assigned["self.parent.dependencies"])
    # LWITraining segments and previews through LWISegmentation's logic: Slicer must load that module first.
    assert dependencies == (["LWISegmentation"] if module == "LWITraining" else [])


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_neither_install_nor_raise_skiptest(module):
    """Reload and Test calls runTest directly: a SkipTest is reported as a failure; and a self-test
    must never download the core's dependencies."""
    for _node, name in _calls(_class_in(_test_tree(module), f"{module}Test")):
        assert name not in ("self.skipTest", "unittest.skip"), name
        assert not name.endswith(("setupDependencies", "installDependencies")), name


def test_double_spin_box_limits_survive_the_spin_box_rounding():
    """QDoubleSpinBox rounds its minimum and maximum to its decimals: a WithinRange limit it cannot
    show becomes another value (1e-7 at 6 decimals is 0), which the parameter node then rejects."""
    checked = 0
    for module in MODULES:
        fields = _parameter_node_fields(module)
        for widget in _ui_widgets(module).values():
            if widget.get("class") != "QDoubleSpinBox":
                continue
            decimals = widget.find("property[@name='decimals']/number")
            decimals = int(decimals.text) if decimals is not None else 2  # Qt's default
            for call, name in _calls(fields[_parameter_name(widget)]):
                if name == "WithinRange":
                    for limit in (ast.literal_eval(a) for a in call.args):
                        assert round(limit, decimals) == limit, f"{widget.get('name')}: {limit} at {decimals} decimals"
                        checked += 1
    assert checked >= 4


def test_every_child_process_of_the_gui_hides_its_console_window():
    """Windows: a console program (PythonSlicer, taskkill) started by Slicer's GUI flashes a console
    window unless it is created with CREATE_NO_WINDOW, which these helpers add."""
    sources = [ROOT / m / f"{m}.py" for m in MODULES] + sorted(
        p for folder in ("LWICommon", "LWISegmentation/LWISegmentationLib", "LWITraining/LWITrainingLib")
        for p in (ROOT / folder).glob("*.py")
    )
    found = 0
    for path in sources:
        for call, name in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            if name in ("subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_output"):
                found += 1
                spread = [ast.unparse(k.value) for k in call.keywords if k.arg is None]
                named = [k.arg for k in call.keywords]
                assert "creationflags" in named or set(spread) & {"no_window_kwargs()", "popen_platform_kwargs()"}, (
                    f"{path.name}:{call.lineno}"
                )
    assert found >= 5


def test_training_images_offered_are_never_label_maps():
    """G6: qMRMLNodeComboBox lists subclasses unless told not to; a label map volume is a
    vtkMRMLScalarVolumeNode."""
    for module in MODULES:
        for widget in _ui_widgets(module).values():
            types = [s.text for s in widget.findall("property[@name='nodeTypes']/stringlist/string")]
            if widget.get("class") == "qMRMLNodeComboBox" and types == ["vtkMRMLScalarVolumeNode"]:
                child = widget.find("property[@name='showChildNodeTypes']/bool")
                assert child is not None and child.text == "false", widget.get("name")
