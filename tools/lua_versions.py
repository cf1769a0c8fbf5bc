#!/usr/bin/env python3
"""Keep Lua versions honest: every operation whose source changed must carry a new version.

    tools/lua_versions.py --check    (CI, via tests/test_engine.py): compare lua/ with lua/VERSIONS
    tools/lua_versions.py --update   record the current versions and source digests

lua/VERSIONS lists, per operation, its version and a digest of the code it renders to (its
validation prologue and body, not the prose of its header); and the library version with a digest
of everything. Changing what an operation runs without bumping its version (and the library's)
fails the check, so a server never holds two different builds under one version. Editing only the
header's documentation needs no bump.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyredislua.engine.render import render_library  # noqa: E402

LUA = ROOT / "lua"
RECORD = LUA / "VERSIONS"


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def _code_digest(function_body: str) -> str:
    # the first line is a comment naming the operation's version: the version is not the code
    code = function_body.split("\n", 1)[1]
    return hashlib.sha1(code.encode()).hexdigest()[:16]


def current() -> dict[str, dict[str, str]]:
    lib = render_library(LUA)
    ops = {name: {"version": op.header.version, "source": _code_digest(op.function_body)}
           for name, op in sorted(lib.operations.items())}
    includes = {p.relative_to(LUA).as_posix(): _digest(p) for p in sorted(LUA.glob("includes/*"))}
    everything = hashlib.sha1(json.dumps([ops, includes], sort_keys=True).encode()).hexdigest()
    return {"library": {"version": lib.version, "source": everything[:16]}, **ops}


def problems(recorded: dict[str, dict[str, str]], now: dict[str, dict[str, str]]) -> list[str]:
    found = []
    for name, entry in now.items():
        old = recorded.get(name)
        if old and old["source"] != entry["source"] and old["version"] == entry["version"]:
            what = "lua/library.lua" if name == "library" else f"operation {name}"
            found.append(f"{what} changed but still says version {entry['version']}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="record the current state")
    args = parser.parse_args()
    now = current()
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    found = problems(recorded, now)
    if args.update:
        if found:
            print("\n".join(found), file=sys.stderr)
            print("bump those versions first", file=sys.stderr)
            return 1
        RECORD.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        return 0
    stale = [n for n in now if recorded.get(n) != now[n]]
    for line in found:
        print(line, file=sys.stderr)
    if not found and stale:
        print(f"lua/VERSIONS is out of date for {', '.join(stale)}: "
              "run tools/lua_versions.py --update", file=sys.stderr)
    return 1 if (found or stale) else 0


if __name__ == "__main__":
    sys.exit(main())
