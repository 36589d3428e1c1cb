"""The dashboard's routes: each view reads through the public API and returns JSON-ready
data, served as JSON under ``/api/`` and as a server-rendered page elsewhere.

Example:
    ```python
    async with fm.connect() as db:
        app = create_app(db)        # an ASGI app: uvicorn, hypercorn, or httpx in tests
    ```
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flue_models.connection import Database
from flue_models.errors import ConfigurationError, FlueModelsError
from flue_models.inspection import assess, memory_text, read_server
from flue_models.model.query import Page, page_size
from flue_models.schema import schema_status
from flue_models.state.events import (
    START,
    EventStream,
    StreamInfo,
    event_json,
    format_offset,
)
from flue_models.state.retention import KIND_NAMES, Retention, parse_age, prune_all
from flue_models.state.run import EndResult, RunStatus, WorkflowRun
from flue_models.state.session import Session
from flue_models.state.submission import Submission
from flue_models.web.answers import HttpError, error_body, error_json, error_status
from flue_models.web.live import MAX_TAILS, EventSourceResponse, TailSlots
from flue_models.web.security import Csrf

HERE = Path(__file__).parent
#: Submission views of the submissions page.
SUBMISSION_VIEWS = ("runnable", "running", "expired", "settled")
#: Events a run page shows before its live tail starts.
RUN_EVENTS = 1000
#: The spans the runs chart covers, and how many bars it draws over one.
SPANS = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(days=7),
}
BARS = 24

View = Callable[[Request], Awaitable[dict[str, Any]]]


def _actions_off() -> HttpError:
    return HttpError(403, "ActionsDisabled", "actions need serve --allow-actions")


# Parameters --------------------------------------------------------------------------


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _id(request: Request) -> str:
    """The ``id`` query parameter of a detail page. Ids travel in the query, never in the
    path: an id such as ``..`` or ``a/../b`` would be rewritten by the browser there."""
    value = request.query_params.get("id", "")
    if not value:
        raise HttpError(400, "BadParameter", "id is required")
    return value


def _int(request: Request, name: str, default: int) -> int:
    value = _text(request, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise HttpError(400, "BadParameter", f"{name} must be an integer, not {value!r}") from None


def _limit(request: Request) -> int:
    """The page size of ``?limit=``, by the library's one rule
    (:func:`~flue_models.model.query.page_size`): none given, zero or less is 100, at
    most 1000."""
    return page_size(_int(request, "limit", 0))


def _time(request: Request, name: str) -> dt.datetime | None:
    value = _text(request, name)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise HttpError(
            400, "BadParameter", f"{name} must be an ISO date or time, not {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = _text(request, name)
    if value is not None and value not in choices:
        raise HttpError(400, "BadParameter", f"{name} must be one of {', '.join(choices)}")
    return value


async def _stream_info(db: Database, path: str) -> StreamInfo | None:
    """The stream ``path`` names, if it is a stream path and the stream exists."""
    try:
        stream: EventStream[Any] = EventStream(path, db=db)
    except ConfigurationError:  # not a stream path
        return None
    return await stream.meta()


def duration_text(ms: Any) -> str:
    """A duration in milliseconds as people read it.

    Example:
        >>> duration_text(840), duration_text(20095), duration_text(184_000)
        ('840 ms', '20.1 s', '3 min 4 s')
        >>> duration_text(7_560_000), duration_text(None)
        ('2 h 6 min', '')
    """
    if ms is None:
        return ""
    seconds = int(ms) / 1000
    if seconds < 1:
        return f"{int(ms)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _dump(item: BaseModel) -> dict[str, Any]:
    return item.model_dump(mode="json")


def _listing(page: Page[Any] | None, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A listing's ``items`` (the page's, dumped, unless given), ``next_cursor`` and the
    unreadable rows it ``skipped``."""
    if page is None:
        return {"items": items or [], "next_cursor": None, "skipped": []}
    return {
        "items": [_dump(item) for item in page.items] if items is None else items,
        "next_cursor": page.next_cursor,
        "skipped": [{"key": e.key, "field": e.field, "message": str(e)} for e in page.skipped],
    }


