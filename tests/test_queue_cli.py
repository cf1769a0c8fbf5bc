"""``pyredislua queue ...`` and ``pyredislua bench queue`` argument wiring."""

from __future__ import annotations

import json

import pytest

import pyredislua
from pyredislua import cli
from pyredislua.queue import Queue

pytestmark = [pytest.mark.queue, pytest.mark.cli]


def test_queue_commands(client: pyredislua.Client, redis_url: str,
                        capsys: pytest.CaptureFixture[str]) -> None:
    q = Queue(client, "mail")
    q.enqueue_many([q.job("hello", priority=1), q.job("bye", max_attempts=1)])
    [job] = q.dequeue()
    q.nack(job, "smtp down")
    assert cli.main(["queue", "stats", "mail", "--url", redis_url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["ready"], stats["dead"]) == (1, 1)
    assert cli.main(["queue", "peek", "mail", "--url", redis_url]) == 0
    assert "hello" in capsys.readouterr().out
    assert cli.main(["queue", "dead", "list", "mail", "--url", redis_url]) == 0
    out = capsys.readouterr().out
    assert "smtp down" in out and "bye" in out
    assert cli.main(["queue", "dead", "purge", "mail", "--url", redis_url]) == 2  # needs --yes
    assert cli.main(["queue", "dead", "requeue", "mail", job.id, "--url", redis_url]) == 0
    assert "requeued 1" in capsys.readouterr().out
    assert cli.main(["queue", "get", "mail", job.id, "--url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "ready"
    [again] = q.dequeue(2)[1:] or q.dequeue()
    q.nack(again, "still down", action="dead")
    assert cli.main(["queue", "dead", "purge", "mail", "--yes", "--url", redis_url]) == 0
    assert "purged 1" in capsys.readouterr().out
    assert q.stats().dead == 0


def test_bench_queue_is_registered() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "queue", "--jobs", "10", "--skip", "rq,saq,bullmq"])
    assert args.jobs == 10 and args.skip == "rq,saq,bullmq"
