"""OpenTelemetry spans of the primitives (optional extra ``otel``: ``opentelemetry-api``).

One switch for the whole process::

    from pyredislua.observe import tracing
    tracing.instrument()                      # the global tracer provider, or
    tracing.instrument(tracer_provider=tp)    # your own
    tracing.uninstrument()                    # off again

Until :func:`instrument` is called nothing imports ``opentelemetry`` and every hook is one
``None`` check. Spans, named and attributed after OpenTelemetry's messaging conventions where
they apply (``messaging.system`` = ``pyredislua``, ``messaging.destination.name`` = the queue):

* ``send <queue>`` (PRODUCER) around ``Queue.enqueue`` and ``Queue.enqueue_many`` (one span per
  call; ``messaging.batch.message_count`` for a batch; ``messaging.message.id`` for one job).
  ``enqueue`` stores the span's W3C ``traceparent`` (and ``tracestate``) with the job.
* ``process <queue>`` (CONSUMER) per job a ``Worker`` / ``AsyncWorker`` runs, from the handler's
  start to its end (current while the handler runs, so the handler's own spans are children).
  It is not a child of the producer: it carries a **link** to the producer's span, and each
  retry's span links to that same producer span. Error status when the handler raises.
* ``lock.wait <name>`` around an acquire (``pyredislua.lock.acquired``, ``.fence``) and
  ``lock.hold <name>`` from the acquire to the release (a ``lost`` event when the hold is lost).
* ``writebehind.flush <store>`` per batch a flusher writes to its sink (records, acked, failed,
  dead, released, lag).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

SYSTEM = "pyredislua"

_active: Tracing | None = None


def instrument(tracer_provider: Any = None) -> Tracing:
    """Trace every primitive of this process from now on (``tracer_provider``: default the
    global one). Needs ``opentelemetry-api`` (``pip install pyredislua[otel]``)."""
    global _active
    from opentelemetry import trace

    from .. import __version__
    _active = Tracing(trace.get_tracer("pyredislua", __version__,
                                       tracer_provider=tracer_provider))
    return _active


def uninstrument() -> None:
    """Stop tracing (spans already started still end)."""
    global _active
    _active = None


def active() -> Tracing | None:
    """The tracing in force, or None (the hooks' one check)."""
    return _active


class Tracing:
    """The spans the primitives start and end; made by :func:`instrument`."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()

    # -- common --------------------------------------------------------------------------------

    def end(self, span: Any, error: BaseException | None = None) -> None:
        """End ``span``, with error status when ``error`` is given."""
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               f"{type(error).__name__}: {error}"))
        span.end()

    def current(self, span: Any) -> contextlib.AbstractContextManager[Any]:
        """``span`` made the current span (for the work it covers)."""
        return self._trace.use_span(span, end_on_exit=False, record_exception=False,
                                    set_status_on_exception=False)  # end() does both

    # -- queue ---------------------------------------------------------------------------------

    def send(self, queue: str, count: int) -> Any:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM, "messaging.destination.name": queue,
            "messaging.operation.type": "send", "messaging.operation.name": "send"}
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        return self.tracer.start_span(f"send {queue}", kind=self._trace.SpanKind.PRODUCER,
                                      attributes=attributes)

    def carried(self, span: Any) -> str:
        """The context a job carries: ``traceparent``, then `` tracestate`` when there is one
        (a traceparent has no spaces)."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        parent = carrier.get("traceparent", "")
        state = carrier.get("tracestate")
        return f"{parent} {state}" if parent and state else parent

    def sent(self, span: Any, ids: Sequence[str]) -> None:
        if len(ids) == 1:
            span.set_attribute("messaging.message.id", ids[0])
        span.end()

    def _link(self, carried: str) -> list[Any]:
        if not carried:
            return []
        parent, _, state = carried.partition(" ")
        carrier = {"traceparent": parent}
        if state:
            carrier["tracestate"] = state
        context = self._trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
        return [self._trace.Link(context)] if context.is_valid else []

    def process(self, queue: str, job_id: str, attempts: int, priority: int,
                carried: str) -> Any:
        """A consumer's span of one attempt: a root of its own (no parent), linked to the
        producer's span when the job carries its context."""
        from opentelemetry.context import Context
        attributes = {
            "messaging.system": SYSTEM, "messaging.destination.name": queue,
            "messaging.operation.type": "process", "messaging.operation.name": "process",
            "messaging.message.id": job_id, "pyredislua.job.attempts": attempts,
            "pyredislua.job.priority": priority}
        return self.tracer.start_span(f"process {queue}", context=Context(),
                                      kind=self._trace.SpanKind.CONSUMER,
                                      links=self._link(carried), attributes=attributes)

    # -- lock ----------------------------------------------------------------------------------

    def lock_wait(self, name: str, blocking: bool) -> Any:
        return self.tracer.start_span(f"lock.wait {name}", attributes={
            "pyredislua.lock.name": name, "pyredislua.lock.blocking": blocking})

    def lock_waited(self, span: Any, acquired: bool, fence: int | None) -> None:
        span.set_attribute("pyredislua.lock.acquired", acquired)
        if acquired and fence is not None:
            span.set_attribute("pyredislua.lock.fence", fence)
        span.end()

    def lock_hold(self, name: str, fence: int | None) -> Any:
        attributes: dict[str, Any] = {"pyredislua.lock.name": name}
        if fence is not None:
            attributes["pyredislua.lock.fence"] = fence
        return self.tracer.start_span(f"lock.hold {name}", attributes=attributes)

    # -- write-behind --------------------------------------------------------------------------

    def flush(self, store: str) -> Any:
        return self.tracer.start_span(f"writebehind.flush {store}", attributes={
            "pyredislua.writebehind.store": store})

    def flushed(self, span: Any, event: Any) -> None:
        for field in ("claimed", "acked", "changed", "failed", "dead", "released", "lag_ms"):
            span.set_attribute(f"pyredislua.writebehind.{field}", int(getattr(event, field)))
        span.set_attribute("pyredislua.writebehind.records", int(event.claimed))
        if event.failed or event.dead:
            first = event.errors[0] if event.errors else "rejected by the sink"
            span.set_status(self._trace.Status(
                self._trace.StatusCode.ERROR,
                f"{event.failed + event.dead} of {event.claimed} records failed: {first}"))
        span.end()


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def current(span: Any) -> contextlib.AbstractContextManager[Any]:
    """``span`` current while a block runs (nothing when not tracing or no span)."""
    tracing = _active
    if tracing is None or span is None:
        return _nothing()
    return tracing.current(span)
