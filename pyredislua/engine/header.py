"""The contract block at the top of every ``lua/<area>/<op>.lua`` file.

Format (a Lua block comment, one ``key: value`` per line, sections indented by two spaces)::

    --[[
    name: lock.acquire
    version: 1.0.0
    summary: Take the lock for a token, or report how long it stays busy.
    flags: none                      # or: no-writes
    resend: safe                     # or: once (see below)
    keys:
      lock: hash; {owner, fence, ticket}; expires with the lease
    argv:
      token: str 1..256; owner token
      ttl_ms: int 1..1000000000000; lease length in milliseconds
      wait_ms: int 0..86400000 = 0; register as a waiter for this long when busy
      items: rest; variadic tail, validated by the body
    returns:
      {1, fence, ttl_ms} when acquired; {0, pttl} when busy
    errors:
      BADARG: an argument is out of range
    ]]

A header may name a key set instead of listing keys: ``keys: keyset queue`` takes the keys of
``lua/keysets/queue.keys`` (see :func:`parse_keyset`), in their order; the primitive's Python key
class is built from the same file, so the two cannot disagree. Keys only some operations take
(a per-call request record, a registry one operation uses) are the set's extras, declared in the
same file and named after the set, in the order the operation takes them after the set's keys:
``keys: keyset queue + request``, ``keys: keyset streamqueue + cursors, consumers, request``.

Every key declares the Redis type it holds first: ``string``, ``hash``, ``list``, ``set``,
``zset``, ``stream``, or ``any`` (a key whose type depends on the caller, e.g. any limiter's key).
Under ``keys: variadic`` the entries describe KEYS positions in order, the last one repeating.
``keys: keyset <set> repeated`` takes the set's keys as one group that repeats: a call passes one
or more whole groups in order (several locks in one call); the named locals bind the first group.
A key whose type reads ``optional <type>`` (``request: optional string; ...``) may be left out;
only the last keys may be optional, so a call passes the required keys and then as many of the
optional ones, in order, as it uses (the prologue checks the count; an absent key is ``nil``).
Under ``keys: variadic`` optional keys may follow the repeating entry: the operation itself
tells from its ARGV whether a call passed them, and binds them (the prologue binds no local
for them).

``resend``: ``safe`` (the default) when running the same call twice, as a client does that re-sends
a command whose reply it lost, has the effect of running it once; ``once`` when it is not: the
Python drivers then send it without redis-py's automatic re-send and the caller gets the
connection error (the reference tells other clients the same).

Argument types: ``int MIN..MAX`` (decimal integers only), ``str MINLEN..MAXLEN`` (byte length),
``enum a|b|c``, ``rest`` (the remaining ARGV, last entry only). ``= DEFAULT`` makes an argument
optional (optional arguments must come last). The renderer generates the validation prologue from
this block, so the header cannot drift from what the script enforces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ARG = re.compile(
    r"^(?P<type>int|str|enum|rest)(?:\s+(?P<spec>[^;=]+?))?\s*(?:=\s*(?P<default>[^;]*?))?\s*"
    r"(?:;\s*(?P<doc>.*))?$"
)
KNOWN_FLAGS = frozenset({"no-writes", "allow-oom", "allow-stale"})
KEY_TYPES = ("string", "hash", "list", "set", "zset", "stream", "any")
RESEND = ("safe", "once")


class HeaderError(ValueError):
    """A Lua source file has a malformed contract header."""


@dataclass(frozen=True)
class KeySpec:
    name: str
    type: str  # one of KEY_TYPES: the Redis type the key holds
    doc: str
    optional: bool = False  # a trailing key a call may leave out


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type: str
    doc: str
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()
    default: str | None = None

    @property
    def optional(self) -> bool:
        return self.default is not None

    def describe(self) -> str:
        if self.type == "int":
            base = f"integer {self.lo}..{self.hi}"
        elif self.type == "str":
            base = f"string of {self.lo}..{self.hi} bytes"
        elif self.type == "enum":
            base = "one of " + "|".join(self.choices)
        else:
            base = "variadic tail"
        if self.default is None:
            return base
        return f"{base} (default {self.default!r})"


@dataclass(frozen=True)
class Header:
    name: str
    version: str
    summary: str
    flags: tuple[str, ...]
    keys: tuple[KeySpec, ...]
    argv: tuple[ArgSpec, ...]
    returns: str
    errors: tuple[tuple[str, str], ...]
    variadic_keys: bool = False
    keyset: str | None = None  # the key set the keys come from, if the header names one
    keyset_extras: tuple[str, ...] = ()  # the set's extras it takes after the set's keys
    repeated: bool = False  # the keys form a group that repeats (``keys: keyset <set> repeated``)
    resend: str = "safe"  # one of RESEND
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def area(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def read_only(self) -> bool:
        return "no-writes" in self.flags

    @property
    def send_once(self) -> bool:
        """Running it twice is not running it once: never re-send it automatically."""
        return self.resend == "once"

    @property
    def ident(self) -> str:
        """The operation name as a Lua/Redis identifier: ``lock.acquire`` -> ``lock_acquire``."""
        return self.name.replace(".", "_")

    @property
    def min_keys(self) -> int:
        """How many KEYS a call must pass (the optional trailing keys not counted)."""
        return sum(1 for k in self.keys if not k.optional)

    @property
    def min_args(self) -> int:
        return sum(1 for a in self.argv if not a.optional and a.type != "rest")

    @property
    def max_args(self) -> int | None:
        if self.argv and self.argv[-1].type == "rest":
            return None
        return len(self.argv)


def extract_header(text: str) -> tuple[str, str]:
    """Split a Lua source into (header text, body)."""
    stripped = text.lstrip()
    if not stripped.startswith("--[["):
        raise HeaderError("the file must open with a --[[ ... ]] contract header")
    end = stripped.find("]]")
    if end < 0:
        raise HeaderError("the contract header is not closed with ]]")
    return stripped[4:end], stripped[end + 2 :].lstrip("\n")


def _int(text: str, where: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        raise HeaderError(f"{where}: {text!r} is not an integer") from None


def _parse_arg(name: str, text: str, where: str) -> ArgSpec:
    m = _ARG.match(text.strip())
    if not m:
        raise HeaderError(f"{where}: cannot parse argument {name!r}: {text!r}")
    kind, spec, default, doc = m["type"], (m["spec"] or "").strip(), m["default"], m["doc"] or ""
    if default is not None:
        default = default.strip().strip('"')
    if kind in ("int", "str"):
        lo_hi = spec.split("..")
        if len(lo_hi) != 2:
            raise HeaderError(f"{where}: argument {name!r} needs a range MIN..MAX")
        lo, hi = _int(lo_hi[0], where), _int(lo_hi[1], where)
        if lo > hi:
            raise HeaderError(f"{where}: argument {name!r} has an empty range")
        if kind == "int" and default is not None and not lo <= _int(default, where) <= hi:
            raise HeaderError(f"{where}: default of {name!r} is out of range")
        return ArgSpec(name, kind, doc, lo=lo, hi=hi, default=default)
    if kind == "enum":
        choices = tuple(c.strip() for c in spec.split("|") if c.strip())
        if not choices:
            raise HeaderError(f"{where}: enum {name!r} lists no choices")
        if default is not None and default not in choices:
            raise HeaderError(f"{where}: default of {name!r} is not a choice")
        return ArgSpec(name, kind, doc, choices=choices, default=default)
    return ArgSpec(name, "rest", doc)


def _parse_key(name: str, text: str, where: str) -> KeySpec:
    kind, sep, doc = text.partition(";")
    kind = kind.strip()
    optional = kind.startswith("optional ")
    if optional:
        kind = kind.removeprefix("optional ").strip()
    if not sep or kind not in KEY_TYPES:
        raise HeaderError(
            f"{where}: key {name!r} must open with its type ({'|'.join(KEY_TYPES)}) and ';', "
            f"got {text!r}")
    return KeySpec(name, kind, doc.strip(), optional)


def key_spec_at(header: Header, position: int, count: int | None = None,
                trailing: int = 0) -> KeySpec:
    """The declared key at KEYS[position] (1-based); under ``keys: variadic`` the last
    required entry covers every later position, under a repeated key set the group repeats.

    A variadic header may end with optional keys (a metrics key): the operation tells from its
    ARGV whether a call passed them, so the caller says how many of the call's ``count`` keys
    are such ``trailing`` ones."""
    if not header.keys:
        raise IndexError(f"{header.name} declares no keys")
    if header.repeated:
        return header.keys[(position - 1) % len(header.keys)]
    if header.variadic_keys:
        required = [k for k in header.keys if not k.optional]
        optional = [k for k in header.keys if k.optional]
        if trailing and count is not None and position > count - trailing:
            return optional[position - (count - trailing) - 1]
        return required[min(position, len(required)) - 1]
    return header.keys[min(position, len(header.keys)) - 1]


def key_type_at(header: Header, position: int) -> str:
    """The declared type of KEYS[position] (1-based); see :func:`key_spec_at`."""
    return key_spec_at(header, position).type


@dataclass(frozen=True)
class KeySetSpec:
    """A named set of keys shared by a primitive's operations (``lua/keysets/<name>.keys``).

    Its keys live under ``<prefix>:<base>:<tagged name>``: the key named like the set is that
    base itself, every other key is ``<base key>:<key name>``. ``extras`` are keys only some
    operations take, after the set's keys (``keys: keyset <name> + <extra>, ...``)."""

    name: str
    base: str
    summary: str
    keys: tuple[KeySpec, ...]
    extras: tuple[KeySpec, ...] = ()

    def with_extras(self, names: tuple[str, ...], where: str = "<lua>") -> tuple[KeySpec, ...]:
        """The set's keys followed by the named extras, in the order named."""
        by_name = {k.name: k for k in self.extras}
        unknown = [n for n in names if n not in by_name]
        if unknown or len(set(names)) != len(names):
            raise HeaderError(f"{where}: key set {self.name!r} has no extras {unknown} "
                              f"(it has {sorted(by_name)}; each named once)")
        return self.keys + tuple(by_name[n] for n in names)


