"""The extension's packaging, checked the way the Slicer ExtensionsIndex checks it, without network or Slicer.

Each check is a function of a project folder that returns its problems, so that every check runs on this checkout
and, in a negative test, on a copy in ``tmp_path`` broken on purpose (the real files are never edited).

References (read from the sources, not copied):
- Slicer/ExtensionsIndex at commit 07f1d1b2781c7dd9f6e2a9f5521b3ed43631724c: ``schemas/slicer-extension-catalog-entry-
  schema-v1.0.1.json`` (identical to Slicer/Slicer ``Schemas/`` of the same name), and
  ``scripts/check_description_files.py`` (its checks: schema, LF line endings, category in
  ``ACCEPTED_EXTENSION_CATEGORIES``, name, repository name, ``scm_url`` scheme, CMakeLists.txt ``project()`` name and
  icon/screenshot URLs, repository size <= 100 MB counted over the whole clone, ``.git`` included).
- Slicer/Slicer branch 5.10 (66f3d12281dec5af0984c366fa01a17ebcf395cb, tag v5.10.0 the same):
  ``Utilities/Templates/Extensions/Default/CMakeLists.txt`` and ``CMake/SlicerConfig.cmake.in`` (line 55) both say
  ``cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)``; ``CMake/SlicerMacroBuildScriptedModule.cmake``
  and CTK's ``CMake/ctkMacroCompilePythonScript.cmake`` (how a scripted module's files are copied and installed).

Already checked by ``Testing/test_slicer_module_static.py`` and not repeated here: presence of the EXTENSION_* fields
and of find_package/include/add_subdirectory (``test_top_level_cmake_describes_the_extension``), presence of the
.s4ext keys (``test_s4ext_has_required_fields``), one project URL everywhere (``test_one_project_url_everywhere``),
the CMake SCRIPTS/RESOURCES lists against the files (``test_module_cmake_*``, ``test_library_cmake_*``), the heavy
imports in its ``HEAVY_MODULES`` (``test_no_heavy_import_at_file_scope``) and the library-path guard's placement
(``test_module_lib_package_imports_before_the_library_is_on_the_path``).
"""

from __future__ import annotations

import ast
import json
import posixpath
import random
import re
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION_NAME = "DiffDefAtlas"
REPO_SIZE_SCRIPT = ROOT / "scripts" / "repo_size.py"

# ----------------------------------------------------------------------------------------------------------------
# 1. DiffDefAtlas.json against the ExtensionsIndex schema and checks

#: The rules of slicer-extension-catalog-entry-schema-v1.0.1.json (Slicer/ExtensionsIndex schemas/, commit 07f1d1b),
#: the schema DiffDefAtlas.json names in its "$schema". Used by jsonschema when it is importable, and by the few lines
#: of ``_hand_validate`` (type, required, additionalProperties, enum, items, minimum, maximum) otherwise.
CATALOG_SCHEMA: dict = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
#: The versions Slicer/Slicer Schemas/ publishes (v1.0.2 adds only "dicom_support_rule", which the entry does not use).
KNOWN_SCHEMA_URLS = {
    f"https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v{v}.json#"
    for v in ("1.0.0", "1.0.1", "1.0.2")
}
#: ACCEPTED_EXTENSION_CATEGORIES of scripts/check_description_files.py (ExtensionsIndex commit 07f1d1b): a closed
#: list, so an entry with another category fails the index's "Check category".
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
}
#: Extensions of the index that build_dependencies may name, each checked to have a .json entry there (commit 07f1d1b:
#: PyTorch.json, scm_url https://github.com/fepegar/SlicerPyTorch.git). A new dependency fails until it is checked.
INDEX_EXTENSIONS_CHECKED = {"PyTorch"}
#: check_git_repository_name: the repository name must start with one of these.
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")

_JSON_TYPES = {"object": dict, "string": str, "array": list, "boolean": bool, "integer": int}


def _type_ok(value, kind: str) -> bool:
    if kind in ("integer",) and isinstance(value, bool):
        return False  # JSON true is not an integer (Python's bool is an int)
    return isinstance(value, _JSON_TYPES[kind])


