"""The wheel carries the Lua sources: an installed pyredislua renders without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pyredislua
from pyredislua.engine.render import lua_root

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_lua_and_renders_from_it(tmp_path: Path) -> None:
    if not (REPO / "pyproject.toml").exists():
        pytest.skip("not running from a source checkout")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("pyredislua-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.relative_to(lua_root()).as_posix() for p in lua_root().rglob("*.lua"))
    assert sources and all(f"pyredislua/lua/{s}" in names for s in sources)
    assert "pyredislua/py.typed" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import pyredislua; from pyredislua.engine.render import lua_root, render_library;"
            "print(lua_root()); print(render_library().sha)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": str(site)}, timeout=60)
    assert shown.returncode == 0, shown.stderr
    where, sha = shown.stdout.split()
    assert where.startswith(str(site))
    assert sha == pyredislua.render_library().sha
