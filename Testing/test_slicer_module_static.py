"""Static checks of the 3D Slicer extension, run without Slicer.

3D Slicer cannot run in CI, so what can be checked from the files is checked here: the ``.ui`` file against the
names and widget classes the module uses, the parameter node against the widgets bound to it, file-scope imports,
the split of the module into a thin main file and one-class-per-file helpers, the library names the module calls
(and that tests exercise them), the CMake file lists against the files on disk, the extension descriptions against
their schemas, and the Slicer documentation against the code. The references are the files themselves (XML parsed by
``xml.etree``, Python by ``ast``, the file system), the library (importlib) and the ExtensionsIndex schema
``slicer-extension-catalog-entry-schema-v1.0.1.json`` (copied below).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import re
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "DiffDefAtlas"
MODULE_FILE = MODULE_DIR / "DiffDefAtlas.py"
MODULE_LIB_DIR = MODULE_DIR / "DiffDefAtlasModuleLib"
PARAMETERS_FILE = MODULE_LIB_DIR / "DiffDefAtlasParameterNode.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "DiffDefAtlas.ui"
LIB_DIR = ROOT / "DiffDefAtlasLib"
DOC_FILE = ROOT / "docs" / "slicer.md"
README_FILE = ROOT / "README.md"
TESTING_DIR = ROOT / "Testing"
#: The one project address used by the module, CMake, .s4ext, .json and the docs.
PROJECT_URL = "https://github.com/diffdefatlas/SlicerDiffDefAtlas"

#: Widget class implied by the end of a ``self.ui`` name (longest suffix first). Names must follow it.
SUFFIX_CLASSES = [
    ("CollapsibleGroupBox", {"ctkCollapsibleGroupBox"}),
    ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("DirectoryButton", {"ctkDirectoryButton"}),
    ("DoubleSpinBox", {"QDoubleSpinBox"}),
    ("SpinBox", {"QSpinBox"}),
    ("ComboBox", {"QComboBox"}),
    ("CheckBox", {"QCheckBox"}),
    ("Button", {"QPushButton"}),
    ("Slider", {"ctkSliderWidget"}),
    ("Selector", {"qMRMLNodeComboBox"}),
    ("ProgressBar", {"QProgressBar"}),
    ("Label", {"QLabel"}),
    ("Frame", {"QFrame"}),
]

#: Widget classes the parameter node wrapper can bind to each field type (Slicer's parameterNodeWrapper/guiConnectors.py;
#: a QComboBox would also need a Choice annotation, which this module does not use).
BINDABLE = {
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "int": {"QSpinBox", "QSlider"},
    "bool": {"QCheckBox", "QPushButton"},
    "str": {"QLineEdit", "QTextEdit"},
    "node": {"qMRMLNodeComboBox"},
}

HEAVY_MODULES = {"torch", "monai", "nibabel", "safetensors", "SimpleITK", "scipy"}
#: The only library modules the module files may import at file scope: they need numpy alone (checked in a fresh
#: interpreter by test_scene.py); the others import torch, directly or through DiffDefAtlasLib.spatial.
LIGHT_LIBRARY_MODULES = {
    "DiffDefAtlasLib.slicer_support",
    "DiffDefAtlasLib.slicer_support.arrays",
    "DiffDefAtlasLib.slicer_support.dependencies",
    "DiffDefAtlasLib.slicer_support.devices",
    "DiffDefAtlasLib.slicer_support.exports",
    "DiffDefAtlasLib.slicer_support.jobs",
    "DiffDefAtlasLib.slicer_support.overlays",
    "DiffDefAtlasLib.slicer_support.sliders",
    "DiffDefAtlasLib.slicer_support.gui_state",
    "DiffDefAtlasLib.slicer_support.layers",
    "DiffDefAtlasLib.slicer_support.vtk_grid",
}

#: slicer-extension-catalog-entry-schema-v1.0.1.json (Slicer/Slicer, Schemas/), the schema ExtensionsIndex entries use.
CATALOG_SCHEMA = {
    "required": ["$schema", "category", "scm_url"],
    "properties": {
        "$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
        "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int,
    },
    "enums": {"scm_type": {"git", "local"}, "tier": {1, 3, 5}},
}


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)
    widgets: dict[str, ET.Element] = {}
    for element in tree.iter("widget"):
        name = element.get("name")
        assert name not in widgets, f"widget name {name!r} is used twice in {UI_FILE.name}"
        widgets[name] = element
    return widgets


def _module_files() -> list[Path]:
    """Every Python file of the Slicer module: the main file and the helper classes."""
    return sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_tree() -> ast.Module:
    return _tree(MODULE_FILE)


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found")


def _ui_names_used(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def _expected_classes(name: str) -> set[str]:
    for suffix, classes in SUFFIX_CLASSES:
        if name.endswith(suffix):
            return classes
    raise AssertionError(f"self.ui.{name}: name does not end with a known widget suffix ({', '.join(s for s, _ in SUFFIX_CLASSES)})")


def _parameter_fields() -> dict[str, tuple[str, ast.expr, ast.expr | None]]:
    """name -> (kind, annotation, default) of the @parameterNodeWrapper class."""
    cls = _class(_tree(PARAMETERS_FILE), "DiffDefAtlasParameterNode")
    decorators = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in cls.decorator_list}
    assert "parameterNodeWrapper" in decorators, "the parameter node class must be decorated with @parameterNodeWrapper"
    fields = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = node.annotation
            base = annotation.slice.elts[0] if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated" else annotation
            base_name = base.id if isinstance(base, ast.Name) else ast.unparse(base)
            kind = "node" if base_name.startswith("vtkMRML") else base_name
            fields[node.target.id] = (kind, annotation, node.value)
    return fields


def _within_range(annotation: ast.expr) -> tuple[float, float] | None:
    if not (isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated"):
        return None
    for extra in annotation.slice.elts[1:]:
        if isinstance(extra, ast.Call) and getattr(extra.func, "id", "") == "WithinRange":
            low, high = (ast.literal_eval(arg) for arg in extra.args)
            return float(low), float(high)
    return None


def _top_level_statements(body: list[ast.stmt]):
    """Statements that run when the file is imported: module and class bodies, if/try/with blocks; not functions."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _top_level_statements([c for c in children if isinstance(c, ast.stmt)] + [
                    s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body
                ])