def _event(event: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event_json(event))
    return data


# Views: JSON-ready data from the public API ------------------------------------------


class _Views:
    """The dashboard's reads and actions on one database.

    Example:
        ```python
        data = await _Views(db).runs(request)
        ```
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def runs(self, request: Request) -> dict[str, Any]:
        """Runs newest first, filtered by status, workflow and start time, with counts."""
        status: Any = _choice(request, "status", get_args(RunStatus))
        workflow = _text(request, "workflow")
        since, until = _time(request, "since"), _time(request, "until")
        page, counts, chart = await asyncio.gather(
            WorkflowRun.list(
                status=status, workflow=workflow, since=since, until=until,
                limit=_limit(request), cursor=_text(request, "cursor"),
                on_error="skip", db=self.db,
            ),
            WorkflowRun.counts(workflow, since=since, until=until, db=self.db),
            self.runs_chart(request),
        )  # fmt: skip
        return {**_listing(page), "counts": counts, "chart": chart}

    async def run(self, request: Request) -> dict[str, Any]:
        """One run and its last events (at most ``RUN_EVENTS``; a live tail goes on)."""
        run_id = _id(request)
        run = await WorkflowRun.get(run_id, db=self.db)
        if run is None:
            raise HttpError(404, "NotFound", f"no run {run_id!r}")
        info = await run.events.meta()
        if info is None:  # pruned with its run's retention, or never made
            return {"run": _dump(run), "stream": None}
        earlier = max(info.length - RUN_EVENTS, 0)
        read = await run.events.read(
            after=format_offset(earlier) if earlier else START, limit=RUN_EVENTS
        )
        return {
            "run": _dump(run),
            "stream": {
                "path": WorkflowRun.stream_path(run.id),
                "length": info.length,
                "earlier": earlier,
                "events": [_event(e) for e in read.events],
                "next_offset": read.next_offset,
                "up_to_date": read.up_to_date,
                "closed": read.closed,
            },
        }

    async def sessions(self, request: Request) -> dict[str, Any]:
        """Sessions most recently updated first, by agent, instance and harness."""
        page = await Session.list(
            agent=_text(request, "agent"), instance=_text(request, "instance"),
            harness=_text(request, "harness"), fork_of=_text(request, "fork_of"),
            limit=_limit(request), cursor=_text(request, "cursor"),
            on_error="skip", db=self.db,
        )  # fmt: skip
        return _listing(page)

    async def session(self, request: Request) -> dict[str, Any]:
        """A session's record, its context, and a page of its history (backwards)."""
        session_id = _id(request)
        session = await Session.load_context(session_id, db=self.db)
        history = await Session.history(
            session_id, before=_text(request, "before"), limit=_limit(request),
            db=self.db,
        )  # fmt: skip
        if session is None or history is None:
            raise HttpError(404, "NotFound", f"no session {session_id!r}")
        return {
            "record": _dump(session),
            "context": _dump(session.context()),
            "history": {
                "entries": [_dump(entry) for entry in history.entries],
                "next_cursor": history.next_cursor,
            },
        }

    async def submissions(self, request: Request) -> dict[str, Any]:
        """Submissions by view (runnable heads, running, expired leases, settled) or of
        one session, with the server time leases are judged by."""
        view = _choice(request, "view", SUBMISSION_VIEWS) or "runnable"
        session_id = _text(request, "session_id")
        limit, cursor = _limit(request), _text(request, "cursor")
        now = await self.db.server_time()
        page: Page[Submission] | None = None
        rows: list[Submission]
        if session_id is not None:
            query = Submission.find(Submission.session_id == session_id).sort_by("-sequence")
        elif view == "settled":
            query = Submission.find(Submission.status == "settled").sort_by("-settled_at")
        if session_id is not None or view == "settled":
            page = await query.using(self.db).on_error("skip").page(limit=limit, cursor=cursor)
            rows = page.items
        elif view == "runnable":
            rows = await Submission.list_runnable(limit=limit, db=self.db)
        elif view == "running":
            rows = (await Submission.list_running(db=self.db))[:limit]
        else:
            rows = (await Submission.list_expired(db=self.db))[:limit]
        items = [{**_dump(row), "lease_expired": row.lease_expired(now)} for row in rows]
        return {
            "view": None if session_id else view,
            "session_id": session_id,
            "server_time": now.isoformat(),
            "counts": await self._submission_counts(now),
            **_listing(page, items),
        }

    async def _submission_counts(self, now: dt.datetime) -> dict[str, int]:
        """How many submissions are queued, running, running with an expired lease, and
        settled: counted from the index sets, without reading rows."""
        lease: Any = Submission.lease_expires_at  # a FieldRef on the class
        queries = {
            "queued": Submission.find(Submission.status == "queued"),
            "running": Submission.find(Submission.status == "running"),
            "expired": Submission.find(Submission.status == "running", lease < now),
            "settled": Submission.find(Submission.status == "settled"),
        }
        found = await asyncio.gather(*(q.using(self.db).count() for q in queries.values()))
        return dict(zip(queries, found, strict=True))

    async def submission(self, request: Request) -> dict[str, Any]:
        """One submission: its payload, attempts, lease, outcome, and its journal."""
        submission_id = _id(request)
        row, journal = await asyncio.gather(
            Submission.get(submission_id, db=self.db),
            Submission.read_journal(submission_id, db=self.db),
        )
        if row is None:
            raise HttpError(404, "NotFound", f"no submission {submission_id!r}")
        now = await self.db.server_time()
        return {
            "record": _dump(row),
            "lease_expired": row.lease_expired(now),
            "server_time": now.isoformat(),
            "journal": None if journal is None else dataclasses.asdict(journal),
        }

    async def search(self, request: Request) -> dict[str, Any]:
        """What an id names: a run, a session, a submission or a stream (any that exist)."""
        wanted = _text(request, "q")
        if wanted is None:
            return {"query": None, "matches": []}
        run, session, submission, info = await asyncio.gather(
            WorkflowRun.get(wanted, db=self.db),
            Session.get(wanted, db=self.db),
            Submission.get(wanted, db=self.db),
            _stream_info(self.db, wanted),
        )
        found = [
            (kind, href)
            for kind, href, hit in (
                ("run", "/run", run),
                (Session.__name__.lower(), "/session", session),
                (Submission.__name__.lower(), "/submission", submission),
            )
            if hit is not None
        ]
        matches = [{"kind": kind, "href": href + query_string(id=wanted)} for kind, href in found]
        if info is not None:
            matches.append({"kind": "stream", "href": "/streams" + query_string(path=wanted)})
        return {"query": wanted, "matches": matches}

    async def runs_chart(self, request: Request) -> dict[str, Any]:
        """Runs started in each of ``BARS`` slices of the last hour, day or week, by status
        (``?span=``), counted from the index sets: the runs page's chart."""
        span = _choice(request, "span", tuple(SPANS)) or "day"
        workflow = _text(request, "workflow")
        end = await self.db.server_time()
        step = SPANS[span] / BARS
        edges = [end - SPANS[span] + step * n for n in range(BARS + 1)]
        found = await WorkflowRun.started_histogram(edges, workflow, db=self.db)
        return {
            "span": span,
            "workflow": workflow,
            "bars": [
                {"start": start.isoformat(), "end": stop.isoformat(), "counts": counts}
                for start, stop, counts in zip(edges, edges[1:], found, strict=False)
            ],
        }

    async def stream(self, request: Request) -> dict[str, Any]:
        """A stream's metadata and a page of its events after an offset."""
        path = _text(request, "path")
        if path is None:
            return {"path": None}
        stream: EventStream[dict[str, Any]] = EventStream(path, db=self.db)
        info = await stream.meta()
        if info is None:
            raise HttpError(404, "NotFound", f"no stream {path!r}")
        read = await stream.read(after=_text(request, "after") or "-1", limit=_limit(request))
        return {
            "path": path,
            "length": info.length,
            "closed": read.closed,
            "max_len": info.max_len,
            "events": [_event(e) for e in read.events],
            "next_offset": read.next_offset,
            "up_to_date": read.up_to_date,
        }

    async def server(self, request: Request) -> dict[str, Any]:
        """The server, the schema version, applied and pending migrations."""
        report = await read_server(self.db.client)
        statuses = await schema_status(self.db)
        problem, warned = assess(report)
        return {
            "url": self.db.url.display,
            "prefix": self.db.keys.prefix,
            "server": {
                "family": report.flavor,
                "version": report.version,
                "cluster": report.cluster_enabled,
                "maxmemory_policy": report.maxmemory_policy,
                "persistence": report.persistence,
                "used_memory": report.used_memory,
                "maxmemory": report.maxmemory,
                "memory": memory_text(report.used_memory, report.maxmemory),
                "replicas": report.replicas_text(),
                "primaries": [
                    {
                        "node": p.node,
                        "version": f"{p.flavor} {p.version}",
                        "maxmemory_policy": p.maxmemory_policy,
                        "persistence": p.persistence,
                        "memory": memory_text(p.used_memory, p.maxmemory),
                        "replicas": p.replicas_text(),
                    }
                    for p in report.primaries
                ],
            },
            "checks": {
                "refusal": None if problem is None else str(problem),
                "passed": report.summary(),
                "warnings": warned,
            },
            "schema": [
                {
                    "set": status.name,
                    "stored": status.stored,
                    "newest": status.newest,
                    "applied": [f.label for f in status.applied],
                    "pending": [f.label for f in status.pending],
                    "changed_since_applied": status.drift,
                }
                for status in statuses
            ],
        }

    # Actions ---------------------------------------------------------------------------

    async def cancel(self, form: dict[str, str]) -> dict[str, Any]:
        """Cancel an active run (``WorkflowRun.cancel_id``, as ``flue-models runs cancel``)."""
        run_id = _required(form, "run_id")
        outcome = await WorkflowRun.cancel_id(run_id, db=self.db)
        if outcome is EndResult.NOT_FOUND:
            raise HttpError(404, "NotFound", f"no run {run_id!r}")
        return {"run_id": run_id, "outcome": outcome.value}

    async def requeue(self, form: dict[str, str]) -> dict[str, Any]:
        """Requeue a submission whose lease expired (``Submission.requeue_expired``)."""
        submission_id = _required(form, "submission_id")
        requeued = await Submission.requeue_expired(submission_id, db=self.db)
        if not requeued and await Submission.get(submission_id, db=self.db) is None:
            raise HttpError(404, "NotFound", f"no submission {submission_id!r}")
        return {"submission_id": submission_id, "requeued": requeued}

    async def prune(self, form: dict[str, str]) -> dict[str, Any]:
        """Prune by the ages given (``prune_all``, as ``flue-models prune``)."""
        ages = {
            field: parse_age(form[name].strip())
            for name, field in KIND_NAMES.items()
            if form.get(name, "").strip()
        }
        if not ages:
            raise HttpError(400, "BadParameter", "give an age to at least one kind")
        report = await prune_all(Retention(**ages), dry_run=bool(form.get("dry_run")), db=self.db)
        return report.as_dict()


