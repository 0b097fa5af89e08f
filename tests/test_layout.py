"""The layout docs/layout.md draws: which folder may import which, and no import circle anywhere (imports
inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nst_engine", "daemon", "gimp_plugin")
# What each folder may import of the project's own code (beyond itself); docs/layout.md says why.
MAY_IMPORT = {
    "nst_engine": (),
    "daemon.wire": ("nst_engine.schema", "nst_engine.settings", "nst_engine.errors"),
    "daemon.client": ("daemon.wire", "nst_engine.schema", "nst_engine.settings", "nst_engine.errors"),
    "daemon.server": ("daemon.wire", "nst_engine"),
    "daemon.__main__": ("daemon.wire", "daemon.client", "daemon.server", "nst_engine"),
    "gimp_plugin": ("daemon.wire", "daemon.client", "nst_engine.schema", "nst_engine.settings"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The project modules ``path`` imports, by their full names (the plug-in's own by their folder's)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    if name.startswith("gimp_plugin"):  # GIMP runs the plug-in from its own folder: "import arguments"
        local = {file.stem for file in (REPO_ROOT / "gimp_plugin").glob("*.py")}
        found = {f"gimp_plugin.{module}" if module.partition(".")[0] in local else module for module in found}
    # An empty package __init__ (daemon, daemon.wire…) imports nothing and defines nothing.
    return {module for module in found if module.partition(".")[0] in PACKAGES and module_file(module)
            and module_file(module).stat().st_size}


def module_file(module: str) -> Path | None:
    path = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_modules() -> dict[str, set[str]]:
    files = [file for package in PACKAGES for file in (REPO_ROOT / package).rglob("*.py") if file.stat().st_size]
    return {module_name(file): imported_modules(file) for file in files}


def folder_of(module: str) -> str:
    for folder in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == folder or module.startswith(folder + "."):
            return folder
    raise AssertionError(f"{module} lies in no folder of docs/layout.md")


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_folder_imports_only_what_the_layout_allows(folder):
    wrong = []
    for module, imports in project_modules().items():
        if folder_of(module) != folder:
            continue
        for target in imports:
            own = folder_of(target) == folder
            if not own and not any(target == allowed or target.startswith(allowed + ".")
                                   for allowed in MAY_IMPORT[folder]):
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_import_circle():
    graph = {module: {target for target in imports if target in project_modules_cache()}
             for module, imports in project_modules_cache().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " → ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            if target != module and not target.startswith(module + ".") and not module.startswith(target + "."):
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


_CACHE: dict[str, set[str]] = {}


def project_modules_cache() -> dict[str, set[str]]:
    if not _CACHE:
        _CACHE.update(project_modules())
    return _CACHE