def _cmake_list(text: str, variable: str, substitutions: dict[str, str]) -> list[str]:
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    items = []
    for token in match.group(1).split():
        if token.startswith("#"):
            continue
        for key, value in substitutions.items():
            token = token.replace("${" + key + "}", value)
        items.append(token)
    return items


def _files(folder: Path, predicate) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and predicate(p))


# ----------------------------------------------------------------------------------------------------------------
# .ui file and the names the module uses


def test_ui_file_parses_with_a_qmrmlwidget_root():
    """Reference: Qt Designer's format, parsed by xml.etree; Slicer's loadUI needs a qMRMLWidget root for setMRMLScene."""
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == "DiffDefAtlas"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets used but not declared in <customwidgets>: {sorted(custom - declared)}"
    # every MRML widget gets the scene through the mrmlSceneChanged connection
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml_widgets = {w.get("name") for w in root.iter("widget") if w.get("class", "").startswith("qMRML") and w.get("name") != "DiffDefAtlas"}
    assert mrml_widgets <= receivers, f"MRML widgets without the scene connection: {sorted(mrml_widgets - receivers)}"


def test_every_ui_name_used_by_the_module_exists_with_the_right_class():
    """Reference: the .ui file (xml.etree) and the module source (ast). A renamed or missing widget fails here."""
    widgets = _ui_widgets()
    used = set().union(*(_ui_names_used(_tree(path)) for path in _module_files()))
    assert used, "the module uses no self.ui names: the check would be empty"
    problems = []
    for name in sorted(used):
        if name not in widgets:
            problems.append(f"self.ui.{name}: no widget of that name in {UI_FILE.name}")
            continue
        cls = widgets[name].get("class")
        expected = _expected_classes(name)
        if cls not in expected:
            problems.append(f"self.ui.{name}: expected {' or '.join(sorted(expected))}, the .ui has {cls}")
    assert not problems, "\n".join(problems)


def test_ui_names_follow_the_suffix_convention():
    """Every named interactive widget in the .ui ends with the suffix of its class, so the check above is meaningful."""
    problems = []
    for name, element in _ui_widgets().items():
        cls = element.get("class")
        if cls in ("QWidget", "qMRMLWidget"):
            continue
        try:
            expected = _expected_classes(name)
        except AssertionError as error:
            problems.append(str(error))
            continue
        if cls not in expected:
            problems.append(f"{name}: class {cls}, name suggests {sorted(expected)}")
    assert not problems, "\n".join(problems)


