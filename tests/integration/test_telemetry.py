"""OpenTelemetry spans, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

import flue_models as fm
from flue_models import telemetry
from tests.conftest import BUILTIN_MIGRATIONS
from tests.integration.models import Ticket


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """A tracer provider for this test only (the global one can be set once per process)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    trace.set_tracer_provider(provider)
    yield memory
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert found, [s.name for s in spans]
    return found[-1]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_spans_are_off_without_a_tracer_provider() -> None:
    assert not telemetry.enabled()


async def test_with_spans_off_an_operation_does_not_ask_for_the_provider(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trace.get_tracer_provider()`` looks a variable up in ``os.environ`` on every call
    while no provider is set: with none set, the library's check reads OpenTelemetry's
    global instead and never calls it."""
    assert telemetry.UNSET_READABLE
    asked: list[bool] = []

    def provider() -> Any:
        asked.append(True)
        return trace.ProxyTracerProvider()

    monkeypatch.setattr(trace, "get_tracer_provider", provider)
    ticket = await Ticket(status="open", priority=1).save()
    assert await Ticket.get(ticket.id) is not None
    assert await Ticket.find(Ticket.status == "open").count() == 1
    assert not telemetry.enabled()
    assert asked == []


async def test_each_operation_is_one_client_span(
    db: fm.Database, exporter: InMemorySpanExporter
) -> None:
    ticket = await Ticket(status="open", priority=1, title="secret-title").save()
    await Ticket.get(ticket.id)
    await Ticket.find(Ticket.status == "open").page(limit=10)
    run = await fm.WorkflowRun.start("summarize", input={"text": "private words"})
    await run.events.append({"type": "log", "message": "private words"})
    await run.events.read()
    await run.finish(result={"summary": "private words"})
    spans = exporter.get_finished_spans()

    save = by_name(spans, "save it_ticket")
    assert save.kind == SpanKind.CLIENT
    assert db.report is not None
    assert attributes(save) == {
        "db.system.name": db.report.flavor,
        "db.operation.name": "save",
        "db.collection.name": "it_ticket",
        "db.namespace": "0",
        "server.address": "127.0.0.1",
        "server.port": int(db.url.url.rsplit(":", 1)[1].split("/")[0]),
    }
    for name in (
        "get it_ticket",
        "query it_ticket",
        "run.start workflow_run",
        "stream.append stream",
        "stream.read stream",
        "run.finish workflow_run",
    ):
        assert attributes(by_name(spans, name))["db.operation.name"] == name.split()[0]
    for span in spans:  # no value of a record, an event or a key is ever recorded
        text = repr(attributes(span))
        assert "secret-title" not in text
        assert "private words" not in text
        assert ticket.id not in text


async def test_a_refused_write_marks_its_span_as_an_error(
    db: fm.Database, exporter: InMemorySpanExporter
) -> None:
    ticket = await Ticket(status="open", priority=1).save()
    stale = await Ticket.get(ticket.id)
    assert stale is not None
    await ticket.update(status="closed")
    exporter.clear()
    with pytest.raises(fm.ConflictError):
        await stale.update(status="other")
    span = by_name(exporter.get_finished_spans(), "save it_ticket")
    assert span.status.status_code == StatusCode.ERROR
    assert attributes(span)["error.type"] == "ConflictError"


async def test_each_migration_file_is_a_span(
    redis_url: str, key_prefix: str, exporter: InMemorySpanExporter
) -> None:
    async with fm.connect(redis_url, key_prefix=key_prefix):
        pass
    files = [
        attributes(span)["flue.migration.file"]
        for span in exporter.get_finished_spans()
        if span.name == "migrate"
    ]
    assert files == BUILTIN_MIGRATIONS