def _hand_validate(value, schema: dict, where: str = "entry") -> list[str]:
    """The subset of JSON Schema that CATALOG_SCHEMA uses."""
    if "type" in schema and not _type_ok(value, schema["type"]):
        return [f"{where}: {value!r} is not of type {schema['type']!r}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{where}: {value!r} is less than the minimum of {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{where}: {value!r} is greater than the maximum of {schema['maximum']}")
    if isinstance(value, dict):
        problems += [f"{where}: {key!r} is a required property" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += _hand_validate(item, properties[key], f"{where} -> {key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{where}: additional property {key!r} is not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += _hand_validate(item, schema["items"], f"{where} -> {i}")
    return problems


def schema_problems(entry) -> list[str]:
    """Validate with jsonschema when it is importable (as the ExtensionsIndex does), otherwise by hand."""
    try:
        import jsonschema
    except ImportError:
        return _hand_validate(entry, CATALOG_SCHEMA)
    validator = jsonschema.Draft7Validator(CATALOG_SCHEMA)
    return [f"{' -> '.join(map(str, e.absolute_path)) or 'entry'}: {e.message}" for e in validator.iter_errors(entry)]


def _cmake_set_values(text: str) -> dict[str, str]:
    return dict(re.findall(r'set\(\s*(EXTENSION_[A-Z]+)\s+"([^"]*)"\s*\)', text))


def catalog_problems(root: Path) -> list[str]:
    """DiffDefAtlas.json as check_description_files.py checks it, less what needs the network (clone, topics, URLs)."""
    path = root / f"{EXTENSION_NAME}.json"
    raw = path.read_bytes()
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as error:
        return [f"{path.name} is not valid JSON: {error}"]
    problems = schema_problems(entry)
    if b"\r" in raw:
        problems.append(f"{path.name} has CR or CRLF line endings (the index requires LF only)")
    if not isinstance(entry, dict):
        return problems
    if entry.get("$schema") not in KNOWN_SCHEMA_URLS:
        problems.append(f"$schema {entry.get('$schema')!r} is not a published catalog-entry schema")
    if entry.get("category") not in ACCEPTED_CATEGORIES:
        problems.append(f"category {entry.get('category')!r} is not in the index's ACCEPTED_EXTENSION_CATEGORIES")
    for dependency in entry.get("build_dependencies", []):
        if dependency not in INDEX_EXTENSIONS_CHECKED:
            problems.append(f"build dependency {dependency!r} is not an extension checked to be in the index")
    scm_url = str(entry.get("scm_url", ""))
    if urllib.parse.urlsplit(scm_url).scheme not in ("git", "https"):
        problems.append(f"scm_url {scm_url!r} must use git:// or https://")
    repository = posixpath.splitext(urllib.parse.urlsplit(scm_url.strip().strip("/")).path.split("/")[-1])[0]
    if not repository.startswith(REPOSITORY_PREFIXES):
        problems.append(f"repository name {repository!r} must start with 'Slicer'")
    if EXTENSION_NAME.lower().startswith("slicer"):
        problems.append("the extension name must not start with 'Slicer'")
    cmake = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    project = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake, re.IGNORECASE)
    if not project or project[0].strip("\"'") != path.stem:
        problems.append(f"CMakeLists.txt project() name {project[:1]} must be the entry's file name {path.stem!r}")
    # the index's own patterns: a quoted value, closed right after the quote for the screenshots
    if not re.search(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake, re.IGNORECASE):
        problems.append("no EXTENSION_ICONURL the index can read in CMakeLists.txt")
    if not re.search(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake, re.IGNORECASE):
        problems.append("no EXTENSION_SCREENSHOTURLS the index can read in CMakeLists.txt")
    if not (root / "LICENSE").is_file():
        problems.append("no LICENSE file at the repository root")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# 2. DiffDefAtlas.s4ext agrees with DiffDefAtlas.json


def parse_s4ext(text: str) -> dict[str, str]:
    """First token of a non-comment line is the key, the rest of the line the value (Slicer's .s4ext format)."""
    entries = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            entries[key] = value.strip()
    return entries


def _dependency_list(value: str) -> list[str]:
    """.s4ext ``depends`` and CMake ``EXTENSION_DEPENDS``: space-separated names, "NA" for none."""
    names = value.replace(";", " ").split()
    return [] if names in ([], ["NA"]) else names


def s4ext_problems(root: Path) -> list[str]:
    """Each .s4ext field with a JSON counterpart says the same (JSON defaults from the schema where a key is absent).
    The .s4ext ``status`` (free text, "Beta") has no JSON counterpart: ``tier`` is the index maintainers' rating."""
    s4ext = parse_s4ext((root / f"{EXTENSION_NAME}.s4ext").read_text(encoding="utf-8"))
    entry = json.loads((root / f"{EXTENSION_NAME}.json").read_text(encoding="utf-8"))
    pairs = [
        ("scm", s4ext.get("scm"), entry.get("scm_type", "git")),
        ("scmurl", s4ext.get("scmurl"), entry.get("scm_url")),
        ("scmrevision", s4ext.get("scmrevision"), entry.get("scm_revision")),
        ("category", s4ext.get("category"), entry.get("category")),
        ("build_subdirectory", s4ext.get("build_subdirectory", "."), entry.get("build_subdirectory", ".")),
        ("depends", _dependency_list(s4ext.get("depends", "NA")), entry.get("build_dependencies", [])),
        ("enabled", {"1": True, "0": False}.get(s4ext.get("enabled", "1"), s4ext.get("enabled")), entry.get("enabled", True)),
    ]
    return [f".s4ext {key} = {ours!r} but the .json says {theirs!r}" for key, ours, theirs in pairs if ours != theirs]


# ----------------------------------------------------------------------------------------------------------------
# 3. Top-level CMakeLists.txt: CMake version, EXTENSION_* fields against the .s4ext and .json

#: Slicer 5.10's SlicerConfig.cmake.in and extension template: cmake_minimum_required(VERSION 3.20.6...3.22.6).
#: (Slicer main, 5.13, has moved its template to 3.28.0; 5.10 is the release this extension targets.)
SLICER_MIN_CMAKE = (3, 20, 6)
#: EXTENSION_* field -> .s4ext key, each set in the template (CATEGORY and STATUS are .s4ext fields the template's
#: Slicer_EXTENSION_GENERATE_CONFIG also reads).
CMAKE_TO_S4EXT = {
    "HOMEPAGE": "homepage", "CATEGORY": "category", "CONTRIBUTORS": "contributors", "DESCRIPTION": "description",
    "ICONURL": "iconurl", "SCREENSHOTURLS": "screenshoturls", "DEPENDS": "depends",
}
PROJECT_RAW_URL = "https://raw.githubusercontent.com/diffdefatlas/SlicerDiffDefAtlas/main/"


def cmake_minimum(text: str) -> tuple[int, ...] | None:
    match = re.search(r"cmake_minimum_required\s*\(\s*VERSION\s+(\d+(?:\.\d+)*)", text, re.IGNORECASE)
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def cmake_problems(root: Path) -> list[str]:
    text = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    s4ext = parse_s4ext((root / f"{EXTENSION_NAME}.s4ext").read_text(encoding="utf-8"))
    entry = json.loads((root / f"{EXTENSION_NAME}.json").read_text(encoding="utf-8"))
    problems = []
    minimum = cmake_minimum(text)
    if minimum is None or minimum < SLICER_MIN_CMAKE:
        problems.append(f"cmake_minimum_required {minimum} is below Slicer 5.10's {SLICER_MIN_CMAKE}")
    values = _cmake_set_values(text)
    fields = dict(CMAKE_TO_S4EXT, **({"STATUS": "status"} if "EXTENSION_STATUS" in values else {}))
    for field, key in fields.items():
        ours = values.get(f"EXTENSION_{field}")
        if not ours:
            problems.append(f"EXTENSION_{field} is not set")
        elif field == "DEPENDS":
            if _dependency_list(ours) != _dependency_list(s4ext.get(key, "NA")):
                problems.append(f"EXTENSION_DEPENDS {ours!r} but the .s4ext depends {s4ext.get(key)!r}")
            if _dependency_list(ours) != entry.get("build_dependencies", []):
                problems.append(f"EXTENSION_DEPENDS {ours!r} but the .json build_dependencies {entry.get('build_dependencies')}")
        elif ours != s4ext.get(key):
            problems.append(f"EXTENSION_{field} {ours!r} but the .s4ext {key} {s4ext.get(key)!r}")
    if values.get("EXTENSION_CATEGORY") and values["EXTENSION_CATEGORY"] != entry.get("category"):
        problems.append(f"EXTENSION_CATEGORY {values['EXTENSION_CATEGORY']!r} but the .json category {entry.get('category')!r}")
    # offline stand-in for the index's image-URL download: the project's raw URLs name files of this repository
    for field in ("ICONURL", "SCREENSHOTURLS"):
        for url in values.get(f"EXTENSION_{field}", "").split():
            if url.startswith(PROJECT_RAW_URL) and not (root / url[len(PROJECT_RAW_URL):]).is_file():
                problems.append(f"EXTENSION_{field} names {url[len(PROJECT_RAW_URL):]}, which is not in the repository")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# 4. Resources/ reaches exactly one install rule
#
# A model of what CMake does with the three CMakeLists.txt files, enough for this project: set(), add_subdirectory(),
# slicerMacroBuildScriptedModule() (RESOURCES copied to DESTINATION_DIR; one install(DIRECTORY) of DESTINATION_DIR,
# which is the whole qt-scripted-modules build folder without WITH_SUBDIR and qt-scripted-modules/<folder> with it:
# SlicerMacroBuildScriptedModule.cmake + ctkMacroCompilePythonScript.cmake), "cmake -E copy_directory|copy" commands
# of custom targets, file(COPY), configure_file() and install(DIRECTORY|FILES|PROGRAMS). Paths are "src/..." and
# "build/...". A file that reaches two rules is installed twice; one that reaches none is not shipped.

QT_SCRIPTED = "lib/Slicer-5.10/qt-scripted-modules"
_TOKEN = re.compile(r'#[^\n]*|"(?:\\.|[^"\\])*"|\(|\)|[^\s()#"]+')


def cmake_commands(text: str) -> list[tuple[str, list[tuple[str, bool]]]]:
    """(lowercase command name, [(argument, quoted)]) of each call, comments dropped."""
    commands: list[tuple[str, list[tuple[str, bool]]]] = []
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith("#")]
    i = 0
    while i < len(tokens):
        if i + 1 < len(tokens) and tokens[i + 1] == "(" and re.fullmatch(r"\w+", tokens[i]):
            name, depth, args = tokens[i].lower(), 1, []
            i += 2
            while i < len(tokens) and depth:
                token = tokens[i]
                depth += {"(": 1, ")": -1}.get(token, 0)
                if depth and token not in "()":
                    args.append((token[1:-1], True) if token.startswith('"') else (token, False))
                i += 1
            commands.append((name, args))
        else:
            i += 1
    return commands


