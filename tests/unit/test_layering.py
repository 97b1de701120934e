"""The import rules of docs/ARCHITECTURE.md, checked on every module of the package.

Every .py file of the repository root (the package `lora_studio`; tests/, benchmarks/, tools/ and
hidden folders skipped) is parsed with `ast`; every import — absolute, relative at any level, and the
`from . import x` form whose name is a submodule — is resolved to a module of the package or to an
outside top-level name, wherever it appears (module level, inside functions, under TYPE_CHECKING).

Layers, from the top: entries (root __init__, __main__, cli, app, comfyui_host, studio) > adapters
(server_routes/, nodes/) > features (generation/, classification/, datasets/, the training studio side:
training/service.py, catalog.py, worker_client.py, request.py) > core/ ; the training engine (every
other training/ module) is an island used by features and adapters.

Rules:
  R1 core imports no feature package, no training module, no adapter and no entry;
  R2 features import no adapter and no entry;
  R3 the engine imports only the standard library, the ML libraries in ENGINE_LIBRARIES and the engine;
  R4 adapters import no entry (a TYPE_CHECKING import of `studio`, to type the composition root, is fine);
  R5 nothing but the entries imports ComfyUI's modules (server, folder_paths, comfy, execution,
     top-level `nodes`, ...). One allowance: nodes/ — ComfyUI node adapters, which only run inside
     ComfyUI's executor — may import ComfyUI's executor modules inside functions (the progress bar,
     the interrupt, the running prompt's id), never at module level.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"tests", "benchmarks", "tools", "web", "docs", "build", "dist", "__pycache__"}

ENTRIES = {(), ("__main__",), ("cli",), ("app",), ("comfyui_host",), ("studio",)}
FEATURES = {"generation", "classification", "datasets"}
ADAPTERS = {"server_routes", "nodes"}
TRAINING_STUDIO_SIDE = {"service", "catalog", "worker_client", "request"}
ENGINE_LIBRARIES = {"torch", "diffusers", "peft", "transformers", "safetensors", "numpy", "PIL",
                    "bitsandbytes", "triton"}
COMFYUI_MODULES = {"server", "folder_paths", "comfy", "comfy_extras", "comfy_execution", "comfy_api",
                   "comfy_config", "execution", "nodes", "node_helpers", "latent_preview"}
NODE_RUNTIME = {"comfy", "comfy_execution", "server"}  # what nodes/ may import lazily (R5's allowance)
PACKAGE = "lora_studio"

Module = tuple[str, ...]  # ("core", "db"); () is the root package


@dataclass(frozen=True)
class Import:
    source: Module
    line: int
    internal: Module | None  # the package module it resolves to, or None for an outside module
    external: str | None  # the outside top-level name (None when internal)
    lazy: bool  # inside a function
    type_only: bool  # under `if TYPE_CHECKING:`
    text: str


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.text}"


def layer(mod: Module) -> str:
    if mod in ENTRIES:
        return "entry"
    head = mod[0]
    if head == "core":
        return "core"
    if head in ADAPTERS:
        return "adapter"
    if head in FEATURES:
        return "feature"
    if head == "training":
        return "feature" if len(mod) > 1 and mod[1] in TRAINING_STUDIO_SIDE else "engine"
    return "unknown"


def module_name(path: Path, root: Path) -> tuple[Module, bool]:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        return tuple(parts[:-1]), True
    return tuple(parts), False


def discover(root: Path) -> dict[Module, tuple[Path, bool]]:
    found: dict[Module, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in rel[:-1]):
            continue
        mod, is_pkg = module_name(path, root)
        found[mod] = (path, is_pkg)
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, lazy: bool = False, type_only: bool = False):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy, type_only
        child_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, ast.If) and _type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), child_lazy, True)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), child_lazy, type_only)
            continue
        yield from _walk(child, child_lazy, type_only)


def resolve(source: Module, is_pkg: bool, tree: ast.AST, known: set[Module]) -> list[Import]:
    """Every import of one module, resolved. `known` is the set of the package's modules (to tell a
    submodule named in `from X import name` from an attribute of X)."""
    out: list[Import] = []
    package = source if is_pkg else source[:-1]
    for node, lazy, type_only in _walk(tree):
        text = ast.unparse(node)

        def add(internal: Module | None, external: str | None, node=node, lazy=lazy, type_only=type_only,
                text=text) -> None:
            out.append(Import(source, node.lineno, internal, external, lazy, type_only, text))

        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = tuple(alias.name.split("."))
                if parts[0] == PACKAGE:
                    add(parts[1:], None)
                else:
                    add(None, parts[0])
            continue
        if node.level == 0:
            parts = tuple((node.module or "").split("."))
            if parts[0] != PACKAGE:
                add(None, parts[0])
                continue
            base = parts[1:]
        else:
            up = node.level - 1
            if up > len(package):
                add(("<beyond the package>",), None)
                continue
            base = package[: len(package) - up] + (tuple(node.module.split(".")) if node.module else ())
        targets: list[Module] = []  # one per resolved module: `from .x import a, b` is one import of x
        for alias in node.names:
            sub = base + (alias.name,)
            target = sub if sub in known else base
            if target not in targets:
                targets.append(target)
                add(target, None)
    return out


def check(modules: dict[Module, tuple[str, bool]]) -> list[Violation]:
    """modules: module -> (source text, is_package). Returns every broken rule."""
    known = set(modules)
    violations: list[Violation] = []
    for source, (text, is_pkg) in modules.items():
        path = "/".join(source) + ("/__init__.py" if is_pkg else ".py") if source else "__init__.py"
        src_layer = layer(source)
        if src_layer == "unknown":
            violations.append(Violation(path, 1, "unclassified", "a module outside the known layers: "
                                        "add it to a layer in tests/unit/test_layering.py and docs/ARCHITECTURE.md"))
            continue
        for imp in resolve(source, is_pkg, ast.parse(text), known):
            def bad(rule: str, why: str, imp=imp, path=path) -> None:
                violations.append(Violation(path, imp.line, rule, f"{imp.text}  ({why})"))

            if imp.internal is not None:
                if imp.internal and imp.internal[0] == "<beyond the package>":
                    bad("resolve", "a relative import beyond the package")
                    continue
                dst = layer(imp.internal) if imp.internal else "entry"
                target = ".".join(imp.internal) or "the root package"
                if src_layer == "core" and dst != "core":
                    bad("R1", f"core imports {dst} {target}")
                elif src_layer == "feature" and dst in ("adapter", "entry"):
                    bad("R2", f"a feature imports {dst} {target}")
                elif src_layer == "engine" and dst != "engine":
                    bad("R3", f"the training engine imports {dst} {target}")
                elif src_layer == "adapter" and dst == "entry" and not (imp.type_only and imp.internal == ("studio",)):
                    bad("R4", f"an adapter imports entry {target}")
                continue
            name = imp.external or ""
            if name in COMFYUI_MODULES and src_layer != "entry":
                allowed = source[0] == "nodes" and name in NODE_RUNTIME and imp.lazy
                if not allowed:
                    bad("R5", f"{src_layer} imports ComfyUI's {name}")
            elif src_layer == "engine" and name not in sys.stdlib_module_names and name not in ENGINE_LIBRARIES \
                    and name != "__future__":
                bad("R3", f"the training engine imports {name}, neither stdlib nor an ML library")
    return violations


def load_tree(root: Path) -> dict[Module, tuple[str, bool]]:
    return {mod: (path.read_text(encoding="utf-8"), is_pkg) for mod, (path, is_pkg) in discover(root).items()}


# --------------------------------------------------------------------------- the package itself


def test_the_package_follows_the_import_rules() -> None:
    violations = check(load_tree(ROOT))
    assert not violations, "import rules broken (docs/ARCHITECTURE.md, 'Layers'):\n" + "\n".join(map(str, violations))


def test_every_package_is_seen() -> None:
    modules = discover(ROOT)
    heads = {m[0] for m in modules if m}
    assert {"core", "datasets", "training", "server_routes", "nodes"} <= heads, heads
    assert () in modules and ("studio",) in modules and ("comfyui_host",) in modules
    assert len(modules) >= 70, len(modules)
    engine = [m for m in modules if m and layer(m) == "engine"]
    assert {("training", "trainer"), ("training", "worker"), ("training", "config"), ("training", "data"),
            ("training", "cache")} <= set(engine), engine
    # every module's imports were parsed: the core database module is imported relatively by many
    known = set(modules)
    importers = {imp.source for mod, (path, is_pkg) in modules.items()
                 for imp in resolve(mod, is_pkg, ast.parse(path.read_text(encoding="utf-8")), known)
                 if imp.internal == ("core", "db")}
    assert len(importers) >= 5, importers


# --------------------------------------------------------------------------- the checker on synthetic trees


def _tree(**files: str) -> dict[Module, tuple[str, bool]]:
    """_tree(**{"training/trainer.py": "..."}) -> a module map with every package's __init__."""
    out: dict[Module, tuple[str, bool]] = {(): ("", True)}
    for rel, text in files.items():
        mod, is_pkg = module_name(ROOT / rel, ROOT)
        out[mod] = (text, is_pkg)
        for i in range(1, len(mod)):
            out.setdefault(mod[:i], ("", True))
    return out


