"""The import contracts (docs/architecture.md, "Layers") hold on the tree, and fail on a breach.

`./dev test` runs `lint-imports` on the tree itself; this checks that the contracts can fail at all:
on a copy of the package with one lower layer importing a higher one, and with the product importing
the simulator outside the demo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, before the editable install of the worktree.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "monitor", tmp_path / "monitor", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def append(path: Path, line: str) -> None:
    with path.open("a") as file:
        file.write(f"\n{line}\n")


def test_the_contracts_hold_and_fail_on_a_breach(tree: Path) -> None:
    kept = lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert ", 0 broken." in kept.stdout

    append(tree / "monitor" / "graph" / "client.py", "import monitor.store")
    append(tree / "monitor" / "worker.py", "import monitor.simulator.clock")
    broken = lint_imports(tree)
    assert broken.returncode == 1
    assert "monitor.graph is not allowed to import monitor.store" in broken.stdout
    assert "monitor.worker -> monitor.simulator.clock" in broken.stdout
    assert ", 2 broken." in broken.stdout  # the layers, and the simulator for the demo only