def _expand(args: list[tuple[str, bool]], variables: dict[str, str]) -> list[str]:
    values = []
    for arg, quoted in args:
        for _ in range(5):
            arg = re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), arg)
        values += [arg] if quoted else [v for v in arg.split(";") if v]
    return values


def _norm(path: str) -> str:
    return posixpath.normpath(path)


@dataclass
class InstallModel:
    copies: list[tuple[str, str, bool]]  # (from, to, is a directory)
    rules: list[tuple[str, str]]  # (label, installed source path)
    resources: list[str]  # RESOURCES of the scripted modules, as src/... paths


def install_model(root: Path) -> InstallModel:
    model = InstallModel([], [], [])
    pending = ["."]
    while pending:
        folder = pending.pop(0)
        source, build = _norm(f"src/{folder}"), _norm(f"build/{folder}")
        variables = {
            "CMAKE_SOURCE_DIR": "src", "CMAKE_BINARY_DIR": "build", "CMAKE_CURRENT_SOURCE_DIR": source,
            "CMAKE_CURRENT_BINARY_DIR": build, "CMAKE_COMMAND": "cmake", "Slicer_QTSCRIPTEDMODULES_LIB_DIR": QT_SCRIPTED,
            "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR": QT_SCRIPTED,
        }
        label = f"{folder}/CMakeLists.txt".removeprefix("./")

        def here(path: str, source: str = source) -> str:
            """A path relative to the current source folder, as CMake reads one."""
            return _norm(path if path.startswith(("src/", "build/")) else f"{source}/{path}")

        for name, raw in cmake_commands((root / folder / "CMakeLists.txt").read_text(encoding="utf-8")):
            args = _expand(raw, variables)
            if name == "set" and args:
                variables[args[0]] = ";".join(args[1:])
            elif name == "add_subdirectory":
                pending.append(_norm(f"{folder}/{args[0]}"))
            elif name == "slicermacrobuildscriptedmodule":
                words = {"NAME", "SCRIPTS", "RESOURCES", "WITH_SUBDIR", "WITH_GENERIC_TESTS", "VERBOSE"}
                groups: dict[str, list[str]] = {}
                key = ""
                for arg in args:
                    key = arg if arg in words else key
                    groups.setdefault(key, []).extend([] if arg in words else [arg])
                destination = f"build/{QT_SCRIPTED}" + (f"/{posixpath.basename(source)}" if "WITH_SUBDIR" in groups else "")
                for resource in groups.get("RESOURCES", []):
                    model.resources.append(here(resource))
                    model.copies.append((here(resource), _norm(f"{destination}/{resource}"), False))
                model.rules.append((f"slicerMacroBuildScriptedModule({groups.get('NAME', ['?'])[0]}) in {label}", destination))
            elif name in ("add_custom_target", "add_custom_command"):
                for i, arg in enumerate(args[:-2]):
                    if arg == "-E" and args[i + 1] in ("copy_directory", "copy") and i + 3 < len(args):
                        model.copies.append((here(args[i + 2]), here(args[i + 3]), args[i + 1] == "copy_directory"))
            elif name == "file" and args[:1] == ["COPY"] and "DESTINATION" in args:
                target = here(args[args.index("DESTINATION") + 1])
                for item in args[1:args.index("DESTINATION")]:  # "dir/" copies the folder's contents, "dir" the folder
                    model.copies.append((here(item), target if item.endswith("/") else f"{target}/{posixpath.basename(here(item))}", True))
            elif name == "configure_file" and len(args) >= 2:
                model.copies.append((here(args[0]), here(args[1]), False))
            elif name == "install" and args[:1] and args[0] in ("DIRECTORY", "FILES", "PROGRAMS"):
                stop = next((i for i, a in enumerate(args) if a in ("DESTINATION", "TYPE", "COMPONENT")), len(args))
                for item in args[1:stop]:
                    model.rules.append((f"install({args[0]} {item}) in {label}", here(item)))
    return model


