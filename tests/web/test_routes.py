"""Every route of the dashboard through its ASGI app (httpx, in-process) on a real server:
pages and the JSON API agree, filters and cursors page exactly, errors keep the library's
shapes, live tails wake, resume and end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pytest

import flue_models as fm
import flue_models.web.app as web_app
import flue_models.web.live as live
from flue_models import MessageEntry, Session, Submission, WorkflowRun
from flue_models.web import create_app
from tests.command_line import ROOT
from tests.conftest import RedisServers
from tests.waiting import poll_until, within
from tests.web.conftest import AsgiCall, client_for

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def start_runs(workflow: str, count: int, *, first: int = 0) -> list[WorkflowRun]:
    """``count`` runs started a minute apart from ``T0 + first`` minutes."""
    return [
        await WorkflowRun.start(workflow, started_at=T0 + dt.timedelta(minutes=first + n))
        for n in range(count)
    ]


async def follow_pages(web: httpx.AsyncClient, path: str) -> list[list[str]]:
    """Every page of an API listing, by its cursors: the ids of each."""
    pages, cursor = [], None
    while True:
        url = path + (f"&cursor={cursor}" if cursor else "")
        body = (await web.get(url)).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


# Runs ---------------------------------------------------------------------------------


async def test_runs_filter_by_workflow_and_status_and_page_with_cursors(
    web: httpx.AsyncClient,
) -> None:
    mine = await start_runs("ingest", 5)
    await start_runs("other", 2, first=10)
    for run in mine[:2]:
        await run.fail(error={"message": "no"})
    pages = await follow_pages(web, "/api/runs?workflow=ingest&limit=2")
    assert [len(p) for p in pages] == [2, 2, 1]  # a full last page has no cursor
    assert [i for page in pages for i in page] == [
        r.id for r in reversed(mine)
    ]  # newest first, each once
    errored = (await web.get("/api/runs?workflow=ingest&status=errored")).json()
    assert {i["id"] for i in errored["items"]} == {mine[0].id, mine[1].id}
    assert errored["counts"] == {"active": 3, "completed": 0, "errored": 2, "cancelled": 0}


async def test_runs_filter_by_start_time(web: httpx.AsyncClient) -> None:
    runs = await start_runs("timed", 4)  # T0, +1, +2, +3 minutes
    since = (T0 + dt.timedelta(minutes=1)).isoformat()
    until = (T0 + dt.timedelta(minutes=3)).isoformat()
    body = (await web.get("/api/runs", params={"since": since, "until": until})).json()
    assert [i["id"] for i in body["items"]] == [runs[2].id, runs[1].id]
    assert body["counts"]["active"] == 2
    naive = (await web.get("/api/runs", params={"since": "2026-01-01T00:02:00"})).json()
    assert [i["id"] for i in naive["items"]] == [runs[3].id, runs[2].id]  # naive is UTC


async def test_the_runs_page_links_its_next_page_with_its_filters(web: httpx.AsyncClient) -> None:
    runs = await start_runs("paged", 3)
    first = await web.get("/runs?workflow=paged&limit=2")
    assert first.status_code == 200
    href = re.search(r'id="next-page" href="([^"]+)"', first.text)
    assert href is not None
    link = href.group(1).replace("&amp;", "&")
    assert parse_qs(urlparse(link).query)["workflow"] == ["paged"]
    second = await web.get(link)
    assert runs[0].id in second.text
    assert runs[2].id not in second.text
    assert 'id="next-page"' not in second.text
    assert "First page" in second.text


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("status=bogus", "BadParameter"),
        ("cursor=not-a-cursor", "QueryError"),
        ("since=yesterday", "BadParameter"),
        ("limit=ten", "BadParameter"),
    ],
)
async def test_bad_listing_parameters_are_400_with_the_error_shape(
    web: httpx.AsyncClient, query: str, kind: str
) -> None:
    api = await web.get(f"/api/runs?{query}")
    assert api.status_code == 400
    assert api.json()["error"]["type"] == kind
    page = await web.get(f"/runs?{query}")
    assert page.status_code == 400
    assert kind in page.text


async def test_a_cursor_of_another_listing_is_refused(web: httpx.AsyncClient) -> None:
    await start_runs("a", 2)
    cursor = (await web.get("/api/runs?workflow=a&limit=1")).json()["next_cursor"]
    other = await web.get(f"/api/runs?status=errored&cursor={cursor}")
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "QueryError"


async def test_run_detail_shows_input_result_and_events(web: httpx.AsyncClient) -> None:
    run = await WorkflowRun.start("detail", input={"doc": "d-1"})
    await run.events.append({"type": "log", "message": "step one"})
    await run.finish(result={"pages": 12})
    body = (await web.get("/api/run", params={"id": run.id})).json()
    assert body["run"]["result"] == {"pages": 12}
    assert body["stream"]["closed"] is True
    assert [e["data"]["message"] for e in body["stream"]["events"]] == ["step one"]
    page = await web.get("/run", params={"id": run.id})
    assert "step one" in page.text
    assert "&#34;pages&#34;: 12" in page.text
    assert 'data-state="closed"' in page.text
    assert "data-source" not in page.text


async def test_an_active_run_page_follows_its_stream_from_the_last_offset_shown(
    web: httpx.AsyncClient,
) -> None:
    run = await WorkflowRun.start("live")
    offset = await run.events.append({"n": 1})
    page = await web.get("/run", params={"id": run.id})
    source = re.search(r'data-source="([^"]+)"', page.text)
    assert source is not None
    assert parse_qs(urlparse(source.group(1).replace("&amp;", "&")).query) == {
        "path": [f"runs/{run.id}"],
        "after": [offset],
    }


async def test_an_unknown_run_is_404(web: httpx.AsyncClient) -> None:
    assert (await web.get("/run?id=nope")).status_code == 404
    api = await web.get("/api/run?id=nope")
    assert api.status_code == 404
    assert api.json() == {"error": {"type": "NotFound", "message": "no run 'nope'"}}


async def test_the_home_page_is_the_runs_page(web: httpx.AsyncClient) -> None:
    response = await web.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/runs"


# Live tails ---------------------------------------------------------------------------


async def test_a_live_tail_wakes_on_appends_and_ends_when_the_run_ends(db: fm.Database) -> None:
    run = await WorkflowRun.start("live")
    call = AsgiCall(create_app(db), "/live", f"path=runs/{run.id}&after=-1")
    await run.events.append({"step": "<one>"})
    await call.until('"step":"<one>"')
    assert call.status == 200
    assert call.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in call.headers  # a length would end the response at once
    await run.events.append({"step": 2})
    await call.until('"step":2')
    await run.finish(result={})
    await call.until("event: closed")
    await within(call.task, "the response to end with the stream")
    frames = call.text.split("\n\n")
    assert frames[0].startswith("id: ")
    assert '"data":{"step":"<one>"}' in frames[0]
    assert frames[2] == "event: closed\ndata: {}"


async def test_a_reconnecting_browser_resumes_after_the_last_event_id(db: fm.Database) -> None:
    run = await WorkflowRun.start("resume")
    offsets = [await run.events.append({"n": n}) for n in range(3)]
    await run.finish()
    call = AsgiCall(create_app(db), "/live", f"path=runs/{run.id}", {"Last-Event-ID": offsets[0]})
    await within(call.task, "the tail of a closed stream")
    sent = re.findall(r"^id: (\S+)$", call.text, flags=re.M)
    assert sent == offsets[1:]
    assert call.text.endswith("event: closed\ndata: {}\n\n")


async def test_a_client_that_leaves_ends_its_tail(db: fm.Database) -> None:
    run = await WorkflowRun.start("leave")
    call = AsgiCall(create_app(db), "/live", f"path=runs/{run.id}&after=-1")
    await run.events.append({"n": 1})
    await call.until('"n":1')
    call.hang_up.set()
    await within(call.task, "the response to end when its client left")
    assert "event: closed" not in call.text


async def test_a_quiet_tail_sends_keep_alive_comments(
    db: fm.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.05)
    run = await WorkflowRun.start("quiet")
    call = AsgiCall(create_app(db), "/live", f"path=runs/{run.id}&after=-1")
    await call.until(": keep-alive\n\n")
    call.hang_up.set()
    await within(call.task, "the response to end")


async def test_live_needs_an_existing_stream(web: httpx.AsyncClient) -> None:
    assert (await web.get("/live")).status_code == 400
    missing = await web.get("/live?path=runs/none")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NotFound"


# Sessions -----------------------------------------------------------------------------


async def test_sessions_by_agent_newest_first_with_cursors(web: httpx.AsyncClient) -> None:
    ids = []
    for n in range(3):
        session = await Session.open(fm.session_key("support", "eu-1", "h", f"s{n}"))
        await session.append(MessageEntry(id="m", role="user", content="hi"))
        ids.append(session.id)
    await Session.open(fm.session_key("billing", "eu-1", "h", "x"))
    pages = await follow_pages(web, "/api/sessions?agent=support&limit=2")
    assert [i for page in pages for i in page] == list(reversed(ids))
    page = await web.get("/sessions?agent=support")
    assert all(i in page.text for i in ids)
    assert "billing" not in page.text


async def test_a_session_shows_its_context_and_pages_its_history_backwards(
    web: httpx.AsyncClient,
) -> None:
    session = await Session.open("support/eu-1/h/long")
    parent = None
    for n in range(5):
        await session.append(MessageEntry(id=f"m{n}", parent_id=parent, role="user", content=n))
        parent = f"m{n}"
    await session.append(
        fm.CompactionEntry(
            id="c", parent_id="m4", summary="asked five times", first_kept_entry_id="m3",
            tokens_before=100,
        )
    )  # fmt: skip
    body = (await web.get("/api/session?id=support/eu-1/h/long&limit=4")).json()
    assert body["context"]["summary"] == "asked five times"
    assert [m["id"] for m in body["context"]["messages"]] == ["m3", "m4"]
    assert [e["id"] for e in body["history"]["entries"]] == ["m2", "m3", "m4", "c"]
    cursor = body["history"]["next_cursor"]
    older = (await web.get(f"/api/session?id=support/eu-1/h/long&limit=4&before={cursor}")).json()
    assert [e["id"] for e in older["history"]["entries"]] == ["m0", "m1"]
    assert older["history"]["next_cursor"] is None
    page = await web.get("/session?id=support/eu-1/h/long&limit=4")
    assert 'id="older"' in page.text
    assert "asked five times" in page.text


async def test_an_unknown_session_is_404(web: httpx.AsyncClient) -> None:
    assert (await web.get("/api/session?id=a/b/c/d")).status_code == 404
    missing = await web.get("/api/session")
    assert missing.status_code == 400


# Submissions --------------------------------------------------------------------------


async def test_submission_views(db: fm.Database, web: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c", "d"):
        await Submission.admit_direct(f"p-{name}", session_id=f"s-{name}", input={})
    await Submission.admit_direct("p-a2", session_id="s-a", input={})  # behind p-a
    running = await Submission.claim("p-b", owner_id="w")
    expired = await Submission.claim("p-c", owner_id="w", lease=dt.timedelta(0))
    settled = await Submission.claim("p-d", owner_id="w")
    assert running
    assert expired
    assert settled
    await Submission.finish(settled)
    await poll_until(
        lambda: _has_expired(db), "the 1 ms lease to expire by the server clock", seconds=10
    )

    async def ids(query: str) -> list[str]:
        return [i["id"] for i in (await web.get(f"/api/submissions?{query}")).json()["items"]]

    assert await ids("view=runnable") == ["p-a"]  # heads only: p-a2 waits behind p-a
    assert await ids("view=running") == ["p-b", "p-c"]
    assert await ids("view=expired") == ["p-c"]
    assert await ids("view=settled") == ["p-d"]
    assert await ids("session_id=s-a") == ["p-a2", "p-a"]
    body = (await web.get("/api/submissions?view=running")).json()
    assert [i["lease_expired"] for i in body["items"]] == [False, True]
    page = await web.get("/submissions?view=expired")
    assert "(expired)" in page.text
    assert "Requeue" not in page.text
    assert (await web.get("/api/submissions?view=all")).status_code == 400


async def _has_expired(db: fm.Database) -> bool:
    return bool(await Submission.list_expired(db=db))


# Streams and the server ---------------------------------------------------------------


async def test_streams_read_by_offset(web: httpx.AsyncClient) -> None:
    stream = fm.EventStream("tools/search")
    await stream.create()
    offsets = [await stream.append({"n": n}) for n in range(5)]
    body = (await web.get("/api/streams", params={"path": "tools/search", "limit": 2})).json()
    assert [e["offset"] for e in body["events"]] == offsets[:2]
    assert body["next_offset"] == offsets[1]
    assert body["up_to_date"] is False
    after = {"path": "tools/search", "after": offsets[3]}
    rest = (await web.get("/api/streams", params=after)).json()
    assert [e["data"]["n"] for e in rest["events"]] == [4]
    page = await web.get("/streams", params={"path": "tools/search", "limit": 2})
    assert 'id="next-page"' in page.text
    assert "data-source" not in page.text
    live = await web.get("/streams", params={"path": "tools/search"})
    assert "data-source" in live.text  # up to date and open: it follows the stream
    assert (await web.get("/api/streams", params={"path": "nope"})).status_code == 404
    bad = await web.get("/api/streams", params={"path": "tools/search", "after": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "QueryError"
    assert (await web.get("/streams")).status_code == 200  # the empty form


async def test_the_server_page_shows_the_schema_and_the_server(
    db: fm.Database, web: httpx.AsyncClient
) -> None:
    body = (await web.get("/api/server")).json()
    assert body["prefix"] == db.keys.prefix
    builtin = body["schema"][0]
    assert builtin["set"] == "flue"
    assert builtin["pending"] == []
    assert builtin["stored"] == builtin["newest"] == fm.schema.LAYOUT_VERSION
    assert builtin["applied"] == [f"flue/{fm.schema.LAYOUT_VERSION:04d}_layout"]
    assert body["server"]["used_memory"] > 0
    assert body["server"]["maxmemory_policy"] == "noeviction"
    assert body["checks"]["refusal"] is None
    page = await web.get("/server")
    assert builtin["applied"][0] in page.text
    assert "MiB used" in page.text
    assert "passed (standalone, noeviction" in page.text


async def test_the_server_page_shows_a_refusal_and_warnings(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    evicting = redis_servers.start("--maxmemory-policy", "allkeys-lru")
    forgetful = redis_servers.start("--appendonly", "no")
    for server, wanted in ((evicting, "refused: The server"), (forgetful, "warning: The server")):
        db = await fm.connect(server.url, key_prefix=key_prefix, inspect_server=False)
        async with db, client_for(db) as web:
            checks = (await web.get("/api/server")).json()["checks"]
            page = await web.get("/server")
        if server is evicting:
            assert "maxmemory-policy is 'allkeys-lru'" in checks["refusal"]
        else:
            assert checks["refusal"] is None
            assert checks["warnings"][0].startswith("The server keeps nothing on disk")
        assert wanted in page.text


async def test_the_server_page_of_a_cluster_shows_each_primary_and_its_replicas(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    nodes = redis_servers.start_cluster(replicas=1)
    try:
        db = await fm.connect(nodes[0].url, key_prefix=key_prefix)
        async with db, client_for(db) as web:
            server = (await web.get("/api/server")).json()["server"]
            page = (await web.get("/server")).text
    finally:
        for node in nodes:
            node.kill()
    shown = {p["node"]: p for p in server["primaries"]}
    assert set(shown) == {f"127.0.0.1:{n.port}" for n in nodes[:3]}
    for primary in shown.values():
        assert primary["maxmemory_policy"] == "noeviction"
        assert "online, lag" in primary["replicas"]
        assert f"<code>{primary['node']}</code>" in page
    assert "passed (cluster of 3 primaries" in page


async def test_the_url_password_is_never_shown(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    secret = "pa/ss@w:rd%"
    server = redis_servers.start("--requirepass", secret)
    url = f"redis://:{quote(secret, safe='')}@127.0.0.1:{server.port}/0"
    async with fm.connect(url, key_prefix=key_prefix) as db, client_for(db) as web:
        for path in ("/server", "/api/server", "/runs", "/api/runs"):
            response = await web.get(path)
            assert response.status_code == 200
            assert "pa/ss" not in response.text
            assert "pa%2Fss" not in response.text
        assert "***" in (await web.get("/api/server")).json()["url"]


async def test_a_server_out_of_reach_is_503_with_the_library_error(
    redis_servers: RedisServers, key_prefix: str
) -> None:
    server = redis_servers.start()
    retry = fm.RetryPolicy(retries=1, base=0.01, cap=0.01)
    db = await fm.connect(server.url, key_prefix=key_prefix, retry=retry)
    async with db, client_for(db) as web:
        assert (await web.get("/api/runs")).status_code == 200
        server.kill()
        api = await web.get("/api/runs")
        assert api.status_code == 503
        assert api.json()["error"]["type"] in ("ConnectionLostError", "ConnectionFailedError")
        page = await web.get("/runs")
        assert page.status_code == 503
        assert "Connection" in page.text


async def test_a_tail_that_loses_the_server_for_good_says_failed(
    redis_servers: RedisServers, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "TAIL_OUTAGE_SECONDS", 0.5)
    server = redis_servers.start()
    db = await fm.connect(server.url, key_prefix=key_prefix)
    async with db:
        run = await WorkflowRun.start("doomed", db=db)
        call = AsgiCall(create_app(db), "/live", f"path=runs/{run.id}&after=-1")
        await run.events.append({"n": 1})
        await call.until('"n":1')
        server.kill()
        await call.until("event: failed\ndata: ")
        await within(call.task, "the response to end after the failure")
    failure = json.loads(call.text.split("event: failed\ndata: ")[1])
    assert failure["error"]["type"] in ("ConnectionLostError", "ConnectionFailedError")


class Broken:
    """A stream whose tail raises what no library call raises: a bug in the dashboard."""

    async def tail(self, after: str, outage: float) -> AsyncIterator[object]:
        raise RuntimeError("a bug")
        yield  # an async generator


async def test_an_unexpected_tail_error_is_told_and_raised() -> None:
    response = live.EventSourceResponse(Broken(), "-1")  # type: ignore[arg-type]
    call = AsgiCall(response, "/live")
    with pytest.raises(RuntimeError, match="a bug"):
        await within(call.task, "the response to end")
    assert call.text.startswith('event: failed\ndata: {"error": {"type": "RuntimeError"')
    assert call.chunks[-1] == b""  # the response was ended, not left open


async def test_every_route_the_docs_name_exists(web: httpx.AsyncClient) -> None:
    text = (ROOT / "docs" / "dashboard.md").read_text()
    gets = re.findall(r"^\| `GET (/[^` ]+)`", text, flags=re.M)
    posts = [p for row in re.findall(r"^\| (`/actions/.*)$", text, flags=re.M)
             for p in re.findall(r"`(/[a-z/]+)`", row.split("|")[0])]  # fmt: skip
    assert len(gets) == 11
    assert len(posts) == 6
    for path in gets:
        response = await web.get(path.replace("<id>", "x"))
        assert response.headers["content-type"] != "text/plain; charset=utf-8", path
        assert response.status_code in (200, 400, 404), path  # ours, not routing's
        if response.status_code != 200:
            assert response.json()["error"]["type"] in ("BadParameter", "NotFound"), path
    for path in posts:
        refused = await web.post(path)
        assert refused.status_code == 403, path  # the route exists; read-only refuses it


async def test_page_sizes_are_clamped_as_the_library_clamps_them(web: httpx.AsyncClient) -> None:
    await start_runs("sized", 3)
    for limit, shown in (("0", 3), ("-4", 3), ("2", 2), ("1000000000", 3)):
        for path in ("/api/runs", "/api/sessions", "/api/submissions?view=settled&"):
            joiner = "" if path.endswith("&") else "?"
            response = await web.get(f"{path}{joiner}limit={limit}")
            assert response.status_code == 200, (path, limit)
        runs = (await web.get(f"/api/runs?limit={limit}")).json()["items"]
        assert len(runs) == shown


async def test_a_corrupted_run_row_is_named_and_never_hides_the_others(
    db: fm.Database, web: httpx.AsyncClient
) -> None:
    runs = await start_runs("mixed", 3)
    spec = WorkflowRun.__flue_spec__
    broken = spec.record_key(db.keys, runs[1].id)
    await db.client.hset(broken, "status", "<b>exploded</b>")
    body = (await web.get("/api/runs")).json()
    assert [i["id"] for i in body["items"]] == [runs[2].id, runs[0].id]
    assert [s["key"] for s in body["skipped"]] == [broken]
    page = await web.get("/runs")
    assert "1 unreadable row(s) left out" in page.text
    assert "<b>exploded" not in page.text
    detail = await web.get("/api/run", params={"id": runs[1].id})
    assert detail.status_code == 500
    assert detail.json()["error"]["type"] == "DecodeError"
    assert (await web.get("/run", params={"id": runs[1].id})).status_code == 500


async def test_a_fork_shows_its_parent_and_the_parent_lists_its_forks(
    web: httpx.AsyncClient,
) -> None:
    parent = await Session.open("support/eu-1/h/parent")
    await parent.append(MessageEntry(id="m0", role="user", content="first"))
    await parent.append(MessageEntry(id="m1", parent_id="m0", role="user", content="second"))
    fork = await Session.fork(parent.id, "m0", new_id="support/eu-1/h/fork")
    await fork.append(MessageEntry(id="f1", parent_id="m0", role="user", content="other"))
    body = (await web.get("/api/session", params={"id": fork.id})).json()
    assert body["record"]["fork_of"] == parent.id
    assert [m["id"] for m in body["context"]["messages"]] == ["m0", "f1"]
    assert [e["id"] for e in body["history"]["entries"]] == ["m0", "f1"]
    page = await web.get("/session", params={"id": fork.id})
    assert f'href="/session?id={quote(parent.id, safe="")}"' in page.text
    listed = re.search(
        r'id="forks" href="([^"]+)"', (await web.get("/session", params={"id": parent.id})).text
    )
    assert listed is not None
    assert fork.id in (await web.get(listed.group(1).replace("&amp;", "&"))).text
    forks = (await web.get("/api/sessions", params={"fork_of": parent.id})).json()
    assert [s["id"] for s in forks["items"]] == [fork.id]


async def test_a_stopping_server_ends_its_open_tails(db: fm.Database) -> None:
    run = await WorkflowRun.start("open")
    stopping = asyncio.Event()
    call = AsgiCall(create_app(db, stopping=stopping), "/live", f"path=runs/{run.id}&after=-1")
    await run.events.append({"n": 1})
    await call.until('"n":1')
    stopping.set()
    await within(call.task, "the response to end when the server stops")
    assert call.chunks[-1] == b""  # ended, not abandoned
    assert "event: closed" not in call.text  # the stream itself is still open


HOSTILE_IDS = ["..", ".", "a/../b", "/lead", "?x#y", "%2e%2e", "sp ace", "&amp;", "日本"]


async def test_every_listed_run_and_session_links_to_its_own_page(
    web: httpx.AsyncClient,
) -> None:
    for n, hostile in enumerate(HOSTILE_IDS):
        await WorkflowRun.start("odd", run_id=hostile, started_at=T0 + dt.timedelta(minutes=n))
        await Session.open(hostile)
    for listing, detail, field in (("/runs", "/run", "run"), ("/sessions", "/session", "record")):
        page = await web.get(listing)
        links = re.findall(rf'href="({detail}\?id=[^"]+)"', page.text)
        assert len(links) == len(HOSTILE_IDS), listing
        shown = []
        for link in links:
            target = urlparse(link.replace("&amp;", "&"))
            assert target.path == detail  # a browser resolves no dot segment in a query
            api = await web.get("/api" + detail + "?" + target.query)
            shown.append(api.json()[field]["id"])
        assert sorted(shown) == sorted(HOSTILE_IDS)


async def test_a_corrupted_submission_never_hides_the_others(
    db: fm.Database, web: httpx.AsyncClient
) -> None:
    for name in ("bad", "good"):
        await Submission.admit_direct(name, session_id="s-1", input={})
        attempt = await Submission.claim(name, owner_id="w")
        assert attempt is not None
        await Submission.finish(attempt)
    broken = Submission.__flue_spec__.record_key(db.keys, "bad", "s-1")
    await db.client.hset(broken, "attempt_count", "<i>lots</i>")
    for query in ("view=settled", "session_id=s-1"):
        with pytest.warns(fm.SkippedRecordWarning):  # the server's log says so too
            body = (await web.get(f"/api/submissions?{query}")).json()
        assert [i["id"] for i in body["items"]] == ["good"], query
        assert [s["key"] for s in body["skipped"]] == [broken], query
    with pytest.warns(fm.SkippedRecordWarning):
        page = await web.get("/submissions?view=settled")
    assert "1 unreadable row(s) left out" in page.text
    assert "<i>lots" not in page.text


async def test_live_tails_beyond_the_cap_are_refused_and_slots_come_back(
    db: fm.Database,
) -> None:
    run = await WorkflowRun.start("popular")
    app = create_app(db, max_tails=2)
    query = f"path=runs/{run.id}&after=-1"
    first, second = AsgiCall(app, "/live", query), AsgiCall(app, "/live", query)
    await run.events.append({"n": 1})
    await first.until('"n":1')
    await second.until('"n":1')
    third = AsgiCall(app, "/live", query)
    await within(third.task, "the refusal")
    assert third.status == 503
    assert '"TooManyTails"' in third.text
    first.hang_up.set()
    await within(first.task, "the first tail to end")
    fourth = AsgiCall(app, "/live", query)
    await fourth.until('"n":1')  # the slot came back
    await run.finish()
    await within(asyncio.gather(second.task, fourth.task), "the tails to end with the run")


async def test_a_long_run_page_shows_its_last_events_then_follows(
    web: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_app, "RUN_EVENTS", 3)
    run = await WorkflowRun.start("long")
    offsets = [await run.events.append({"n": n}) for n in range(7)]
    body = (await web.get("/api/run", params={"id": run.id})).json()["stream"]
    assert [e["data"]["n"] for e in body["events"]] == [4, 5, 6]
    assert (body["length"], body["earlier"], body["next_offset"]) == (7, 4, offsets[-1])
    page = await web.get("/run", params={"id": run.id})
    assert "the last 3 of 7 events; the first 4 are in the stream reader" in page.text
    source = re.search(r'data-source="([^"]+)"', page.text)
    assert source is not None
    assert f"after={offsets[-1]}" in source.group(1)  # the tail goes on from the last shown


# What a user meets first: times, types, durations, a submission page, counts, search,
# the chart, JSON errors everywhere under /api/ ------------------------------------------


async def test_events_show_their_time_and_type_and_a_run_its_duration_readably(
    web: httpx.AsyncClient,
) -> None:
    run = await WorkflowRun.start("timed", started_at=T0)
    await run.events.append({"type": "log", "message": "one"})
    await run.events.append({"message": "no type"})
    page = await web.get("/run", params={"id": run.id})
    rows = re.findall(r"<tr><td title=\"[0-9_]+\">(\d+)</td><td title=\"([^\"]*)\">([^<]*)</td>"
                      r"<td>([^<]*)</td>", page.text)  # fmt: skip
    assert [(seq, kind) for seq, _at, _clock, kind in rows] == [("0", "log"), ("1", "")]
    at, clock = rows[0][1], rows[0][2]
    assert dt.datetime.fromisoformat(at) <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert clock == at[11:23]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", clock)
    assert 'data-box="result" hidden' in page.text  # no result yet: no empty box
    assert 'data-box="error" hidden' in page.text
    assert "null" not in page.text
    await run.fail(error={"message": "no"})  # ended long after T0: a duration in hours
    ended = await web.get("/run", params={"id": run.id})
    assert re.search(r'data-field="duration_ms" title="\d+ ms">\d+ h \d+ min<', ended.text)
    assert 'data-box="error"><h2>' in ended.text
    listed = await web.get("/runs")
    assert re.search(r"<td title=\"\d+\">\d+ h \d+ min</td>", listed.text)


async def test_a_submission_page_shows_its_payload_attempts_lease_and_journal(
    web: httpx.AsyncClient,
) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={"prompt": "<b>hi</b>"})
    attempt = await Submission.claim("p-1", owner_id="worker-a")
    assert attempt is not None
    await Submission.journal_begin(attempt)
    body = (await web.get("/api/submission", params={"id": "p-1"})).json()
    assert body["record"]["input"] == {"prompt": "<b>hi</b>"}
    assert (body["record"]["attempt_count"], body["lease_expired"]) == (1, False)
    assert body["journal"]["attempt_id"] == attempt.attempt_id
    page = await web.get("/submission", params={"id": "p-1"})
    assert "&lt;b&gt;hi&lt;/b&gt;" in page.text  # the payload, escaped
    assert "worker-a" in page.text
    assert "1 of at most 10" in page.text
    assert attempt.attempt_id in page.text
    listed = await web.get("/submissions", params={"view": "running"})
    assert '<a href="/submission?id=p-1">' in listed.text
    missing = await web.get("/api/submission", params={"id": "nope"})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no submission 'nope'"


async def test_the_submissions_page_counts_each_view(
    db: fm.Database, web: httpx.AsyncClient
) -> None:
    for n in range(3):
        await Submission.admit_direct(f"q-{n}", session_id=f"s-{n}", input={})
    await Submission.claim("q-0", owner_id="w")
    expired = await Submission.claim("q-1", owner_id="w", lease=dt.timedelta(0))
    assert expired is not None
    await poll_until(
        lambda: _lease_over(db, "q-1"), "the zero lease to be over by the server clock"
    )
    body = (await web.get("/api/submissions")).json()
    assert body["counts"] == {"queued": 1, "running": 2, "expired": 1, "settled": 0}
    page = await web.get("/submissions")
    assert re.search(r"expired <b>1</b>", page.text)


async def _lease_over(db: fm.Database, submission_id: str) -> bool:
    row = await Submission.get(submission_id)
    assert row is not None
    assert row.lease_expires_at is not None
    return row.lease_expires_at < await db.server_time()


async def test_search_finds_a_run_session_submission_or_stream_by_id(
    web: httpx.AsyncClient,
) -> None:
    run = await WorkflowRun.start("found")
    await Session.open("shared-id")
    await Submission.admit_direct("shared-id", session_id="other", input={})
    straight = await web.get("/search", params={"q": run.id})
    assert straight.status_code == 303
    assert straight.headers["location"] == f"/run?id={run.id}"
    stream = await web.get("/search", params={"q": f"runs/{run.id}"})
    assert stream.headers["location"] == "/streams?path=" + quote(f"runs/{run.id}", safe="")
    both = (await web.get("/api/search", params={"q": "shared-id"})).json()
    assert [m["kind"] for m in both["matches"]] == ["session", "submission"]
    several = await web.get("/search", params={"q": "shared-id"})
    assert several.status_code == 200
    assert '<a href="/submission?id=shared-id">' in several.text
    nothing = await web.get("/search", params={"q": "<i>nope</i>"})
    assert "nothing is named <code>&lt;i&gt;nope&lt;/i&gt;</code>" in nothing.text
    assert (await web.get("/api/search")).json() == {"query": None, "matches": []}


async def test_the_runs_chart_counts_runs_over_time_by_status(
    db: fm.Database, web: httpx.AsyncClient
) -> None:
    now = await db.server_time()
    for minutes_ago, ending in ((5, "finish"), (5, "fail"), (50, None), (90, "finish")):
        run = await WorkflowRun.start("charted", started_at=now - dt.timedelta(minutes=minutes_ago))
        if ending == "finish":
            await run.finish()
        elif ending == "fail":
            await run.fail(error={})
    hour = (await web.get("/api/runs/chart", params={"span": "hour"})).json()
    assert len(hour["bars"]) == web_app.BARS
    totals = {s: sum(b["counts"][s] for b in hour["bars"]) for s in hour["bars"][0]["counts"]}
    assert totals == {"active": 1, "completed": 1, "errored": 1, "cancelled": 0}  # 90 min: out
    assert sum(hour["bars"][-3]["counts"].values()) + sum(hour["bars"][-2]["counts"].values()) + \
        sum(hour["bars"][-1]["counts"].values()) == 2  # fmt: skip
    day = (await web.get("/api/runs/chart", params={"span": "day"})).json()
    assert sum(sum(b["counts"].values()) for b in day["bars"]) == 4
    await WorkflowRun.start("other", started_at=now - dt.timedelta(minutes=5))
    params = {"span": "day", "workflow": "charted"}
    mine = (await web.get("/api/runs/chart", params=params)).json()
    assert sum(sum(b["counts"].values()) for b in mine["bars"]) == 4  # not the other's
    page = await web.get("/runs", params={"span": "hour"})
    assert page.text.count('class="fill-completed"') == 1
    assert "1 completed, 1 errored" in page.text  # the bar's tooltip
    bad = await web.get("/api/runs/chart", params={"span": "year"})
    assert bad.status_code == 400


async def test_every_api_path_answers_json_even_when_there_is_none(
    web: httpx.AsyncClient,
) -> None:
    for method, path, status in (
        ("GET", "/api/nothing", 404),
        ("GET", "/api/runs/nope/deeper", 404),
        ("POST", "/api/runs", 405),
        ("DELETE", "/api/run", 405),
    ):
        response = await web.request(method, path)
        assert response.status_code == status, path
        assert response.headers["content-type"] == "application/json", path
        assert response.json()["error"]["type"] in ("NotFound", "MethodNotAllowed"), path
    page = await web.get("/nothing")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no path /nothing" in page.text
