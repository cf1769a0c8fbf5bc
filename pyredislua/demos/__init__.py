"""Sections of ``pyredislua demo``: each module exposes ``ORDER: int`` and
``demo(client: pyredislua.Client, say: Callable[[str], None]) -> None``, which shows its
primitive at work in plain words on a flushed server."""