def _locations(path: str, copies: list[tuple[str, str, bool]]) -> set[str]:
    """Where a source file ends up before installation: itself and every build-tree copy of it."""
    found = {path}
    for _ in range(len(copies) + 1):
        new = set(found)
        for origin, target, is_directory in copies:
            for place in found:
                if place == origin:
                    new.add(target)
                elif is_directory and place.startswith(origin + "/"):
                    new.add(_norm(f"{target}/{place[len(origin) + 1:]}"))
        if new == found:
            break
        found = new
    return found


def resource_install_problems(root: Path) -> list[str]:
    model = install_model(root)
    resources = model.resources + sorted(
        f"src/{p.relative_to(root).as_posix()}" for p in (root / "Resources").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    problems = []
    builds: dict[str, str] = {}
    for resource in resources:
        places = _locations(resource, model.copies)
        for place in places - {resource}:
            if builds.setdefault(place, resource) != resource:
                problems.append(f"{resource} and {builds[place]} are both copied to {place}")
        reached = [label for label, installed in model.rules if any(p == installed or p.startswith(installed + "/") for p in places)]
        if len(reached) != 1:
            problems.append(f"{resource.removeprefix('src/')} reaches {len(reached)} install rules: {reached}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# 5. The Slicer module files: no heavy import, no code run at import

#: The brief's list of packages that must not be imported at file scope of the module files.
HEAVY_AT_IMPORT = {"torch", "monai", "nibabel", "SimpleITK", "scipy", "safetensors", "PIL"}
LIBRARY_GUARD = "importlib.util.find_spec('DiffDefAtlasLib') is None"


def _static_test_heavy_modules() -> set[str]:
    """HEAVY_MODULES of test_slicer_module_static.py (read, not imported): those it checks already."""
    tree = ast.parse((ROOT / "Testing" / "test_slicer_module_static.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "HEAVY_MODULES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _module_files(root: Path) -> list[Path]:
    return [root / "DiffDefAtlas" / "DiffDefAtlas.py", *sorted((root / "DiffDefAtlas" / "DiffDefAtlasModuleLib").glob("*.py"))]


def _file_scope(body: list[ast.stmt]):
    """Statements run on import: the module body and the bodies of its if/try/with/class blocks, not functions."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _file_scope([c for c in getattr(node, field, []) if isinstance(c, ast.stmt)])
        for handler in getattr(node, "handlers", []):
            yield from _file_scope(handler.body)


def _is_constant_assignment(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    try:
        ast.literal_eval(value)
    except ValueError:
        return False
    return all(isinstance(t, ast.Name) for t in targets)


def _is_library_guard(node: ast.stmt) -> bool:
    """The one ``if importlib.util.find_spec("DiffDefAtlasLib") is None:`` block: imports and addLibraryToPath(...)."""
    if not (isinstance(node, ast.If) and ast.unparse(node.test) == LIBRARY_GUARD and not node.orelse):
        return False
    return all(
        isinstance(s, (ast.Import, ast.ImportFrom))
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and getattr(s.value.func, "id", "") == "addLibraryToPath")
        for s in node.body
    )


def module_import_problems(root: Path) -> list[str]:
    heavy = HEAVY_AT_IMPORT - _static_test_heavy_modules()  # the rest: test_no_heavy_import_at_file_scope
    problems = []
    for path in _module_files(root):
        body = ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body
        name = path.relative_to(root).as_posix()
        for node in _file_scope(body):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            problems += [f"{name} line {node.lineno}: imports {n} at file scope" for n in names if n.split(".")[0] in heavy]
        guards = 0
        for index, node in enumerate(body):
            docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            guards += _is_library_guard(node)
            allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            if not (isinstance(node, allowed) or docstring or _is_constant_assignment(node) or (_is_library_guard(node) and guards == 1)):
                problems.append(f"{name} line {node.lineno}: runs at import: {ast.unparse(node).splitlines()[0]}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# helpers for the negative tests: a copy of the project's packaging files in tmp_path

PACKAGING_FILES = ["CMakeLists.txt", "DiffDefAtlas.json", "DiffDefAtlas.s4ext", "LICENSE", "DiffDefAtlas/CMakeLists.txt",
                   "DiffDefAtlasLib/CMakeLists.txt", "DiffDefAtlas/Resources/Icons/DiffDefAtlas.png",
                   "docs/images/slicer_atlas_jacobian.png"]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The packaging files, the module files and a stand-in Resources/ (two small files)."""
    for name in PACKAGING_FILES + [p.relative_to(ROOT).as_posix() for p in _module_files(ROOT)]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    for name in ("models/brain3d/model_card.json", "template/template.json"):
        (tmp_path / "Resources" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "Resources" / name).write_text("{}")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}: the negative test needs updating"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _edit_json(path: Path, **changes) -> None:
    entry = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    path.write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# the checks on this checkout


def test_catalog_entry_passes_the_index_checks():
    assert catalog_problems(ROOT) == []


def test_s4ext_agrees_with_the_catalog_entry():
    assert s4ext_problems(ROOT) == []


def test_top_level_cmake_meets_slicer_510_and_agrees_with_the_descriptions():
    assert cmake_problems(ROOT) == []


def test_each_resource_reaches_exactly_one_install_rule():
    model = install_model(ROOT)
    assert len(model.rules) >= 2 and model.resources, "the CMake model found no scripted modules"
    assert resource_install_problems(ROOT) == []


def test_module_files_import_nothing_heavy_and_run_nothing_at_import():
    assert module_import_problems(ROOT) == []


# ----------------------------------------------------------------------------------------------------------------
# negative tests: each check fails on a broken copy


@pytest.mark.parametrize(("change", "expected"), [
    ({"category": "Brain Atlases"}, "ACCEPTED_EXTENSION_CATEGORIES"),
    ({"scm_url": None}, "'scm_url' is a required property"),
    ({"enabled": "yes"}, "is not of type 'boolean'"),
    ({"tier": 7}, "maximum"),
    ({"tier": True}, "is not of type 'integer'"),
    ({"scm_type": "svn"}, "is not one of"),
    ({"build_dependencies": [1]}, "is not of type 'string'"),
    ({"status": "Beta"}, "'status'"),
    ({"build_dependencies": ["MONAIAuto3DSeg"]}, "not an extension checked"),
    ({"scm_url": "ftp://example.org/SlicerDiffDefAtlas.git"}, "git:// or https://"),
    ({"scm_url": "https://github.com/diffdefatlas/DiffDefAtlas.git"}, "must start with 'Slicer'"),
    ({"$schema": "https://example.org/schema.json"}, "not a published"),
])
def test_catalog_check_fails_on_a_broken_entry(project_copy, change, expected):
    _edit_json(project_copy / "DiffDefAtlas.json", **change)
    problems = catalog_problems(project_copy)
    assert any(expected in p for p in problems), problems


def test_catalog_check_fails_on_crlf_and_a_wrong_project_name(project_copy):
    entry = project_copy / "DiffDefAtlas.json"
    entry.write_bytes(entry.read_bytes().replace(b"\n", b"\r\n"))
    _edit(project_copy / "CMakeLists.txt", "project(DiffDefAtlas)", "project(SlicerDiffDefAtlas)")
    _edit(project_copy / "CMakeLists.txt", 'slicer_atlas_jacobian.png")', 'slicer_atlas_jacobian.png" )')  # the index's screenshot pattern wants ") at once
    problems = " | ".join(catalog_problems(project_copy))
    assert "line endings" in problems and "project() name" in problems and "EXTENSION_SCREENSHOTURLS" in problems


def test_hand_rules_agree_with_jsonschema():
    """Where jsonschema is importable, the hand validator finds a problem exactly where jsonschema does."""
    jsonschema = pytest.importorskip("jsonschema")
    good = json.loads((ROOT / "DiffDefAtlas.json").read_text(encoding="utf-8"))
    cases = [good, {**good, "tier": 0}, {**good, "tier": 2.5}, {**good, "enabled": 1}, {**good, "extra": 1},
             {k: v for k, v in good.items() if k != "category"}, {**good, "build_dependencies": "PyTorch"}, []]
    for case in cases:
        assert bool(_hand_validate(case, CATALOG_SCHEMA)) == (not jsonschema.Draft7Validator(CATALOG_SCHEMA).is_valid(case)), case


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("scmrevision main", "scmrevision v1.0", "scmrevision"),
    ("depends PyTorch", "depends NA", "depends"),
    ("category Registration", "category Segmentation", "category"),
    ("enabled 1", "enabled 0", "enabled"),
    ("scmurl https://github.com/diffdefatlas/SlicerDiffDefAtlas.git", "scmurl https://github.com/x/SlicerDiffDefAtlas.git", "scmurl"),
])
def test_s4ext_check_fails_when_it_disagrees(project_copy, old, new, expected):
    _edit(project_copy / "DiffDefAtlas.s4ext", old, new)
    problems = s4ext_problems(project_copy)
    assert any(p.startswith(f".s4ext {expected} ") for p in problems), problems


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("VERSION 3.20.6...3.22.6", "VERSION 3.16.3...3.19.7", "cmake_minimum_required"),
    ('set(EXTENSION_CONTRIBUTORS "DiffDefAtlas developers")', "", "EXTENSION_CONTRIBUTORS is not set"),
    ('set(EXTENSION_DEPENDS "PyTorch")', 'set(EXTENSION_DEPENDS "NA")', "EXTENSION_DEPENDS"),
    ('set(EXTENSION_CATEGORY "Registration")', 'set(EXTENSION_CATEGORY "Utilities")', "EXTENSION_CATEGORY"),
    ('set(EXTENSION_STATUS "Beta")', 'set(EXTENSION_STATUS "Stable")', "EXTENSION_STATUS"),
    ("(Diff-Def): set age", "(Diff-Def), set age", "EXTENSION_DESCRIPTION"),
    ("docs/images/slicer_atlas_jacobian.png", "docs/images/missing.png", "not in the repository"),
])
def test_cmake_check_fails_on_a_broken_top_level_cmake(project_copy, old, new, expected):
    _edit(project_copy / "CMakeLists.txt", old, new)
    problems = cmake_problems(project_copy)
    assert any(expected in p for p in problems), problems


