"""Benchmarks (tools, not timed tests): each module is ``pyredislua bench <module>`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``."""
