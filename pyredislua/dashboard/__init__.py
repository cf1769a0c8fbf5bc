"""A web dashboard of named queues, Streams queues, locks, rate limiters and write-behind stores:
depth and throughput over the last hour, wait and run time percentiles, jobs by state with a
search by id and idempotency key, dead letters, locks' holders and waiters, limiters' allow and
deny rates, write-behind lag. It reads with bounded read-only operations (safe on a replica)
and is read-only unless built with ``allow_actions=True`` (requeue and purge dead letters).

``pyredislua dashboard --url ... --queue orders`` serves it; :func:`app` returns the same ASGI
application to mount in your own (Starlette's ``Mount("/dash", app(...))``, FastAPI's
``app.mount``, or any ASGI server)."""

from __future__ import annotations

from collections.abc import Sequence

from ..client import AsyncClient, Client
from ..observe.figures import Targets
from .data import Config
from .web import Dashboard

__all__ = ["Config", "Dashboard", "app"]


def app(client: Client | AsyncClient | str, *, queues: Sequence[str] = (),
        streams: Sequence[tuple[str, str]] = (), stores: Sequence[str] = (),
        locks: Sequence[str] = (), limiters: Sequence[str | tuple[str, str]] = (),
        prefix: str = "prl",
        targets: Targets | None = None, allow_actions: bool = False,
        title: str = "pyredislua", server: str = "", refresh: int = 10) -> Dashboard:
    """The dashboard as an ASGI application.

    ``client``: a :class:`~pyredislua.Client` (read in a worker thread), an
    :class:`~pyredislua.AsyncClient`, or a Redis URL. The primitives shown: ``targets`` (as
    ``pyredislua metrics`` and ``top`` take them) or ``queues``, ``streams`` ((name, group)
    pairs), ``stores``, ``locks``, plus ``limiters`` (shown from their per-minute series: a
    name, or a (name, hash tag) pair when its calls are tagged with something else than the
    name, since a limiter's figures are kept per tag).
    ``allow_actions``: serve the requeue and purge actions (otherwise every POST gets 403).
    ``refresh``: seconds between page reloads, 0 for none."""
    if isinstance(client, str):
        from ..cli import connect

        client = connect(client)
    if targets is None:
        targets = Targets(tuple(queues), tuple(streams), tuple(stores), tuple(locks), prefix)
    if refresh < 0:
        raise ValueError("refresh must be 0 (none) or positive")
    shown = tuple((lim, None) if isinstance(lim, str) else (lim[0], lim[1]) for lim in limiters)
    config = Config(targets, shown, allow_actions, title, server, refresh)
    return Dashboard(client, config)