LIBRARY_RESOURCE_COPY = '"${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources"'


@pytest.mark.parametrize(("new", "expected"), [
    # installed a second time by a rule of its own
    (LIBRARY_RESOURCE_COPY + ')\ninstall(DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/../Resources/" DESTINATION x)\n#', "reaches 2"),
    # the layout before issue 18: copied into DiffDefAtlasLib/Resources, plus its own install(): three times
    ('"${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/${MODULE_NAME}/Resources")\n'
     'install(DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/../Resources/" DESTINATION x COMPONENT RuntimeLibraries)\n#', "reaches 3"),
    # copied outside every installed folder: not shipped at all
    ('"${CMAKE_BINARY_DIR}/share/Resources"', "reaches 0"),
])
def test_resource_check_fails_when_a_resource_ships_twice_or_never(project_copy, new, expected):
    _edit(project_copy / "DiffDefAtlasLib" / "CMakeLists.txt", LIBRARY_RESOURCE_COPY, new)
    problems = resource_install_problems(project_copy)
    assert any("Resources/models/brain3d/model_card.json " + expected in p for p in problems), problems


def test_resource_check_fails_when_two_files_land_on_one_build_path(project_copy):
    (project_copy / "Resources" / "Icons").mkdir()
    (project_copy / "Resources" / "Icons" / "DiffDefAtlas.png").write_bytes(b"another icon")
    problems = resource_install_problems(project_copy)
    assert any("are both copied to" in p for p in problems), problems


