"""The dashboard's safety: every payload is escaped, actions need --allow-actions and a
CSRF token, the host and credential checks, and ``flue-models serve`` refusing what it
cannot serve safely before it serves anything."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest

import flue_models as fm
from flue_models import MessageEntry, Session, Submission, WorkflowRun
from flue_models.web import Csrf
from flue_models.web.security import Auth
from tests.command_line import ROOT, run_cli
from tests.waiting import child_process, poll_until, within
from tests.web.conftest import client_for

SCRIPT = '<script>alert("x")</script>'
IMAGE = "<img src=x onerror=alert(1)>"


# Escaping -----------------------------------------------------------------------------


async def test_html_and_script_in_every_payload_are_shown_as_text(
    web: httpx.AsyncClient,
) -> None:
    run = await WorkflowRun.start(SCRIPT, input={"html": IMAGE})
    await run.events.append({"type": SCRIPT, "message": IMAGE})
    await run.fail(error={"message": SCRIPT})
    session = await Session.open(fm.session_key(SCRIPT, "i", "h", "n"), metadata={"m": IMAGE})
    await session.append(MessageEntry(id=IMAGE, role=SCRIPT, content=[{"text": SCRIPT}]))
    await Submission.admit_direct(SCRIPT, session_id=session.id, input={"p": IMAGE})
    pages = [
        "/runs",
        f"/runs?{httpx.QueryParams({'workflow': SCRIPT})}",
        f"/run?id={run.id}",
        f"/streams?{httpx.QueryParams({'path': WorkflowRun.stream_path(run.id)})}",
        "/sessions",
        f"/session?{httpx.QueryParams({'id': session.id})}",
        f"/submissions?{httpx.QueryParams({'session_id': session.id})}",
        f"/run?{httpx.QueryParams({'id': SCRIPT})}",  # a 404 page naming the id
    ]
    for path in pages:
        page = await web.get(path)
        assert page.status_code in (200, 404), path
        for raw in (SCRIPT, IMAGE, "<script>alert", "<img src=x"):
            assert raw not in page.text, (path, raw)
        assert "&lt;" in page.text, path
        # The only scripts are the dashboard's own file; nothing inline.
        assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/live.js" defer>']


async def test_pages_forbid_inline_script_and_framing(web: httpx.AsyncClient) -> None:
    response = await web.get("/runs")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


# Host and credentials -----------------------------------------------------------------


async def test_a_loopback_dashboard_answers_only_to_loopback_names(
    web: httpx.AsyncClient,
) -> None:
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        assert (await web.get("/api/runs", headers={"host": host})).status_code == 200
    rebound = await web.get("/api/runs", headers={"host": "evil.example:8000"})
    assert rebound.status_code == 421
    assert rebound.json()["error"]["type"] == "Refused"


@pytest.mark.parametrize("kind", ["token", "basic"])
async def test_credentials_are_required_when_auth_is_on(db: fm.Database, kind: str) -> None:
    secret = "admin:s3cr/et"

    def header(credentials: str) -> str:
        if kind == "token":
            return f"Bearer {credentials}"
        return "Basic " + base64.b64encode(credentials.encode()).decode()

    good, bad = header(secret), header("admin:s3cr/eT")
    async with client_for(db, auth=Auth(kind, secret)) as web:  # type: ignore[arg-type]
        refused = await web.get("/api/runs")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith(
            "Basic" if kind == "basic" else "Bearer"
        )
        assert (await web.get("/api/runs", headers={"authorization": bad})).status_code == 401
        assert (await web.get("/runs", headers={"authorization": good})).status_code == 200
        assert secret not in (await web.get("/server", headers={"authorization": good})).text


def test_auth_reads_its_secret_from_the_environment() -> None:
    with pytest.raises(fm.ConfigurationError, match="FLUE_WEB_SECRET"):
        Auth.from_environment("token", {})
    with pytest.raises(fm.ConfigurationError, match="user:password"):
        Auth.from_environment("basic", {"FLUE_WEB_SECRET": "no-colon"})
    assert Auth.from_environment("token", {"FLUE_WEB_SECRET": "t"}).allows("Bearer t")


# Actions ------------------------------------------------------------------------------


async def test_actions_are_refused_on_a_read_only_dashboard(web: httpx.AsyncClient) -> None:
    run = await WorkflowRun.start("keep")
    for path in ("/api/actions/cancel", "/actions/cancel"):
        refused = await web.post(path, data={"run_id": run.id})
        assert refused.status_code == 403
    assert (await web.get("/api/csrf")).status_code == 403
    assert "Cancel run" not in (await web.get(f"/run?id={run.id}")).text
    assert (await WorkflowRun.get(run.id)) is not None
    assert (await WorkflowRun.lookup(run.id)).status == "active"  # type: ignore[union-attr]


async def test_an_action_needs_the_csrf_token_and_its_own_origin(db: fm.Database) -> None:
    run = await WorkflowRun.start("cancel-me")
    csrf = Csrf()
    async with client_for(db, allow_actions=True, csrf=csrf) as web:
        assert (await web.post("/api/actions/cancel", data={"run_id": run.id})).status_code == 403
        wrong = {"run_id": run.id, "csrf": "guess"}
        assert (await web.post("/api/actions/cancel", data=wrong)).status_code == 403
        other_site = await web.post(
            "/api/actions/cancel",
            data={"run_id": run.id, "csrf": csrf.token},
            headers={"origin": "https://evil.example"},
        )
        assert other_site.status_code == 403
        assert other_site.json()["error"]["type"] == "CsrfRefused"
        assert (await WorkflowRun.lookup(run.id)).status == "active"  # type: ignore[union-attr]

        token = (await web.get("/api/csrf")).json()["token"]
        done = await web.post(
            "/api/actions/cancel",
            json={"run_id": run.id},
            headers={"x-csrf-token": token, "origin": "http://127.0.0.1:8000"},
        )
        assert done.status_code == 200
        assert done.json() == {"run_id": run.id, "outcome": "ended"}
        again = await web.post(
            "/api/actions/cancel", json={"run_id": run.id}, headers={"x-csrf-token": token}
        )
        assert again.json()["outcome"] == "already_ended"
        assert (await WorkflowRun.lookup(run.id)).status == "cancelled"  # type: ignore[union-attr]


async def test_the_cancel_form_on_the_run_page(db: fm.Database) -> None:
    run = await WorkflowRun.start("form")
    async with client_for(db, allow_actions=True) as web:
        page = await web.get(f"/run?id={run.id}")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        assert "Cancel run" in page.text
        posted = await web.post("/actions/cancel", data={"run_id": run.id, "csrf": token.group(1)})
        assert posted.status_code == 303
        shown = await web.get(posted.headers["location"])
        assert "run ended" in shown.text
        assert "cancelled" in shown.text
        assert "Cancel run" not in shown.text


async def test_a_crafted_link_cannot_make_the_dashboard_say_something(
    web: httpx.AsyncClient,
) -> None:
    forged = "Your session expired: log in again at https://evil.example"
    page = await web.get("/runs", params={"notice": forged, "sig": "0" * 64})
    assert page.status_code == 200
    assert "evil.example" not in page.text


async def test_requeue_an_expired_submission(db: fm.Database) -> None:
    await Submission.admit_direct("p-1", session_id="s-1", input={})
    await Submission.admit_direct("p-2", session_id="s-2", input={})
    short = dt.timedelta(milliseconds=1)
    expired = await Submission.claim("p-1", owner_id="w", lease=short)
    applied = await Submission.claim("p-2", owner_id="w", lease=short)
    assert expired
    assert applied
    await Submission.mark_input_applied(applied)

    async def both_expired() -> bool:
        return len(await Submission.list_expired()) == 2

    await poll_until(both_expired, "the 1 ms leases to expire by the server clock", seconds=10)
    csrf = Csrf()
    async with client_for(db, allow_actions=True, csrf=csrf) as web:
        page = await web.get("/submissions?view=expired")
        assert page.text.count(">Requeue<") == 2
        for submission_id, requeued in (("p-1", True), ("p-2", False)):
            done = await web.post(
                "/api/actions/requeue", data={"submission_id": submission_id, "csrf": csrf.token}
            )
            assert done.json() == {"submission_id": submission_id, "requeued": requeued}
        unknown = await web.post(
            "/api/actions/requeue", data={"submission_id": "nope", "csrf": csrf.token}
        )
        assert unknown.status_code == 404  # as cancel of an unknown run; the CLI exits 3
        assert unknown.json()["error"]["type"] == "NotFound"
    row = await Submission.get("p-1")
    assert row is not None
    assert row.status == "queued"
    assert row.owner_id is None
    kept = await Submission.get("p-2")
    assert kept is not None
    assert kept.status == "running"


async def test_prune_from_the_server_page(db: fm.Database) -> None:
    run = await WorkflowRun.start("old", started_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    await run.finish()
    csrf = Csrf()
    async with client_for(db, allow_actions=True, csrf=csrf) as web:
        dry = await web.post(
            "/api/actions/prune", data={"runs": "0.5s", "dry_run": "1", "csrf": csrf.token}
        )
        assert dry.status_code == 200
        assert dry.json()["counts"] == {"ended_runs": 0}

        async def due() -> bool:
            report = await fm.prune(
                fm.Retention(ended_runs=dt.timedelta(seconds=0.5)), dry_run=True
            )
            return report.counts["ended_runs"] == 1

        await poll_until(due, "the run to be older than half a second", seconds=10)
        done = await web.post("/actions/prune", data={"runs": "0.5s", "csrf": csrf.token})
        assert done.status_code == 303
        assert "ended_runs 1 removed" in (await web.get(done.headers["location"])).text
        assert await WorkflowRun.get(run.id) is None
        bad = await web.post("/api/actions/prune", data={"runs": "soon", "csrf": csrf.token})
        assert bad.status_code == 400
        assert bad.json()["error"]["type"] == "ConfigurationError"
        none = await web.post("/api/actions/prune", data={"csrf": csrf.token})
        assert none.status_code == 400


# flue-models serve --------------------------------------------------------------------


def test_serve_refuses_a_public_address_without_auth() -> None:
    # The URL points nowhere: the refusal comes before any connection.
    result = run_cli("serve", "--host", "0.0.0.0", "--url", "redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert result.stderr.startswith("error: serving on '0.0.0.0' (not loopback) needs --auth")
    assert len(result.stderr.splitlines()) == 1


def test_serve_refuses_a_bad_or_taken_port_before_connecting() -> None:
    bad = run_cli("serve", "--port", "70000", "--url", "redis://127.0.0.1:1/0")
    assert bad.returncode == 2
    assert "give a port from 0 to 65535" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        busy = run_cli("serve", "--port", port, "--url", "redis://127.0.0.1:1/0")
    assert busy.returncode == 1
    assert busy.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert len(busy.stderr.splitlines()) == 1


def test_serve_refuses_auth_without_its_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLUE_WEB_SECRET"}
    result = run_cli("serve", "--auth", "basic", "--url", "redis://127.0.0.1:1/0", env=env)
    assert result.returncode == 1
    assert "FLUE_WEB_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_serve_answers_on_the_port_it_prints_and_stops_cleanly_with_a_tail_open(
    redis_url: str, key_prefix: str, db: fm.Database, stop: signal.Signals
) -> None:
    run = await WorkflowRun.start("watched")
    await run.events.append({"n": 1})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "flue_models.cli", "serve", "--url", redis_url]
    async with child_process(
        *command, "--prefix", key_prefix, "--port", "0", "--no-inspect",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        assert child.stderr is not None
        line = (await within(child.stdout.readline(), "serve to print its address")).decode()
        match = re.match(r"serving (http://127\.0\.0\.1:\d+) \(read-only; Ctrl-C stops\)", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(1), timeout=30) as web:
            response = await web.get("/api/runs")
            assert response.json()["items"][0]["id"] == run.id
            live = f"/live?path=runs/{run.id}&after=-1"
            async with web.stream("GET", live) as tail:
                lines = tail.aiter_lines()
                assert (await within(anext(lines), "the first event")).startswith("id: ")
                child.send_signal(stop)  # while the tail is open
                rest = [text async for text in lines]  # the server ends the response
        assert "event: closed" not in rest
        code = await within(child.wait(), "serve to stop", seconds=15)
        assert code == (130 if stop == signal.SIGINT else -signal.SIGTERM)
        errors = (await child.stderr.read()).decode()
        assert "Traceback" not in errors
        assert "ERROR" not in errors


def test_serve_without_the_web_extra_says_how_to_install_it() -> None:
    hide = "import sys; sys.modules['uvicorn'] = None; from flue_models.cli import main; "
    result = subprocess.run(
        [sys.executable, "-c", hide + "sys.exit(main(['serve', '--url', 'redis://127.0.0.1:1/0']))"],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "error: the dashboard needs the web extra (uvicorn is missing): "
        "pip install 'flue-models[web]'\n"
    )
