"""Edge scenarios of the Streams queue: produce (group exists, fresh stream, re-sent), consume
(new entries, a stalled entry reclaimed, one dead-lettered past max_deliveries, nothing to
deliver, forgetting an idle consumer with nothing pending and keeping one that holds entries,
re-sent, the three-key call of 1.0), ack, nack (retry, dead), extend, and the read-only stats and
dead. Calls are built by hand (the exact FCALL contract); idle times are set with XCLAIM IDLE
and the consumer registry's scores, so no path depends on the clock while the suite tampers."""

from __future__ import annotations

from typing import Any

import pyredislua
from pyredislua.engine.protocol import Call
from tests.edges import Scenario, run_all

BASE = "prl:sq:{edge}"
STREAM, DEAD, CURSORS, CONSUMERS = (f"{BASE}:{n}" for n in ("stream", "dead", "cursors",
                                                             "consumers"))
REQUEST = f"{BASE}:req:edge-1"
TWO = (STREAM, DEAD)
TWO_REQ = (*TWO, REQUEST)
CONSUME = (STREAM, DEAD, CURSORS, CONSUMERS, REQUEST)
OLD_CONSUME = (STREAM, DEAD, CURSORS)
G = "g"
MINUTE = 60_000
DAY = 86_400_000


def _produce(*payloads: str) -> Call[Any]:
    return Call("stream.produce", TWO, (G, *payloads))


def _consume(consumer: str, count: int = 1, max_deliveries: int = 3) -> Call[Any]:
    return Call("stream.consume", OLD_CONSUME, (G, consumer, count, MINUTE, max_deliveries))


def _setup(*calls: Call[Any]) -> Any:
    def setup(client: pyredislua.Client) -> None:
        run_all(client, list(calls))
    return setup


def _first_id(client: pyredislua.Client) -> str:
    return str(client.redis.xrange(STREAM, count=1)[0][0].decode())


def _delivered(client: pyredislua.Client) -> None:
    """Two entries delivered to consumer a (deliveries 1), one not delivered yet."""
    run_all(client, [_produce("x", "y", "z"), _consume("a", 2)])


def _stalled(client: pyredislua.Client) -> None:
    """An entry delivered to a once and idle for a day (a crashed consumer)."""
    run_all(client, [_produce("x", "y"), _consume("a")])
    client.redis.xclaim(STREAM, G, "a", 0, [_first_id(client)], idle=DAY, justid=True)


def _stale_consumers(client: pyredislua.Client) -> None:
    """Consumers last seen long ago: idle holds nothing, busy holds an entry."""
    run_all(client, [_produce("x", "y"), _consume("busy")])
    client.redis.xgroup_createconsumer(STREAM, G, "idle")
    client.redis.zadd(CONSUMERS, {f"1:{G}idle": 1, f"1:{G}busy": 2})


def _again(call: Call[Any], before: Any) -> Any:
    def setup(client: pyredislua.Client) -> None:
        before(client)
        client.run(call)
    return setup


# Entry ids carry the server clock, so scenarios that name an entry use a fixed id written by
# the setup itself (XADD with an explicit id).
FIXED = "1-1"


def _fixed_delivered(client: pyredislua.Client) -> None:
    client.redis.xgroup_create(STREAM, G, "0", mkstream=True)
    client.redis.xadd(STREAM, {"p": "x"}, id=FIXED)
    client.redis.xadd(STREAM, {"p": "y"}, id="1-2")
    run_all(client, [_consume("a", 2)])


def _fixed_idle(client: pyredislua.Client) -> None:
    """As _fixed_delivered, the first entry idle for a minute (extend resets that)."""
    _fixed_delivered(client)
    client.redis.xclaim(STREAM, G, "a", 0, [FIXED], idle=MINUTE, justid=True)


ACK = (G, "a", FIXED, 1)
NACK = (G, "a", FIXED, 1, "boom")

SCENARIOS = [
    Scenario("stream.produce", "group exists", TWO_REQ, (G, "p1", "p2"), _setup(_produce("x"))),
    Scenario("stream.produce", "fresh stream: makes the group", TWO_REQ, (G, "p1")),
    Scenario("stream.produce", "no request record", TWO, (G, "p1"), _setup(_produce("x"))),
    Scenario("stream.produce", "re-sent", TWO_REQ, (G, "p1"),
             _again(Call("stream.produce", TWO_REQ, (G, "p1")), _setup(_produce("x"))),
             writes=False),
    Scenario("stream.consume", "new entries", CONSUME, (G, "b", 2, MINUTE, 3), _delivered),
    Scenario("stream.consume", "reclaims a stalled entry", CONSUME, (G, "b", 1, MINUTE, 3),
             _stalled),
    Scenario("stream.consume", "dead-letters an entry past max_deliveries", CONSUME,
             (G, "b", 1, MINUTE, 1), _stalled),
    Scenario("stream.consume", "nothing to deliver: registers, looks for idle consumers",
             CONSUME, (G, "b", 1, MINUTE, 3), _setup(_produce("x"), _consume("a"))),
    Scenario("stream.consume", "forgets an idle consumer, keeps a busy one", CONSUME,
             (G, "b", 1, MINUTE, 3, MINUTE), _stale_consumers),
    Scenario("stream.consume", "fresh stream", CONSUME, (G, "b", 1, MINUTE, 3)),
    Scenario("stream.consume", "without the optional keys", OLD_CONSUME, (G, "b", 2, MINUTE, 3),
             _delivered),
    Scenario("stream.consume", "re-sent", CONSUME, (G, "b", 2, MINUTE, 3),
             _again(Call("stream.consume", CONSUME, (G, "b", 2, MINUTE, 3)), _delivered),
             writes=False),
    Scenario("stream.ack", "one delivered entry", TWO_REQ, ACK, _fixed_delivered),
    Scenario("stream.ack", "two entries", TWO_REQ, (*ACK, "1-2", 1), _fixed_delivered),
    Scenario("stream.ack", "re-sent", TWO_REQ, ACK,
             _again(Call("stream.ack", TWO_REQ, ACK), _fixed_delivered), writes=False),
    Scenario("stream.nack", "retry", TWO_REQ, NACK, _fixed_delivered),
    Scenario("stream.nack", "dead", TWO_REQ, (*NACK, "dead"), _fixed_delivered),
    Scenario("stream.nack", "re-sent", TWO_REQ, (*NACK, "dead"),
             _again(Call("stream.nack", TWO_REQ, (*NACK, "dead")), _fixed_delivered),
             writes=False),
    Scenario("stream.extend", "a delivered entry", TWO, (G, "a", FIXED, 1), _fixed_idle),
    Scenario("stream.stats", "entries pending", TWO, (G,), _delivered, writes=False),
    Scenario("stream.dead", "a dead entry", TWO, (10,),
             _again(Call("stream.nack", TWO, (*NACK, "dead")), _fixed_delivered),
             writes=False),
]