def parse_keyset(text: str, where: str = "<keyset>") -> KeySetSpec:
    """Parse a key set file: a ``--[[ ... ]]`` block with ``keyset:``, ``base:``, ``summary:``
    and a ``keys:`` section written as in an operation header."""
    raw, _ = extract_header(text)
    top: dict[str, str] = {}
    sections: dict[str, list[tuple[str, str]]] = {"keys": [], "extras": []}
    current: str | None = None
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise HeaderError(f"{where}:{lineno}: expected 'name: text', got {line!r}")
        if line.startswith("  ") and current is not None:
            sections[current].append((key.strip(), value.strip()))
        else:
            current = key.strip() if key.strip() in sections else None
            top[key.strip()] = value.strip()
    for required in ("keyset", "base", "summary"):
        if not top.get(required):
            raise HeaderError(f"{where}: key set misses {required!r}")
    if not sections["keys"]:
        raise HeaderError(f"{where}: key set lists no keys")
    keys = tuple(_parse_key(k, d, where) for k, d in sections["keys"])
    extras = tuple(_parse_key(k, d, where) for k, d in sections["extras"])
    names = [k.name for k in keys + extras]
    if len(set(names)) != len(names) or not all(_IDENT.match(n) for n in names):
        raise HeaderError(f"{where}: key names must be distinct lowercase identifiers")
    if any(k.optional for k in keys):
        raise HeaderError(f"{where}: a key set's keys are required (optional ones are extras)")
    return KeySetSpec(top["keyset"], top["base"], top["summary"], keys, extras)