def _rules(tree: dict[Module, tuple[str, bool]]) -> list[tuple[str, str, int]]:
    return [(v.path, v.rule, v.line) for v in check(tree)]


def test_checker_catches_relative_imports_up_the_layers() -> None:
    tree = _tree(**{
        "training/trainer.py": "def f():\n    from ...core import db\n",  # level 3: beyond training's parent
        "core/db.py": "x = 1\n",
        "core/jobs.py": "from ..server_routes import api\n",
        "server_routes/api.py": "x = 1\n",
    })
    # training/trainer.py: `from ...core` climbs out of the package (lora_studio has no parent)
    assert ("training/trainer.py", "resolve", 2) in _rules(tree)
    tree[("training", "trainer")] = ("def f():\n    from ..core import db\n", False)
    rules = _rules(tree)
    assert ("training/trainer.py", "R3", 2) in rules
    assert ("core/jobs.py", "R1", 1) in rules
    # one package deeper, three dots reach the root: training/models/arch.py -> core.db
    tree[("training", "models", "arch")] = ("from ...core import db\nfrom .. import errors\n", False)
    tree[("training", "models")] = ("", True)
    tree[("training", "errors")] = ("", False)
    rules = _rules(tree)
    assert ("training/models/arch.py", "R3", 1) in rules
    assert not [r for r in rules if r[0] == "training/models/arch.py" and r[2] == 2]  # the engine's own errors


