"""Every public entry point, against a dead server and a port that is not Redis, raises a
FlueModelsError (the redis-py error chained as its cause), never a raw redis-py error."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import flue_models as fm
from flue_models import EventStream, Retention, Session, Submission, WorkflowRun
from flue_models.errors import SchemaError
from flue_models.schema import check_schema, migrate, schema_status
from flue_models.state.submission import Attempt
from tests.conftest import RedisServers
from tests.integration.models import Ticket
from tests.not_redis import not_redis_port
from tests.proxy import ReplyDropper
from tests.waiting import within

QUICK = fm.RetryPolicy(retries=1, base=0.01, cap=0.01)
Call = Callable[[], Awaitable[object]]


def entry_points(db: fm.Database) -> dict[str, Call]:
    """One call of each public operation that talks to the server."""
    attempt = Attempt("p-1", "a-1", "w", dt.datetime.now(dt.UTC))
    stream = EventStream("s", db=db)
    ticket = Ticket(id="t-1", status="open", priority=1)
    query = Ticket.find(Ticket.status == "open").using(db)

    async def first_tail_event() -> object:
        async for event in stream.tail(after="-1", outage=0.5):
            return event
        return None

    return {
        "Model.save": lambda: ticket.save(db=db),
        "Model.get": lambda: Ticket.get("t-1", db=db),
        "Model.get_many": lambda: Ticket.get_many(["t-1", "t-2"], db=db),
        "Model.delete_id": lambda: Ticket.delete_id("t-1", db=db),
        "Model.save_many": lambda: Ticket.save_many([ticket], db=db),
        "Query.all": query.all,
        "Query.page": query.page,
        "Query.count": query.count,
        "Query.first": query.first,
        "Query.explain": query.explain,
        "verify_collection": lambda: fm.verify_collection(Ticket, db=db),
        "migrate": lambda: migrate(db),
        "check_schema": lambda: check_schema(db),
        "schema_status": lambda: schema_status(db),
        "Database.server_time": lambda: db.server_time(),
        "Database.run_batch": lambda: db.run_batch([("PING",)]),
        "WorkflowRun.start": lambda: WorkflowRun.start("wf", run_id="r-1", db=db),
        "WorkflowRun.finish_id": lambda: WorkflowRun.finish_id("r-1", db=db),
        "WorkflowRun.list": lambda: WorkflowRun.list(db=db),
        "WorkflowRun.lookup": lambda: WorkflowRun.lookup("r-1", db=db),
        "WorkflowRun.open_streams_of_ended_runs": lambda: WorkflowRun.open_streams_of_ended_runs(
            db=db
        ),
        "EventStream.create": stream.create,
        "EventStream.append": lambda: stream.append({"n": 1}),
        "EventStream.append_once": lambda: stream.append_once("k", {"n": 1}),
        "EventStream.read": stream.read,
        "EventStream.tail": first_tail_event,
        "EventStream.meta": stream.meta,
        "EventStream.close": stream.close,
        "EventStream.trim": lambda: stream.trim(keep_last=1),
        "EventStream.delete": stream.delete,
        "EventStream.append_chunk_segment": lambda: stream.append_chunk_segment(0, "x"),
        "EventStream.chunk_segments": stream.chunk_segments,
        "Session.open": lambda: Session.open("s-1", db=db),
        "Session.load": lambda: Session.load("s-1", db=db),
        "Session.save_snapshot": lambda: Session.save_snapshot("s-1", [], db=db),
        "Session.delete_id": lambda: Session.delete_id("s-1", db=db),
        "Submission.admit_dispatch": lambda: Submission.admit_dispatch(
            "d-1", session_id="s-1", input={}, db=db
        ),
        "Submission.admit_direct": lambda: Submission.admit_direct(
            "p-1", session_id="s-1", input={}, db=db
        ),
        "Submission.claim": lambda: Submission.claim("p-1", "w", db=db),
        "Submission.list_runnable": lambda: Submission.list_runnable(db=db),
        "Submission.list_expired": lambda: Submission.list_expired(db=db),
        "Submission.list_running": lambda: Submission.list_running(db=db),
        "Submission.has_unsettled": lambda: Submission.has_unsettled("s-1", db=db),
        "Submission.renew_leases": lambda: Submission.renew_leases("w", ["p-1"], db=db),
        "Submission.mark_input_applied": lambda: Submission.mark_input_applied(attempt, db=db),
        "Submission.requeue": lambda: Submission.requeue(attempt, db=db),
        "Submission.replace_attempt": lambda: Submission.replace_attempt("p-1", "a-1", "w2", db=db),
        "Submission.finish": lambda: Submission.finish(attempt, db=db),
        "Submission.settle_queued": lambda: Submission.settle_queued("p-1", "aborted", db=db),
        "Submission.journal_begin": lambda: Submission.journal_begin(attempt, db=db),
        "Submission.journal_phase": lambda: Submission.journal_phase(
            attempt, "provider_started", db=db
        ),
        "Submission.read_journal": lambda: Submission.read_journal("p-1", db=db),
        "Submission.insert_attempt_marker": lambda: Submission.insert_attempt_marker(
            "p-1", "a-1", db=db
        ),
        "Submission.list_attempt_markers": lambda: Submission.list_attempt_markers(db=db),
        "Submission.delete_session": lambda: Submission.delete_session("s-1", db=db),
        "Submission.interrupted_deletions": lambda: Submission.interrupted_deletions(db=db),
        "prune": lambda: fm.prune(Retention(ended_runs=dt.timedelta(days=1)), db=db),
    }


@pytest.fixture
async def broken(
    redis_servers: RedisServers, request: pytest.FixtureRequest
) -> AsyncIterator[fm.Database]:
    """A database whose server, after start-up, is dead or is not Redis."""
    server = redis_servers.start()
    async with ReplyDropper(server.port).running() as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        async with fm.connect(url, key_prefix="h", retry=QUICK, timeout=5) as db:
            if request.param == "dead":
                server.kill()
                proxy.close_all()
                yield db
            else:
                async with not_redis_port() as port:
                    proxy.retarget(port)
                    yield db


@pytest.mark.parametrize("broken", ["dead", "not-redis"], indirect=True)
async def test_every_entry_point_raises_a_flue_models_error(broken: fm.Database) -> None:
    wrong: list[str] = []
    for name, call in entry_points(broken).items():
        try:
            await within(call(), name, 20)
        except fm.FlueModelsError as exc:
            if not isinstance(exc, fm.ConnectionLostError | SchemaError):
                wrong.append(f"{name}: {type(exc).__name__}: {exc}")
            elif "redis.exceptions" not in type(exc.__cause__).__module__:
                wrong.append(f"{name}: {type(exc).__name__} caused by {exc.__cause__!r}")
        except Exception as exc:  # what escapes the hierarchy
            wrong.append(f"{name}: raw {type(exc).__module__}.{type(exc).__name__}: {exc}")
        else:
            wrong.append(f"{name}: returned without the server")
    assert not wrong, "\n".join(wrong)