def test_bound_widgets_match_parameter_node_fields():
    """Reference: the parameter node class (ast) and the SlicerParameterName properties of the .ui (xml.etree)."""
    fields = _parameter_fields()
    bound = {}
    for name, element in _ui_widgets().items():
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = (element.get("class"), prop.findtext("string"))
    assert len(bound) >= 10, f"expected the GUI to bind its settings through SlicerParameterName, found {bound}"
    problems = []
    for widget, (cls, parameter) in sorted(bound.items()):
        if parameter not in fields:
            problems.append(f"{widget}: SlicerParameterName {parameter!r} is not a field of DiffDefAtlasParameterNode")
            continue
        kind = fields[parameter][0]
        if cls not in BINDABLE.get(kind, set()):
            problems.append(f"{widget}: a {cls} cannot bind the {kind} field {parameter!r}")
    assert not problems, "\n".join(problems)


def test_parameter_node_numbers_have_ranges_containing_their_defaults():
    """Reference: the parameter node class (ast). Sliders get their limits from WithinRange; defaults must lie inside."""
    fields = _parameter_fields()
    floats = {name: f for name, f in fields.items() if f[0] == "float"}
    assert floats, "expected Annotated[float, WithinRange(a, b)] fields"
    for name, (kind, annotation, default) in fields.items():
        if kind not in ("float", "int"):
            continue
        limits = _within_range(annotation)
        assert limits is not None, f"{name}: numbers need Annotated[{kind}, WithinRange(a, b)]"
        assert default is not None, f"{name}: needs a default"
        value = ast.literal_eval(default)
        assert limits[0] <= value <= limits[1], f"{name}: default {value} outside WithinRange{limits}"


# ----------------------------------------------------------------------------------------------------------------
# module files: thin main file, one class per helper file, light imports


def test_module_compiles_and_defines_the_slicer_classes():
    """Reference: Slicer's scripted-module conventions (Module, Widget, Logic, Test classes named after the file)."""
    for path in _module_files():
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    tree = _module_tree()
    bases = {
        "DiffDefAtlas": "ScriptedLoadableModule",
        "DiffDefAtlasWidget": "ScriptedLoadableModuleWidget",
        "DiffDefAtlasLogic": "ScriptedLoadableModuleLogic",
        "DiffDefAtlasTest": "ScriptedLoadableModuleTest",
    }
    for name, base in bases.items():
        cls = _class(tree, name)
        assert base in {b.id for b in cls.bases if isinstance(b, ast.Name)}, f"{name} must derive from {base}"
    test_methods = {n.name for n in _class(tree, "DiffDefAtlasTest").body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and any(m.startswith("test_") for m in test_methods)
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'self.resourcePath("UI/DiffDefAtlas.ui")' in source and "slicer.util.loadUI" in source
    # slots show errors through ErrorDisplay, which wraps Slicer's tryWithErrorDisplay and does not re-raise
    assert "with ErrorDisplay(" in source and "tryWithErrorDisplay" not in source
    assert "slicer.util.tryWithErrorDisplay" in (MODULE_FILE.parent / "DiffDefAtlasModuleLib" / "ErrorDisplay.py").read_text()


def test_main_file_holds_the_entry_points_and_no_computation():
    """Reference: the files (ast). The main file defines only the four entry points, and no module class outside the
    self-test imports numpy: computations belong in DiffDefAtlasLib (the module stays glue). The layout of the
    helper files is free; the import contracts in pyproject.toml guard the library's structure."""
    tree = _module_tree()
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"DiffDefAtlas", "DiffDefAtlasWidget", "DiffDefAtlasLogic", "DiffDefAtlasTest"}
    assert not [n.name for n in tree.body if isinstance(n, ast.FunctionDef)], "helper functions belong in DiffDefAtlasModuleLib"
    for path in _module_files():
        body = _tree(path)
        for cls in [n for n in body.body if isinstance(n, ast.ClassDef) and n.name != "DiffDefAtlasTest"]:
            for node in ast.walk(cls):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                    assert "numpy" not in names, f"{path.name}: {cls.name} imports numpy; computations belong in DiffDefAtlasLib"