def test_checker_resolves_submodule_names_and_absolute_package_imports() -> None:
    tree = _tree(**{
        "core/settings.py": "from .. import studio\n",  # the name is an entry module
        "studio.py": "",
        "datasets/review.py": "from ..nodes import context\nimport lora_studio.app\n",
        "nodes/context.py": "",
        "app.py": "",
        "training/kohya.py": "from . import config\nfrom .config import TrainConfig\nimport torch, sqlalchemy\n",
        "training/config.py": "",
        "training/service.py": "from ..core import db\nfrom . import kohya\nfrom ..datasets import review\n",
        "core/db.py": "",
    })
    rules = _rules(tree)
    assert ("core/settings.py", "R1", 1) in rules
    assert ("datasets/review.py", "R2", 1) in rules and ("datasets/review.py", "R2", 2) in rules
    assert [r for r in rules if r[0] == "training/kohya.py"] == [("training/kohya.py", "R3", 3)]  # sqlalchemy
    assert not [r for r in rules if r[0] == "training/service.py"]  # the studio side may use core and features


def test_checker_catches_comfyui_imports_below_the_entries() -> None:
    tree = _tree(**{
        "core/host.py": "def f():\n    import folder_paths\n",
        "datasets/gallery.py": "from server import PromptServer\n",
        "nodes/training.py": "import comfy.utils\ndef f():\n    import comfy.model_management\n    import folder_paths\n",
        "comfyui_host.py": "import folder_paths\nfrom server import PromptServer\n",
        "server_routes/meta.py": "from .. import nodes\nimport nodes\n",
        "nodes/__init__.py": "",
    })
    rules = _rules(tree)
    assert ("core/host.py", "R5", 2) in rules
    assert ("datasets/gallery.py", "R5", 1) in rules
    assert ("nodes/training.py", "R5", 1) in rules  # module level: never
    assert ("nodes/training.py", "R5", 4) in rules  # folder_paths is not the node runtime
    assert ("nodes/training.py", "R5", 3) not in rules  # lazy comfy.model_management: the allowance
    assert not [r for r in rules if r[0] == "comfyui_host.py"]
    # `from .. import nodes` is the package's own adapter package; `import nodes` is ComfyUI's
    assert [r for r in rules if r[0] == "server_routes/meta.py"] == [("server_routes/meta.py", "R5", 2)]


def test_checker_type_checking_and_unclassified_modules() -> None:
    tree = _tree(**{
        "nodes/context.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..studio import Studio\n"
                            "from ..app import create_app\n",
        "studio.py": "",
        "app.py": "",
        "core/jobs.py": "import typing\nif typing.TYPE_CHECKING:\n    from ..studio import Studio\n",
        "extras.py": "",
    })
    rules = _rules(tree)
    assert ("nodes/context.py", "R4", 4) in rules and ("nodes/context.py", "R4", 3) not in rules
    assert ("core/jobs.py", "R1", 3) in rules  # core may not even name the composition root
    assert ("extras.py", "unclassified", 1) in rules


@pytest.mark.parametrize("mod, expected", [
    ((), "entry"), (("cli",), "entry"), (("core", "db"), "core"), (("training", "service"), "feature"),
    (("training", "worker_client"), "feature"), (("training", "request"), "feature"), (("training", "worker"), "engine"),
    (("training",), "engine"), (("training", "config"), "engine"),
    (("training", "models", "arch"), "engine"), (("generation", "graph"), "feature"),
    (("server_routes", "api"), "adapter"), (("nodes",), "adapter"),
])
def test_layer_of_a_module(mod: Module, expected: str) -> None:
    assert layer(mod) == expected
