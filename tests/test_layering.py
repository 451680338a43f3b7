"""The import rules between the parts, checked on the source (ast), so a violation fails before it ships.

- instantid/ is model code: never review, gradio, sqlite3/sqlite_utils or app.
- review/ uses instantid only through its public API (``from instantid import X`` with X exported).
- review/ui/ never touches torch internals (no torch/diffusers imports).
- SQL runs only in review/store/.
- nothing imports app.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import instantid

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def top(module: str) -> str:
    return module.split(".")[0]


def test_instantid_never_imports_the_study_or_the_web():
    for path in files("instantid"):
        bad = {m for m, _ in imports(path) if top(m) in {"review", "gradio", "sqlite3", "sqlite_utils", "app"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_review_uses_only_the_public_instantid_api():
    public = set(instantid.__all__)
    for path in files("review"):
        for module, names in imports(path):
            if top(module) != "instantid":
                continue
            assert module == "instantid", f"{path.relative_to(ROOT)} reaches into {module}"
            assert set(names) <= public, f"{path.relative_to(ROOT)} imports non-public {set(names) - public}"


def test_review_ui_never_touches_torch():
    for path in files("review/ui"):
        bad = {m for m, _ in imports(path) if top(m) in {"torch", "diffusers", "transformers"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_sql_runs_only_in_the_store():
    for path in [*files("review"), *files("instantid"), ROOT / "app.py"]:
        if not path.exists() or "store" in path.relative_to(ROOT).parts:
            continue
        bad = {m for m, _ in imports(path) if top(m) in {"sqlite3", "sqlite_utils"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: SQL belongs in review/store/"


def test_nothing_imports_app():
    for path in [*files("review"), *files("instantid"), *files("tests"), *files("scripts")]:
        assert "app" not in {m for m, _ in imports(path)}, f"{path.relative_to(ROOT)} imports app"


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from instantid.attention import FaceAttnProcessor\nimport gradio as gr\n")
    assert ("instantid.attention", ["FaceAttnProcessor"]) in imports(bad)
    assert ("gradio", []) in imports(bad)