def test_module_lib_package_imports_before_the_library_is_on_the_path():
    """Reference: the files (ast). DiffDefAtlasModuleLib/__init__.py and LibraryPath.py run before DiffDefAtlasLib is
    importable, so they import nothing but the standard library; the main file adds the path before importing the
    library or any other helper, and only when the library is not importable already (installed, it is in the module
    folder, which Slicer puts on sys.path: the main file then leaves sys.path alone)."""
    for path in (MODULE_LIB_DIR / "__init__.py", MODULE_LIB_DIR / "LibraryPath.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert all(n.split(".")[0] in sys.stdlib_module_names for n in names), f"{path.name} imports {names}"
    body = _module_tree().body
    guard = next(n for n in body if isinstance(n, ast.If) and "addLibraryToPath" in ast.unparse(n))
    assert ast.unparse(guard.test) == "importlib.util.find_spec('DiffDefAtlasLib') is None", ast.unparse(guard.test)
    assert not any("addLibraryToPath" in ast.unparse(n) for n in body if n is not guard)
    path_line = guard.end_lineno
    for node in body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("DiffDefAtlasLib", "DiffDefAtlasModuleLib"):
            if node.module != "DiffDefAtlasModuleLib.LibraryPath":
                assert node.lineno > path_line, f"line {node.lineno} imports {node.module} before the library path is set"


def _load_library_path_module():
    spec = importlib.util.spec_from_file_location("_diffdef_library_path", MODULE_LIB_DIR / "LibraryPath.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_library_path_finds_the_library_installed_or_from_source(tmp_path, monkeypatch):
    """Reference: two folder layouts made on disk. Installed: the library beside the module; source checkout: one
    folder up (this repository). Neither: None, and the module folder is returned with an error logged."""
    library_path = _load_library_path_module()
    assert library_path.findLibraryParent(MODULE_DIR) == ROOT.resolve()  # this checkout
    installed = tmp_path / "qt-scripted-modules"
    (installed / "DiffDefAtlasLib").mkdir(parents=True)
    (installed / "DiffDefAtlasLib" / "__init__.py").write_text("")
    assert library_path.findLibraryParent(installed) == installed.resolve()
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert library_path.addLibraryToPath(installed) == installed.resolve()
    assert sys.path[0] == str(installed.resolve())
    library_path.addLibraryToPath(installed)
    assert sys.path.count(str(installed.resolve())) == 1  # once
    empty = tmp_path / "a" / "b"
    empty.mkdir(parents=True)
    assert library_path.findLibraryParent(empty) is None
    assert library_path.addLibraryToPath(empty) == empty.resolve()


def test_no_heavy_import_at_file_scope():
    """Reference: the module sources (ast). torch/MONAI (and library modules that import them) load inside functions
    only, after the user agreed to install them; the ExtensionsIndex review checks this too."""
    problems = []
    for path in _module_files():
        for node in _top_level_statements(_tree(path).body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in HEAVY_MODULES:
                    problems.append(f"{path.name} line {node.lineno}: imports {name} at file scope")
                if root == "DiffDefAtlasLib" and name != "DiffDefAtlasLib" and name not in LIGHT_LIBRARY_MODULES:
                    problems.append(f"{path.name} line {node.lineno}: imports {name} at file scope (only {sorted(LIGHT_LIBRARY_MODULES)} are light)")
    assert not problems, "\n".join(problems)


def _library_references() -> dict[str, set[str]]:
    """Library module -> names the module files use from it: ``from DiffDefAtlasLib.x import y`` and ``alias.y`` where
    ``alias`` is an imported library module (``sliders``, ``jobs``, ``layers``, ``api``...)."""
    wanted: dict[str, set[str]] = {}
    for path in _module_files():
        tree = _tree(path)
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("DiffDefAtlasLib"):
                for alias in node.names:
                    wanted.setdefault(node.module, set()).add(alias.name)
                    full = f"{node.module}.{alias.name}"
                    if importlib.util.find_spec(full.split(".")[0]) and _is_module(full):
                        aliases[alias.asname or alias.name] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                wanted.setdefault(aliases[node.value.id], set()).add(node.attr)
    return wanted


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_library_names_used_by_the_module_exist():
    """Reference: the library itself (importlib). Every library name the module files import or call through a module
    alias (``sliders.x``, ``layers.x``, ``api.x``...) must exist, so an API rename in the library fails here rather than
    inside Slicer."""
    wanted = _library_references()
    assert {"DiffDefAtlasLib.slicer_support.sliders", "DiffDefAtlasLib.slicer_support.jobs", "DiffDefAtlasLib.slicer_support.layers"} <= set(wanted)
    problems = []
    for module_name, names in sorted(wanted.items()):
        module = importlib.import_module(module_name)
        for name in sorted(names):
            if not hasattr(module, name) and not _is_module(f"{module_name}.{name}"):
                problems.append(f"{module_name}.{name} does not exist")
    assert not problems, "\n".join(problems)


def test_every_library_function_the_module_calls_is_exercised_by_a_library_test():
    """Reference: the test files under Testing/ (text). The module's Logic is a thin layer over library functions;
    each one it calls must appear in at least one library test (this file excluded), so the Logic API is covered by
    pytest even though Slicer cannot run here."""
    tests = "\n".join(p.read_text(encoding="utf-8") for p in sorted(TESTING_DIR.glob("test_*.py"))
                      if p.name != Path(__file__).name)
    untested = []
    for module_name, names in sorted(_library_references().items()):
        module = importlib.import_module(module_name)
        for name in sorted(names):
            value = getattr(module, name, None)
            if value is None or inspect.ismodule(value) or name.isupper() or not callable(value):
                continue  # modules are followed through their aliases; constants are checked by value elsewhere
            if not re.search(rf"\b{re.escape(name)}\b", tests):
                untested.append(f"{module_name}.{name}")
    assert not untested, "library functions the module calls but no test exercises:\n" + "\n".join(untested)


def test_api_calls_match_the_library_signatures():
    """Reference: ``inspect.signature`` of ``DiffDefAtlasLib.api``: the keywords the module passes must be accepted."""
    from DiffDefAtlasLib import api

    problems, calls = [], 0
    for path in _module_files():
        for node in ast.walk(_tree(path)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call"):
                continue
            function = node.args[0]
            if isinstance(function, ast.Attribute) and getattr(function.value, "id", "") == "api":
                calls += 1
                parameters = inspect.signature(getattr(api, function.attr)).parameters
                for keyword in node.keywords:
                    if keyword.arg not in parameters:
                        problems.append(f"api.{function.attr} has no parameter {keyword.arg!r}")
    assert calls >= 2, "expected the Logic to call api.generate_atlas and api.register_to_atlas through _call"
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------------------
# documentation against the code


def _readme_slicer_section() -> str:
    text = README_FILE.read_text(encoding="utf-8")
    match = re.search(r"^## 3D Slicer\n.*?(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## 3D Slicer' section"
    return match.group(0)


def test_readme_section_and_docs_page_say_the_same():
    """Reference: README.md's 3D Slicer section. docs/slicer.md is the same text (image paths relative to docs/)."""
    readme = _readme_slicer_section().rstrip()
    docs = DOC_FILE.read_text(encoding="utf-8").rstrip()
    assert docs == readme.replace("](docs/images/", "](images/")
    for image in re.findall(r"\]\((images/[^)]+)\)", docs):
        assert (DOC_FILE.parent / image).is_file(), f"docs/slicer.md shows {image}, which does not exist"
    for section in ("Install from the Extensions Manager", "Install from source", "First run", "Walkthrough",
                    "Scripting from the Python console", "Troubleshooting"):
        assert f"### {section}" in readme, f"README 3D Slicer section lacks '{section}'"
    for topic in ("Developer mode", "Additional module paths", "GPU", "Offline", "PythonSlicer"):
        assert topic.lower() in readme.lower(), f"README 3D Slicer section does not mention {topic}"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC_FILE.read_text(encoding="utf-8"), re.S)


def test_console_example_in_docs_uses_existing_logic_methods():
    """Reference: docs/slicer.md and the Logic class (ast): every ``logic.method(..., keyword=...)`` in the docs exists."""
    text = DOC_FILE.read_text(encoding="utf-8")
    blocks = _python_blocks()
    assert blocks, "docs/slicer.md has no python examples"
    logic = _class(_module_tree(), "DiffDefAtlasLogic")
    methods = {n.name: n for n in logic.body if isinstance(n, ast.FunctionDef)}
    aliases = {t.id for n in logic.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    calls = 0
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "logic":
                calls += 1
                name = node.func.attr
                if name in aliases:  # e.g. displacementFromTransformNode = staticmethod(MRMLConversion....)
                    assert not node.keywords, f"docs pass keywords to the alias logic.{name}(); check them by hand"
                    continue
                assert name in methods, f"docs call logic.{name}(), which DiffDefAtlasLogic does not define"
                arguments = methods[name].args
                accepted = {a.arg for a in arguments.args + arguments.kwonlyargs}
                for keyword in node.keywords:
                    assert keyword.arg in accepted, f"docs pass {keyword.arg}= to logic.{name}(), which does not accept it"
    assert calls >= 2
    assert 'slicer.util.getModuleLogic("DiffDefAtlas")' in text
    first = ast.parse(blocks[0])
    assert ast.unparse(first) == ast.unparse(ast.parse(
        'logic = slicer.util.getModuleLogic("DiffDefAtlas")\n'
        'nodes = logic.generateAtlas(model="brain3d", conditions={"age": 72, "sex": "F"})\n'
        'logic.registerVolume(getNode("MRHead"), nodes.atlas)\n')), "the first example is the one issue 7 asks for"


def test_attributes_used_in_the_docs_exist():
    """Reference: the result classes (ast of AtlasNodes/RegistrationNodes) and the library (BackgroundJob,
    AtlasResult). ``nodes.x``, ``registered.x``, ``registered.result.x`` and ``job.x`` in the examples exist."""
    from DiffDefAtlasLib.slicer_support.jobs import BackgroundJob

    def fields(name: str) -> set[str]:
        cls = _class(_tree(MODULE_LIB_DIR / f"{name}.py"), name)
        return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}

    known = {"nodes": fields("AtlasNodes"), "registered": fields("RegistrationNodes"),
             "job": {n for n in dir(BackgroundJob) if not n.startswith("_")} | {"state", "error", "log", "progress"}}
    seen = 0
    for block in _python_blocks():
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in known:
                seen += 1
                assert node.attr in known[node.value.id], f"docs use {node.value.id}.{node.attr}, which does not exist"
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "result"
                    and node.attr != "summary"):
                raise AssertionError(f"docs use ....result.{node.attr}; only .summary is documented")
    assert seen >= 4


#: Widget texts the docs name (in *italics* or **bold**), as the .ui file or the module's combo boxes show them.
DOCUMENTED_GUI_TEXTS = [
    "Setup", "Install dependencies...", "Device", "Auto", "CPU", "Atlas", "Allow values outside the trained range",
    "Update the atlas when a slider is released", "Advanced", "Seed", "Sampling steps", "Generate atlas", "Overlays",
    "Deformation", "Grid", "Glyphs", "Hidden", "Deformation scale", "Grid spacing", "Foreground", "Opacity",
    "Jacobian range", "Show folding regions", "Register loaded scan", "Scan", "Refinement", "none (fast)",
    "Register to atlas", "Cancel", "Generate sweep", "Export atlas",
]


def test_gui_texts_named_in_the_docs_exist():
    """Reference: the .ui strings (xml.etree) and the combo-box texts in the module (ast). Each text the docs tell a
    user to click or read is on screen, and the docs name it."""
    on_screen = {s.text.rstrip(":") for s in ET.parse(UI_FILE).getroot().iter("string") if s.text}
    for node in ast.walk(_module_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_" and node.args and isinstance(node.args[0], ast.Constant):
            on_screen.add(str(node.args[0].value))
    docs = DOC_FILE.read_text(encoding="utf-8")
    documented = {t.rstrip(".:") for t in re.findall(r"\*\*([^*]+)\*\*", docs)}
    documented |= {t.rstrip(".:") for t in re.findall(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])", docs)}
    for text in DOCUMENTED_GUI_TEXTS:
        assert any(t == text or t.startswith(text + " (") for t in on_screen), f"the GUI shows no {text!r}"
        assert text.rstrip(".:") in documented, f"docs/slicer.md does not name {text!r} in *italics* or **bold**"
    assert "Show folding regions (det J <= 0)" in on_screen


def test_node_names_in_the_docs_match_the_library():
    """Reference: DiffDefAtlasLib.slicer_support.layers (the names the Logic gives its nodes)."""
    from DiffDefAtlasLib.slicer_support import layers

    docs = DOC_FILE.read_text(encoding="utf-8")
    for suffix in layers.ATLAS_NODE_SUFFIXES.values():
        assert f"`{suffix}`" in docs, f"docs/slicer.md does not list the atlas node ending {suffix!r}"
    for pattern in layers.REGISTRATION_NODE_NAMES.values():
        assert f"`{pattern.format(scan='<scan>')}`" in docs, f"docs/slicer.md does not list {pattern!r}"
    assert f"`{layers.atlas_title('brain3d', {'age': 72, 'sex': 'F'})}`" in docs  # temperature 0: no seed in the name
    from DiffDefAtlasLib.slicer_support import exports

    for suffix in exports.EXPORT_SUFFIXES.values():
        assert f"`<stem>{suffix}`" in docs, f"docs/slicer.md does not list the export file <stem>{suffix}"


def test_one_project_url_everywhere():
    """Reference: PROJECT_URL. CMake, .s4ext, .json, the module's help text and the docs use the same address."""
    texts = {path.name: path.read_text(encoding="utf-8") for path in (
        ROOT / "CMakeLists.txt", ROOT / "DiffDefAtlas.s4ext", ROOT / "DiffDefAtlas.json", MODULE_FILE)}
    for name, text in texts.items():
        assert PROJECT_URL in text, f"{name} does not use {PROJECT_URL}"
        others = {u for u in re.findall(r"https://(?:raw\.)?github(?:usercontent)?\.com/[\w.-]+/[\w.-]+", text)
                  if not u.startswith(("https://github.com/Slicer/", "https://raw.githubusercontent.com/Slicer/"))}
        allowed = {PROJECT_URL, PROJECT_URL.replace("https://github.com/", "https://raw.githubusercontent.com/")}
        assert others <= allowed | {u + ".git" for u in allowed}, f"{name} uses other repository addresses: {others - allowed}"
    entry = json.loads(texts["DiffDefAtlas.json"])
    assert entry["scm_url"] == PROJECT_URL + ".git"


# ----------------------------------------------------------------------------------------------------------------
# CMake lists and extension descriptions


def test_module_cmake_scripts_match_the_files():
    """Reference: the .py files of DiffDefAtlas/ on disk: each must be listed in SCRIPTS, and nothing else."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = sorted(_cmake_list(text, "MODULE_PYTHON_SCRIPTS", {"MODULE_NAME": "DiffDefAtlas"}))
    assert scripts == _files(MODULE_DIR, lambda p: p.suffix == ".py")
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


def test_module_cmake_resources_are_paths_under_the_module():
    """Reference: the files on disk, with the Resources/ prefix the CMake macro copies them under."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    resources = sorted(_cmake_list(text, "MODULE_PYTHON_RESOURCES", {"MODULE_NAME": "DiffDefAtlas"}))
    on_disk = sorted("Resources/" + p for p in _files(MODULE_DIR / "Resources", lambda p: True))
    assert resources == on_disk


def _library_cmake_block(scripts: list[str]) -> str:
    return "set(MODULE_PYTHON_SCRIPTS\n" + "".join(f"  {s}\n" for s in scripts) + "  )"


def test_library_cmake_lists_every_python_file():
    """Reference: the .py files under DiffDefAtlasLib/. A new module that is not listed would be missing from the
    installed extension; the failure message prints the up-to-date block to paste into DiffDefAtlasLib/CMakeLists.txt."""
    text = (LIB_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    listed = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", {"MODULE_NAME": "DiffDefAtlasLib"})
    on_disk = _files(LIB_DIR, lambda p: p.suffix == ".py")
    assert len(listed) == len(set(listed)), "duplicate entries in MODULE_PYTHON_SCRIPTS"
    assert sorted(listed) == on_disk, (
        f"DiffDefAtlasLib/CMakeLists.txt is out of date.\nmissing: {sorted(set(on_disk) - set(listed))}\n"
        f"not on disk: {sorted(set(listed) - set(on_disk))}\nreplace the list with:\n{_library_cmake_block(on_disk)}"
    )
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES", {})
    data_files = _files(LIB_DIR, lambda p: p.suffix not in (".py", ".pyc") and p.name != "CMakeLists.txt")
    assert sorted(resources) == data_files, f"non-Python files under DiffDefAtlasLib/ must be RESOURCES: {data_files}"
    assert "WITH_SUBDIR" in text, "the library installs as a package folder beside the module (WITH_SUBDIR)"
    assert "../Resources" in text, "the bundled template and weights (Resources/) must be installed with the library"


def test_top_level_cmake_describes_the_extension():
    """Reference: the fields Slicer's extension build (Slicer_EXTENSION_GENERATE_CONFIG) reads."""
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"project\(\s*DiffDefAtlas\s*\)", text)
    values = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', text))
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{field}"), f"EXTENSION_{field} missing or empty"
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    for url_field in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert values[url_field].startswith("https://")
    assert values["EXTENSION_ICONURL"].endswith("DiffDefAtlas/Resources/Icons/DiffDefAtlas.png")
    for statement in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(DiffDefAtlasLib)",
                      "add_subdirectory(DiffDefAtlas)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                      "include(${Slicer_EXTENSION_CPACK})"):
        assert statement in text, f"top-level CMakeLists.txt lacks {statement}"


def test_s4ext_has_required_fields():
    """Reference: the .s4ext keys of Slicer's extension template (scm, scmurl, depends, category...)."""
    entries = {}
    for line in (ROOT / "DiffDefAtlas.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            entries[key] = value.strip()
    for key in ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors", "category",
                "iconurl", "status", "description", "screenshoturls", "enabled"):
        assert entries.get(key), f"{key} missing from DiffDefAtlas.s4ext"
    assert entries["scm"] == "git" and entries["depends"] == "PyTorch"
    cmake = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")))
    assert entries["category"] == cmake["EXTENSION_CATEGORY"] and entries["iconurl"] == cmake["EXTENSION_ICONURL"]


def test_catalog_json_follows_the_extensions_index_schema():
    """Reference: slicer-extension-catalog-entry-schema-v1.0.1.json (required keys, no others, types, enums)."""
    entry = json.loads((ROOT / "DiffDefAtlas.json").read_text(encoding="utf-8"))
    for key in CATALOG_SCHEMA["required"]:
        assert key in entry, f"{key} is required"
    for key, value in entry.items():
        assert key in CATALOG_SCHEMA["properties"], f"{key} is not allowed by the schema"
        assert isinstance(value, CATALOG_SCHEMA["properties"][key]), f"{key} must be a {CATALOG_SCHEMA['properties'][key].__name__}"
        if key in CATALOG_SCHEMA["enums"]:
            assert value in CATALOG_SCHEMA["enums"][key], f"{key}={value!r} not in {CATALOG_SCHEMA['enums'][key]}"
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert all(isinstance(d, str) for d in entry["build_dependencies"]) and "PyTorch" in entry["build_dependencies"]
    cmake = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")))
    assert entry["category"] == cmake["EXTENSION_CATEGORY"]


def test_icon_is_a_128_pixel_png():
    """Reference: the PNG header (IHDR width/height), as the extension catalog requires 128x128 icons."""
    data = (MODULE_DIR / "Resources" / "Icons" / "DiffDefAtlas.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_license_is_apache_2():
    """Reference: the Apache License 2.0 text (its title and terms) with the project's copyright line."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert "Copyright DiffDefAtlas developers" in text


if __name__ == "__main__":
    # Maintenance helper: rewrite the MODULE_PYTHON_SCRIPTS list of DiffDefAtlasLib/CMakeLists.txt from the files on
    # disk (run from anywhere: python Testing/test_slicer_module_static.py --update-lib-cmake).
    if sys.argv[1:] != ["--update-lib-cmake"]:
        sys.exit("usage: python Testing/test_slicer_module_static.py --update-lib-cmake")
    cmake = LIB_DIR / "CMakeLists.txt"
    text = cmake.read_text(encoding="utf-8")
    block = _library_cmake_block(_files(LIB_DIR, lambda p: p.suffix == ".py"))
    cmake.write_text(re.sub(r"set\(\s*MODULE_PYTHON_SCRIPTS\s+.*?\)", lambda _: block, text, count=1, flags=re.S), encoding="utf-8")
    print(f"updated {cmake.relative_to(ROOT)}")