@pytest.mark.parametrize(("file", "addition", "expected"), [
    ("DiffDefAtlas/DiffDefAtlas.py", "from PIL import Image\n", "imports PIL at file scope"),
    ("DiffDefAtlas/DiffDefAtlasModuleLib/AtlasNodes.py", "try:\n    import PIL.Image\nexcept ImportError:\n    pass\n", "imports PIL.Image"),
    ("DiffDefAtlas/DiffDefAtlas.py", "logger = logging.getLogger(__name__)\n", "runs at import: logger ="),
    ("DiffDefAtlas/DiffDefAtlasModuleLib/OverlayDisplay.py", "print('loaded')\n", "runs at import: print"),
    ("DiffDefAtlas/DiffDefAtlasModuleLib/LibraryPath.py", "if True:\n    import os\n", "runs at import: if True"),
    ("DiffDefAtlas/DiffDefAtlas.py", "if importlib.util.find_spec('DiffDefAtlasLib') is None:\n    import sys\n", "runs at import: if importlib"),
    ("DiffDefAtlas/DiffDefAtlas.py", "'''a second string'''\n", "runs at import"),
])
def test_module_check_fails_on_heavy_imports_and_import_time_code(project_copy, file, addition, expected):
    path = project_copy / file
    path.write_text(path.read_text(encoding="utf-8") + "\n" + addition, encoding="utf-8")
    problems = module_import_problems(project_copy)
    assert any(expected in p for p in problems), problems


