"""The import rules between the packages (docs/architecture.md), checked on the source with ``ast``.

Each rule is (the files it covers, the modules they must not import, why). Relative imports are resolved to
absolute names first, so ``from ..ui import x`` cannot slip past a rule. ``test_each_rule_catches_a_violation``
plants one offending import per rule and shows the checker reports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import instantid

ROOT = Path(__file__).resolve().parent.parent
WEB = ("gradio", "gradio_client", "fastapi", "starlette", "uvicorn")
TORCH = ("torch", "diffusers", "transformers", "accelerate")
SQL = ("sqlite3", "sqlite_utils")
REVIEW_CORE = ("review/generation", "review/study", "review/stats", "review/store", "review/export",
               "review/errors.py", "review/images.py", "review/spaces_env.py", "review/__init__.py")
INSTANTID_CORE_EXCEPT = ("instantid/bench", "instantid/cli", "instantid/__main__.py")

# (files covered, forbidden module prefixes, reason)
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (("instantid",), ("review", "app", "tools", *WEB, *SQL),
     "instantid/ is the engine: it knows nothing of the study, the web or SQL"),
    (("review", "tools"), ("app",), "app.py wires the parts; nothing imports it"),
    (("instantid", "review"), ("tools",), "tools/ (load harness) is outside the runtime packages"),
    (REVIEW_CORE, ("review.ui", "review.cli", *WEB),
     "the review core (generation, study, stats, store, export) knows nothing of the web page or command lines"),
    (("review/ui",), (*TORCH, "review.cli"), "review/ui/ is Gradio and HTTP code only: no torch, no command lines"),
    (("review/cli",), ("review.ui", *WEB), "command lines use the core, never the web page"),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted module name of a file under root (``review/ui/app.py`` -> ``review.ui.app``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for every import statement in a file, relative imports resolved."""
    name = module_name(path, root).split(".")
    package = name if path.name == "__init__.py" else name[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                if not node.module:  # ``from . import x``: x is a module of the package
                    found += [(f"{base}.{name}", []) for name in names]
                    continue
                found.append((module, names))
            elif node.module:
                found.append((node.module, names))
    return found


def covered(path: Path, scopes: tuple[str, ...], root: Path = ROOT) -> bool:
    """Whether a file lies under one of the scopes (folders or single files, relative to root)."""
    rel = path.relative_to(root).as_posix()
    return any(rel == scope or rel.startswith(scope.rstrip("/") + "/") for scope in scopes)


def forbidden(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a dotted module is one of the prefixes or inside one."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(paths: list[Path], root: Path = ROOT) -> list[str]:
    """Every import that breaks a rule, as 'file imports module: reason'."""
    found = []
    for path in paths:
        for scopes, banned, reason in RULES:
            if not covered(path, scopes, root):
                continue
            for module, _ in imports(path, root):
                if forbidden(module, banned):
                    found.append(f"{path.relative_to(root)} imports {module}: {reason}")
    return found


def files(*folders: str) -> list[Path]:
    """The Python files under the folders (or the single files) named, relative to ROOT."""
    out: list[Path] = []
    for folder in folders:
        target = ROOT / folder
        out += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return out


def test_every_package_keeps_its_import_rules():
    assert violations(files("instantid", "review", "tools")) == []


def test_instantid_core_never_imports_its_benchmark_or_command_lines():
    for path in files("instantid"):
        if covered(path, INSTANTID_CORE_EXCEPT):
            continue
        bad = {m for m, _ in imports(path) if forbidden(m, ("instantid.bench", "instantid.cli"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_review_uses_only_the_public_instantid_api():
    public = set(instantid.__all__)
    for path in files("review", "tools"):
        for module, names in imports(path):
            if module.split(".")[0] != "instantid":
                continue
            assert module == "instantid", f"{path.relative_to(ROOT)} reaches into {module}"
            assert set(names) <= public, f"{path.relative_to(ROOT)} imports non-public {set(names) - public}"


def test_sql_runs_only_in_the_store():
    for path in [*files("review", "instantid", "tools", "scripts"), ROOT / "app.py"]:
        if covered(path, ("review/store",)):
            continue
        bad = {m for m, _ in imports(path) if forbidden(m, SQL)}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: SQL belongs in review/store/"


def test_nothing_imports_app():
    for path in files("review", "instantid", "tests", "scripts", "tools"):
        assert "app" not in {m for m, _ in imports(path)}, f"{path.relative_to(ROOT)} imports app"


def test_the_architecture_document_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = {module_name(p) for p in files("instantid", "review", "tools") if p.name == "__init__.py"}
    missing = sorted(p for p in packages if f"`{p.replace('.', '/')}/`" not in text)
    assert not missing, f"docs/architecture.md does not describe {missing}"


@pytest.mark.parametrize(("where", "line"), [
    ("instantid/engine_x.py", "from review.study.trials import TrialSource\n"),
    ("instantid/engine_y.py", "import gradio as gr\n"),
    ("review/stats/x.py", "from ..ui import review_tab\n"),
    ("review/study/x.py", "from review.cli.common import error\n"),
    ("review/generation/x.py", "import starlette.routing\n"),
    ("review/ui/x.py", "import torch\n"),
    ("review/ui/y.py", "from review.cli import generate\n"),
    ("review/cli/x.py", "from review.ui.app import build_app\n"),
    ("review/x.py", "import app\n"),
    ("review/store/x.py", "from tools.loadtest.harness import run\n"),
])
def test_each_rule_catches_a_violation(tmp_path, where, line):
    planted = tmp_path / where
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(line)
    found = violations([planted], tmp_path)
    assert len(found) >= 1, f"{where}: {line!r} passed every rule"
