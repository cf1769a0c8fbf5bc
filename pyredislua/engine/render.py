"""Render ``lua/`` into standalone EVALSHA scripts and one Redis Functions library.

Pure: reads files, returns text. Nothing here talks to Redis.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from .header import Header, HeaderError, KeySetSpec, extract_header, parse_header, parse_keyset

LIBRARY_PREFIX = "pyredislua"
_LIB_VERSION = re.compile(r"^version:\s*(\d+\.\d+\.\d+)\s*$", re.M)


def lua_root() -> Path:
    """Where the Lua sources are: inside the installed package, else the source tree."""
    packaged = resources.files("pyredislua") / "lua"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[2] / "lua"
    if source.is_dir():
        return source
    raise FileNotFoundError("pyredislua's Lua sources are missing from this installation")


@dataclass(frozen=True)
class Operation:
    """One rendered operation: its contract, its EVALSHA script and its library function name."""

    header: Header
    source: str  # path relative to lua/
    function_body: str  # `local function <ident>(KEYS, ARGV) ... end`
    script: str
    sha: str
    function: str

    @property
    def name(self) -> str:
        return self.header.name

    @property
    def read_only(self) -> bool:
        return self.header.read_only


@dataclass(frozen=True)
class Library:
    name: str  # e.g. pyredislua_v1: one library per major, so majors live side by side
    version: str
    code: str
    sha: str  # sha1 of the code; identifies the exact build of a version
    operations: Mapping[str, Operation]

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def info_function(self) -> str:
        return f"{self.name}_library"

    def operation(self, name: str) -> Operation:
        try:
            return self.operations[name]
        except KeyError:
            raise KeyError(f"no Lua operation named {name!r}") from None


def _environment(root: Path) -> jinja2.Environment:
    # Lua writes `{#t}` and `{{1}}`; only the `{##` comment form is changed, and operation bodies
    # must write nested table constructors as `{ {1} }`.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        comment_start_string="{##",
        comment_end_string="##}",
        autoescape=False,
    )


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _flags(header: Header) -> str:
    return "{" + ", ".join(_lua_string(f) for f in header.flags) + "}"


def _includes(header: Header) -> list[str]:
    extra = header.extra.get("includes", "")
    return [f"includes/{n.strip()}.lua" for n in extra.split(",") if n.strip()]


def load_keysets(root: Path | None = None) -> dict[str, KeySetSpec]:
    """The key sets of ``lua/keysets/*.keys``, by name."""
    found = {}
    for path in sorted((root or lua_root()).glob("keysets/*.keys")):
        spec = parse_keyset(path.read_text(), path.name)
        if spec.name != path.stem:
            raise HeaderError(
                f"keysets/{path.name}: declares {spec.name!r}, expected {path.stem!r}")
        found[spec.name] = spec
    return found


def render_library(root: Path | None = None) -> Library:
    """Render every operation under ``root`` (default: the installed Lua sources)."""
    return _render(root or lua_root())


@functools.lru_cache(maxsize=4)
def _render(root: Path) -> Library:
    env = _environment(root)
    lib_text = (root / "library.lua").read_text()
    m = _LIB_VERSION.search(lib_text)
    if not m:
        raise HeaderError("lua/library.lua must declare 'version: MAJOR.MINOR.PATCH'")
    version = m.group(1)
    lib_name = f"{LIBRARY_PREFIX}_v{version.split('.')[0]}"
    prelude = env.get_template("includes/prelude.lua").render()
    contract = env.get_template("includes/contract.lua").module

    keysets = load_keysets(root)
    ops: dict[str, Operation] = {}
    rendered_includes: dict[str, str] = {}
    includes_of: dict[str, list[str]] = {}
    for path in sorted(root.glob("*/*.lua")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("includes/"):
            continue
        text = path.read_text()
        header = parse_header(text, rel, keysets)
        expected = f"{path.parent.name}.{path.stem}"
        if header.name != expected:
            raise HeaderError(f"{rel}: declares name {header.name!r}, expected {expected!r}")
        _, body_src = extract_header(text)
        body = env.from_string(body_src).render(op=header, library=lib_name)
        prologue = contract.prologue(header)  # type: ignore[attr-defined]
        indented = "\n".join(("  " + line) if line.strip() else "" for line in body.splitlines())
        function_body = (
            f"-- {header.name} {header.version} ({rel})\n"
            f"local function {header.ident}(KEYS, ARGV)\n{prologue}\n{indented}\nend\n"
        )
        needed = []
        includes_of[header.name] = _includes(header)
        for inc in includes_of[header.name]:
            rendered_includes.setdefault(inc, env.get_template(inc).render())
            needed.append(rendered_includes[inc])
        # a script's flags live in its shebang, as a function's in register_function
        shebang = f"#!lua flags={','.join(header.flags)}" if header.flags else "#!lua"
        script = "\n".join(
            [
                shebang,
                f"-- pyredislua {header.name} {header.version}: rendered from lua/{rel}",
                prelude,
                *needed,
                function_body,
                f"return prl_guard({header.ident}, KEYS, ARGV)\n",
            ]
        )
        ops[header.name] = Operation(
            header=header,
            source=rel,
            function_body=function_body,
            script=script,
            sha=_sha1(script),
            function=f"{lib_name}_{header.ident}",
        )

    parts = [
        f"#!lua name={lib_name}",
        f"-- pyredislua Functions library {version}: rendered from lua/ (edit lua/, re-render)",
        prelude,
    ]
    # One do ... end block per area scopes its helpers and operations: the main chunk of a Lua
    # function may hold at most 200 locals, and the library grows by area.
    areas: dict[str, list[Operation]] = {}
    for op in ops.values():
        areas.setdefault(op.header.area, []).append(op)
    for area, area_ops in areas.items():
        parts.append(f"do -- {area}")
        used = dict.fromkeys(inc for op in area_ops for inc in includes_of[op.name])
        parts.extend(rendered_includes[inc] for inc in used)
        for op in area_ops:
            parts.append(op.function_body)
            parts.append(
                "redis.register_function{"
                f"function_name={_lua_string(op.function)}, "
                "callback=function(keys, args) "
                f"return prl_guard({op.header.ident}, keys, args) end, "
                f"flags={_flags(op.header)}, "
                f"description={_lua_string(f'{op.name} {op.header.version}')}}}\n"
            )
        parts.append(f"end -- {area}\n")
    code_without_info = "\n".join(parts)
    sha = _sha1(code_without_info)
    info = (
        "redis.register_function{"
        f"function_name={_lua_string(lib_name + '_library')}, "
        f"callback=function() return {{{_lua_string(version)}, {_lua_string(sha)}}} end, "
        "flags={'no-writes', 'allow-stale'}, "
        f"description={_lua_string(f'pyredislua {version} sha1={sha}')}}}\n"
    )
    return Library(
        name=lib_name,
        version=version,
        code=code_without_info + "\n" + info,
        sha=sha,
        operations=ops,
    )
