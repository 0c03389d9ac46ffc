"""The test suite on every supported CPython that is installed, plus the code checks.

    nox                    # lint, then tests on 3.8 to 3.13 (missing versions are skipped)
    nox -s "tests(3.12)"   # one version
    nox -s lint            # ruff and mypy only

Interpreters are looked up in pyenv's versions folder and on PATH. A pyenv shim that
answers "command not found" does not count as installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = False


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` that really runs, or None."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(int(p) for p in version.split("."))):
            return candidate
    return None


@nox.session(python=False)
@nox.parametrize("version", VERSIONS, ids=VERSIONS)
def tests(session: nox.Session, version: str) -> None:
    """The README's test suite in a fresh virtualenv of one Python version."""
    python = find_python(version)
    if python is None:
        session.skip(f"Python {version} is not installed (looked in pyenv's versions and on PATH)")
    venv = Path(".nox") / f"tests-{version}"
    session.run(python, "-m", "venv", "--clear", str(venv), external=True)
    bin_dir = venv / "bin"
    session.run(
        str(bin_dir / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-r",
        "requirements-dev.txt",
        external=True,
    )
    session.run(str(bin_dir / "python"), "-m", "pytest", "-q", *session.posargs, external=True)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check and mypy --strict on the scripts and the scale benchmark."""
    # The tools installed beside nox (requirements-dev.txt), whether or not that venv is active.
    session.run(sys.executable, "-m", "ruff", "check", ".", external=True)
    session.run(sys.executable, "-m", "ruff", "format", "--check", ".", external=True)
    scripts = ["retry.py", "train.py", "chains.py", "controller.py", "benchmarks/scale.py"]
    session.run(sys.executable, "-m", "mypy", "--strict", *scripts, external=True)