async def _form(request: Request) -> dict[str, str]:
    """An action's fields: a form (``application/x-www-form-urlencoded``) or a JSON object."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise HttpError(400, "BadParameter", "the body is not JSON") from None
        if not isinstance(data, dict):
            raise HttpError(400, "BadParameter", "the body must be a JSON object")
        return {str(k): "" if v is None or v is False else str(v) for k, v in data.items()}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise HttpError(400, "BadParameter", "the form is not UTF-8") from None


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise HttpError(400, "BadParameter", f"{name} is required")
    return value


# The app -----------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    # As the live tail's JSON.stringify writes it, so loaded and live rows look alike.
    env.filters["compact"] = lambda value: json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    )
    env.filters["seq"] = lambda offset: str(int(str(offset).rpartition("_")[2] or 0))
    env.filters["when"] = lambda value: "" if not value else str(value).replace("T", " ")[:19]
    env.filters["clock"] = lambda value: "" if not value else str(value)[11:23]
    env.filters["duration"] = duration_text
    env.filters["kind"] = event_kind
    env.globals["query"] = query_string
    env.globals["bars"] = chart_bars
    return env


def event_kind(data: Any) -> str:
    """The ``type`` of an event's data, when it is an object with a text ``type``.

    Example:
        >>> event_kind({"type": "log", "message": "hi"}), event_kind([1, 2])
        ('log', '')
    """
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else ""


#: The chart's drawing box (SVG user units) and the order its statuses stack in.
CHART_WIDTH, CHART_HEIGHT = 720, 120
CHART_ORDER = ("completed", "errored", "cancelled", "active")


def chart_bars(chart: dict[str, Any]) -> list[dict[str, Any]]:
    """The rectangles of the runs chart: per bar its place, its label and one rectangle
    per status with runs, stacked, scaled to the tallest bar.

    Example:
        >>> bar = {"start": "2026-12-07T10:00:00+00:00", "end": "x", "counts": {"completed": 2}}
        >>> (drawn,) = chart_bars({"bars": [bar]})
        >>> drawn["title"], len(drawn.get("parts"))
        ('2026-12-07 10:00 UTC: 2 completed', 1)
    """
    tallest = max((sum(b["counts"].values()) for b in chart["bars"]), default=0) or 1
    width = CHART_WIDTH / max(len(chart["bars"]), 1)
    drawn = []
    for n, bar in enumerate(chart["bars"]):
        top, parts = float(CHART_HEIGHT), []
        for status in CHART_ORDER:
            count = bar["counts"].get(status, 0)
            if count:
                height = CHART_HEIGHT * count / tallest
                top -= height
                parts.append({"status": status, "count": count, "y": top, "height": height})
        label = ", ".join(f"{p['count']} {p['status']}" for p in parts) or "no runs"
        drawn.append(
            {
                "x": n * width + 1,
                "width": max(width - 2, 1),
                "parts": parts,
                "title": f"{str(bar['start'])[:16].replace('T', ' ')} UTC: {label}",
            }
        )
    return drawn


def query_string(**params: Any) -> str:
    """A URL query from the parameters that are set (links keep their filters).

    Example:
        >>> query_string(status="errored", cursor=None, workflow="a&b")
        '?status=errored&workflow=a%26b'
    """
    return "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


def create_app(
    db: Database,
    *,
    allow_actions: bool = False,
    csrf: Csrf | None = None,
    stopping: asyncio.Event | None = None,
    max_tails: int = MAX_TAILS,
) -> Starlette:
    """The dashboard as an ASGI app on ``db``: pages, the JSON API under ``/api/``, live
    tails, and (with ``allow_actions``) the CSRF-checked action POSTs. Setting
    ``stopping`` ends every open live tail (for a server's shutdown); at most
    ``max_tails`` are open at once.

    Wrap it in :class:`~flue_models.web.security.Guard` for the host and credentials
    checks (``flue-models serve`` does).

    Example:
        ```python
        async with fm.connect() as db:
            app = create_app(db, allow_actions=True)
        ```
    """
    views = _Views(db)
    csrf = csrf or Csrf()
    slots = TailSlots(max_tails)
    env = _environment()

    def render(request: Request, template: str, data: dict[str, Any], status: int) -> Response:
        notice = _text(request, "notice")
        if notice is not None and not csrf.signed(notice, request.query_params.get("sig", "")):
            notice = None  # only the dashboard's own redirects say something
        html = env.get_template(template).render(
            data=data, request=request, params=dict(request.query_params),
            actions=allow_actions, csrf=csrf.token, notice=notice, status=status,
        )  # fmt: skip
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def page(template: str, view: View) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                data = await view(request)
                if view == views.search and len(data["matches"]) == 1:  # straight there
                    return RedirectResponse(data["matches"][0]["href"], status_code=303)
                return render(request, template, data, 200)
            except (HttpError, FlueModelsError) as exc:
                return render(request, "error.html", error_body(exc), error_status(exc))

        return endpoint

    def api(view: View) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await view(request), headers={"cache-control": "no-store"})
            except (HttpError, FlueModelsError) as exc:
                return error_json(exc)

        return endpoint

    def action(
        perform: Callable[[dict[str, str]], Awaitable[dict[str, Any]]],
        done: Callable[[dict[str, str], dict[str, Any]], str],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            is_api = request.url.path.startswith("/api/")
            try:
                if not allow_actions:
                    raise _actions_off()
                form = await _form(request)
                own = f"{request.url.scheme}://{request.headers.get('host', '')}"
                given = request.headers.get("x-csrf-token") or form.get("csrf")
                if not csrf.accepts(given, origin=request.headers.get("origin"), own_origin=own):
                    raise HttpError(403, "CsrfRefused", "missing or wrong CSRF token")
                result = await perform(form)
            except (HttpError, FlueModelsError) as exc:
                if is_api:
                    return error_json(exc)
                return render(request, "error.html", error_body(exc), error_status(exc))
            if is_api:
                return JSONResponse(result)
            return RedirectResponse(done(form, result), status_code=303)

        return endpoint

    async def live(request: Request) -> Response:
        try:
            path = _text(request, "path")
            if path is None:
                raise HttpError(400, "BadParameter", "path is required")
            stream: EventStream[dict[str, Any]] = EventStream(path, db=db)
            if await stream.meta() is None:
                raise HttpError(404, "NotFound", f"no stream {path!r}")
        except (HttpError, FlueModelsError) as exc:
            return error_json(exc)
        after = request.headers.get("last-event-id") or _text(request, "after") or "-1"
        return EventSourceResponse(stream, after, stopping, slots)

    async def csrf_token(request: Request) -> Response:
        return JSONResponse({"token": csrf.token}) if allow_actions else error_json(_actions_off())

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", status_code=303)

    def saying(path: str, notice: str, **params: str) -> str:
        return path + query_string(**params, notice=notice, sig=csrf.sign(notice))

    def back_to_run(form: dict[str, str], result: dict[str, Any]) -> str:
        return saying("/run", f"run {result['outcome']}", id=form["run_id"])

    def back_to_expired(form: dict[str, str], result: dict[str, Any]) -> str:
        said = "requeued" if result["requeued"] else "not requeued (input applied, or not expired)"
        return saying("/submissions", f"{form['submission_id']}: {said}", view="expired")

    def back_to_server(form: dict[str, str], result: dict[str, Any]) -> str:
        verb = "due" if result["dry_run"] else "removed"
        counts = ", ".join(f"{kind} {n} {verb}" for kind, n in result["counts"].items())
        return saying("/server", f"prune: {counts}")

    reads: list[tuple[str, str, View]] = [
        ("/runs", "runs.html", views.runs),
        ("/run", "run.html", views.run),
        ("/sessions", "sessions.html", views.sessions),
        ("/session", "session.html", views.session),
        ("/submissions", "submissions.html", views.submissions),
        ("/submission", "submission.html", views.submission),
        ("/search", "search.html", views.search),
        ("/streams", "stream.html", views.stream),
        ("/server", "server.html", views.server),
    ]
    routes: list[Route | Mount] = [
        Route("/", home),
        Route("/live", live),
        Route("/api/csrf", csrf_token),
        *(
            Route(f"{api_prefix}/actions/{name}", action(perform, done), methods=["POST"])
            for name, perform, done in (
                ("cancel", views.cancel, back_to_run),
                ("requeue", views.requeue, back_to_expired),
                ("prune", views.prune, back_to_server),
            )
            for api_prefix in ("", "/api")
        ),
        *(Route(path, page(template, view)) for path, template, view in reads),
        *(Route("/api" + path, api(view)) for path, _, view in reads),
        Route("/api/runs/chart", api(views.runs_chart)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def unrouted(request: Request, exc: Exception) -> Response:
        """No such path or method: JSON under /api/, a page elsewhere."""
        status = getattr(exc, "status_code", 500)
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HttpError")
        what = "path" if status == 404 else f"method {request.method} for"
        error = HttpError(status, kind, f"no {what} {request.url.path}")
        if request.url.path.startswith("/api/"):
            return error_json(error)
        return render(request, "error.html", error_body(error), status)

    return Starlette(routes=routes, exception_handlers={404: unrouted, 405: unrouted})
