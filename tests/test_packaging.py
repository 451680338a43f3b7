"""The package builds, installs and runs: a wheel with both packages and the console scripts, installed with
``--no-deps`` into a scratch venv that also sees the test runner's packages (a full dependency install takes minutes);
``pip install -e .`` the same way; requirements files that match pyproject."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
TEST_TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "playwright", "ruff"}

pytestmark = pytest.mark.packaging


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _source_copy(tmp: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored), without tests, in a scratch folder."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=False)
    files = listed.stdout.split() if listed.returncode == 0 else [
        str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts]
    src = tmp / "src"
    for name in files:
        if name.startswith("tests/") or not (REPO / name).is_file():
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    return src


def _pip(*args: str, cwd: Path, python: str = sys.executable) -> None:
    done = subprocess.run([python, "-m", "pip", "--disable-pip-version-check", "-q", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def _scratch_venv(path: Path) -> Path:
    """A venv whose own site-packages come first, then (through a .pth file) this interpreter's packages:
    the dependencies and pip without installing them again."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    (purelib,) = path.glob("lib/python*/site-packages")
    (purelib / "_test_runner_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return path / "bin"


def _run(binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(binary), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), ".", cwd=src)
    (built,) = (tmp / "dist").glob("*.whl")
    return built


def test_wheel_holds_both_packages_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"instantid", "review"}
    for module in ("instantid/__main__.py", "instantid/engine.py", "review/__main__.py", "review/export/dataset.py",
                   "review/store/migrations.py", "review/ui/review_tab.py"):
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "data/")) or "/tests/" in n]


def test_wheel_metadata_declares_scripts_dependencies_and_test_extra(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "instantid = instantid.__main__:main" in entry_points
    assert "instantid-review = review.__main__:main" in entry_points
    metadata = archive.read(f"{info}/METADATA").decode()
    requires = {_name(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")
                and "extra ==" not in line}
    assert {"torch", "diffusers", "gradio", "sqlite-utils", "insightface", "pyarrow"} <= requires
    assert not requires & TEST_TOOLS
    assert "Provides-Extra: test" in metadata


def test_installed_wheel_runs_its_console_scripts(wheel: Path, tmp_path: Path) -> None:
    bin_dir = _scratch_venv(tmp_path / "venv")
    _pip("install", "--no-deps", str(wheel), cwd=tmp_path, python=str(bin_dir / "python"))
    where = _run(bin_dir / "python", "-c", "import review, instantid; print(review.__file__, instantid.__file__)",
                 cwd=tmp_path)
    assert where.returncode == 0 and str(tmp_path / "venv") in where.stdout, where.stdout + where.stderr
    for script, expected in (("instantid", "generate"), ("instantid-review", "export")):
        done = _run(bin_dir / script, "--help", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout and "example" in done.stdout.lower()
        assert done.stderr == ""
    presets = _run(bin_dir / "instantid", "presets", "--json", cwd=tmp_path)
    assert presets.returncode == 0 and '"balanced"' in presets.stdout


def test_editable_install_imports_from_the_source_tree(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    bin_dir = _scratch_venv(tmp_path / "venv")
    _pip("install", "--no-deps", "--no-build-isolation", "-e", ".", cwd=src, python=str(bin_dir / "python"))
    done = _run(bin_dir / "python", "-c", "import review; print(review.__file__)", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == str(src / "review" / "__init__.py")
    assert _run(bin_dir / "instantid-review", "--help", cwd=tmp_path).returncode == 0


def test_requirements_are_the_runtime_and_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    space = {_name(r) for r in _requirements(REPO / "requirements.txt")}
    assert space == runtime
    assert not space & TEST_TOOLS
    dev = {_name(r) for r in _requirements(REPO / "requirements-dev.txt")}
    assert dev == {_name(r) for r in project["optional-dependencies"]["test"]}
    assert TEST_TOOLS <= dev
    gpu = {_name(r) for r in _requirements(REPO / "requirements-gpu.txt")}
    assert gpu == {"onnxruntime-gpu"}
