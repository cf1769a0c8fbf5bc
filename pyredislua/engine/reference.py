"""The operations reference, generated from the contract headers of ``lua/``."""

from __future__ import annotations

from itertools import groupby

from .render import Library


def render_reference(library: Library) -> str:
    lines = [
        "# Operations reference",
        "",
        f"Generated from the contract headers in `lua/` (library `{library.name}` "
        f"{library.version}) by `pyredislua reference`; do not edit by hand.",
        "",
        "Call an operation as `FCALL <function> <numkeys> KEYS... ARGV...` (read-only ones with "
        "`FCALL_RO`), or `EVALSHA` its standalone script (`pyredislua render --script <name>`). "
        "Errors read `PYREDISLUA:<CODE> <message>` and mean the call changed nothing.",
    ]
    ops = sorted(library.operations.values(), key=lambda op: op.name)
    for area, group in groupby(ops, key=lambda op: op.header.area):
        lines += ["", f"## {area}"]
        for op in group:
            h = op.header
            flags = ", ".join(h.flags) or "may write"
            if not h.read_only:
                flags += (" · send once: a re-send after a lost reply may run it twice"
                          if h.send_once else " · safe to re-send")
            lines += [
                "",
                f"### `{h.name}` {h.version}",
                "",
                h.summary,
                "",
                f"Function `{op.function}` · {flags} · source `lua/{op.source}`",
                "",
            ]
            if h.keys:
                if h.keyset:
                    extras = ""
                    if h.keyset_extras:
                        plural = "s" if len(h.keyset_extras) > 1 else ""
                        extras = f", then the set's extra{plural} " + ", ".join(
                            f"`{n}`" for n in h.keyset_extras)
                    lines += [f"KEYS: the `{h.keyset}` key set (`lua/keysets/{h.keyset}.keys`)"
                              f"{extras}.", ""]
                if h.repeated:
                    lines += ["KEYS repeat as a group: one group of the entries below per "
                              "item (lock), in order.", ""]
                elif h.variadic_keys and h.min_keys < len(h.keys):
                    lines += ["KEYS are variadic: the required entries below in order, the last "
                              "repeating, then the optional ones when the call passes them "
                              "(see their role).", ""]
                elif h.variadic_keys:
                    lines += ["KEYS are variadic: the entries below in order, the last repeating.",
                              ""]
                if h.min_keys < len(h.keys) and not h.variadic_keys:
                    lines += [f"KEYS: the first {h.min_keys} are required; the optional ones "
                              "after them may be left out (a call passes them in order).", ""]
                lines += ["| KEYS | type | role |", "|---|---|---|"]
                lines += [f"| {i}. `{k.name}` | {'optional ' if k.optional else ''}{k.type} "
                          f"| {k.doc} |" for i, k in enumerate(h.keys, 1)]
            elif h.variadic_keys:
                lines.append("KEYS: variadic (see the summary).")
            else:
                lines.append("KEYS: none.")
            lines.append("")
            if h.argv:
                lines += ["| ARGV | type | meaning |", "|---|---|---|"]
                lines += [f"| {i}. `{a.name}` | {a.describe()} | {a.doc} |"
                          for i, a in enumerate(h.argv, 1)]
            else:
                lines.append("ARGV: none.")
            lines += ["", f"Reply: {h.returns}", ""]
            if h.errors:
                lines.append("Errors: " + "; ".join(f"`{c}` {d}" for c, d in h.errors) + ".")
    return "\n".join(lines) + "\n"