def test_module_check_takes_over_the_heavy_names_the_static_test_drops(project_copy, monkeypatch):
    """torch & co. are reported by test_no_heavy_import_at_file_scope, not twice; should its HEAVY_MODULES lose
    them (or be renamed), this check reports them instead."""
    assert {"torch", "monai"} <= _static_test_heavy_modules()
    path = project_copy / "DiffDefAtlas" / "DiffDefAtlas.py"
    path.write_text(path.read_text(encoding="utf-8") + "\nimport torch\n", encoding="utf-8")
    assert not any("imports torch" in p for p in module_import_problems(project_copy))
    monkeypatch.setattr(sys.modules[__name__], "_static_test_heavy_modules", set)
    assert any("imports torch at file scope" in p for p in module_import_problems(project_copy))


# ----------------------------------------------------------------------------------------------------------------
# scripts/repo_size.py on a tiny repository


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org",
                    "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args], check=True, capture_output=True)


def _run_repo_size(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_SIZE_SCRIPT), "--repo", str(repo), *args], capture_output=True, text=True)


def _figure(output: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}: ([0-9.]+) MB", output, re.M)
    assert match, f"{label!r} not in:\n{output}"
    return float(match.group(1))


def test_repo_size_reports_a_tiny_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "weights.bin").write_bytes(random.Random(0).randbytes(512 * 1024))  # 0.50 MB that zlib cannot shrink
    (repo / "card.json").write_text("{}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one weight file")
    within = _run_repo_size(repo)
    assert within.returncode == 0, within.stdout + within.stderr
    out = within.stdout
    assert _figure(out, "working tree (tracked files)") == 0.50
    assert 0.49 <= _figure(out, ".git loose objects (size)") <= 0.53  # just committed: loose objects, incompressible
    assert re.search(r"^blobs in history: 2, 0\.50 MB uncompressed$", out, re.M)
    assert _figure(out, "2 largest blobs in history") == 0.50
    assert re.search(r"^\s+0\.50 MB  weights\.bin$", out, re.M) and re.search(r"^\s+0\.00 MB  card\.json$", out, re.M)
    assert "of the 100 MB limit" in out and "within the limit" in out
    assert 0.99 <= _figure(out, "total (.git + working tree)") <= 1.03  # .git + working tree: the weights twice
    over = _run_repo_size(repo, "--limit-mb", "0.1")
    assert over.returncode == 1 and "OVER LIMIT" in over.stdout and "of the 0.1 MB limit" in over.stdout
    _git(repo, "gc", "-q")  # now packed: size-pack counts it, no loose objects left
    packed = _run_repo_size(repo, "--top", "1").stdout
    assert 0.49 <= _figure(packed, ".git pack (size-pack)") <= 0.53 and _figure(packed, ".git loose objects (size)") == 0
    assert re.search(r"^1 largest blobs in history: 0\.50 MB", packed, re.M) and "card.json" not in packed