def parse_header(text: str, where: str = "<lua>",
                 keysets: Mapping[str, KeySetSpec] | None = None) -> Header:
    """Parse the contract header of a Lua operation source (``keysets``: the key sets a header
    may name, by name)."""
    raw, _ = extract_header(text)
    top: dict[str, str] = {}
    sections: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("  ") and current is not None:
            entry = line.strip()
            if current == "returns":
                sections[current].append(("", entry))
                continue
            key, sep, value = entry.partition(":")
            if not sep:
                raise HeaderError(f"{where}:{lineno}: expected 'name: text' in {current}")
            sections[current].append((key.strip(), value.strip()))
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise HeaderError(f"{where}:{lineno}: expected 'key: value', got {line!r}")
        key, value = key.strip(), value.strip()
        if key in ("keys", "argv", "errors", "returns"):
            current = key
            sections[key] = [("", value)] if (key == "returns" and value) else []
            if key == "keys" and value == "variadic":
                top["variadic_keys"] = "yes"
            elif key == "keys" and value.startswith("keyset "):
                name, _, taken = value.removeprefix("keyset ").partition("+")
                name = name.strip()
                if name.endswith(" repeated"):
                    name = name.removesuffix(" repeated").strip()
                    top["variadic_keys"] = top["repeated"] = "yes"
                top["keyset"] = name
                top["keyset_extras"] = taken
        else:
            current = None
            top[key] = value

    for required in ("name", "version", "summary"):
        if not top.get(required):
            raise HeaderError(f"{where}: header misses {required!r}")
    if not _NAME.match(top["name"]):
        raise HeaderError(f"{where}: name {top['name']!r} must look like 'area.operation'")
    if not _SEMVER.match(top["version"]):
        raise HeaderError(f"{where}: version {top['version']!r} is not semver MAJOR.MINOR.PATCH")
    flags_text = top.get("flags", "none")
    flags = () if flags_text in ("", "none") else tuple(f.strip() for f in flags_text.split(","))
    unknown = set(flags) - KNOWN_FLAGS
    if unknown:
        raise HeaderError(f"{where}: unknown flags {sorted(unknown)}")
    resend = top.get("resend", "safe")
    if resend not in RESEND:
        raise HeaderError(f"{where}: resend must be one of {'|'.join(RESEND)}, got {resend!r}")
    if "returns" not in sections:
        raise HeaderError(f"{where}: header misses 'returns'")

    keys = tuple(_parse_key(k, d, where) for k, d in sections.get("keys", []))
    keyset = top.get("keyset")
    extras_named = tuple(n.strip() for n in top.get("keyset_extras", "").split(",") if n.strip())
    if keyset is not None:
        if keys:
            raise HeaderError(f"{where}: a header names a key set or lists keys, not both "
                              "(keys some operations add are the set's extras: keyset <set> + "
                              "<extra>, ...)")
        if keyset not in (keysets or {}):
            raise HeaderError(f"{where}: no key set named {keyset!r} (lua/keysets/{keyset}.keys)")
        keys = (keysets or {})[keyset].with_extras(extras_named, where)
        if extras_named and top.get("repeated") == "yes":
            raise HeaderError(f"{where}: a repeated key set takes no extras")
    if any(k.optional for k in keys):
        first = next(i for i, k in enumerate(keys) if k.optional)
        if (not all(k.optional for k in keys[first:]) or first == 0
                or top.get("repeated") == "yes" or (keyset is not None
                and top.get("variadic_keys") == "yes")):
            raise HeaderError(f"{where}: only the last keys may be optional (not variadic ones)")
    argv = tuple(_parse_arg(k, d, where) for k, d in sections.get("argv", []))
    names = [k.name for k in keys] + [a.name for a in argv]
    for n in names:
        if not _IDENT.match(n):
            raise HeaderError(f"{where}: {n!r} is not a lowercase identifier")
    if len(set(names)) != len(names):
        raise HeaderError(f"{where}: KEYS and ARGV names must be distinct")
    seen_optional = False
    for i, a in enumerate(argv):
        if a.type == "rest" and i != len(argv) - 1:
            raise HeaderError(f"{where}: 'rest' must be the last argument")
        if a.optional:
            seen_optional = True
        elif seen_optional and a.type != "rest":
            raise HeaderError(f"{where}: required argument {a.name!r} follows an optional one")
    errors = tuple((c, d) for c, d in sections.get("errors", []))
    for code, _doc in errors:
        if not _CODE.match(code):
            raise HeaderError(f"{where}: error code {code!r} must be UPPER_CASE")
    return Header(
        name=top["name"],
        version=top["version"],
        summary=top["summary"],
        flags=flags,
        keys=keys,
        argv=argv,
        returns=" ".join(d for _, d in sections["returns"]).strip(),
        errors=errors,
        variadic_keys=top.get("variadic_keys") == "yes",
        keyset=keyset,
        keyset_extras=extras_named,
        repeated=top.get("repeated") == "yes",
        resend=resend,
        extra={k: v for k, v in top.items()
               if k not in ("name", "version", "summary", "flags", "resend", "keyset",
                            "keyset_extras", "variadic_keys", "repeated")},
    )
