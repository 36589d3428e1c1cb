"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
``flue-models serve`` in its own process on the test server.

Skipped, with the reason, where no Chromium exists (``.ci/run`` installs Debian's
``chromium`` package when it is missing). The screenshots of the docs' Dashboard page
are taken here: ``FLUE_SCREENSHOTS=docs/assets/dashboard pytest tests/web/test_browser.py``
writes them there (otherwise into the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import flue_models as fm
from flue_models import MessageEntry, Session, Submission, WorkflowRun
from tests.command_line import ROOT
from tests.waiting import DEADLINE, child_process, within

playwright_api = pytest.importorskip("playwright.async_api")
Page = playwright_api.Page
expect = playwright_api.expect

#: Where Chromium is looked for: $FLUE_CHROMIUM, then Debian's package, then PATH.
CHROMIUM = os.environ.get("FLUE_CHROMIUM") or next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium") or "")
        if p and os.access(p, os.X_OK)
    ),
    None,
)
#: Flags for a headless Chromium on a machine without a network beyond loopback.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = DEADLINE * 1000
#: An event's time as the events table shows it.
CLOCK = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium: install Debian's chromium package (.ci/run does) or set FLUE_CHROMIUM",
)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: object) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1200, "height": 760})  # type: ignore[attr-defined]
    opened = await context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: dialogs.append(dialog.message))
    try:
        yield opened
    finally:
        await context.close()
    assert dialogs == [], f"a payload ran as script: {dialogs}"


@pytest.fixture
async def dashboard(redis_url: str, db: fm.Database) -> AsyncIterator[str]:
    """``flue-models serve`` on the test's prefix; its base URL."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "flue_models.cli", "serve", "--url", redis_url]
    async with child_process(
        *command, "--prefix", db.keys.prefix, "--port", "0", "--no-inspect",
        stdout=asyncio.subprocess.PIPE, env=env,
    ) as child:  # fmt: skip
        assert child.stdout is not None
        line = (await within(child.stdout.readline(), "serve to print its address")).decode()
        found = re.search(r"http://\S+", line)
        assert found, line
        yield found.group(0)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FLUE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_filtered_list_and_its_next_page(dashboard: str, page: Page, shots: Path) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=50)  # in the chart's last hour
    ids = []
    for n, (workflow, ending) in enumerate(
        [("summarize", "finish"), ("translate", "finish"), ("summarize", "fail"),
         ("summarize", "finish"), ("translate", None), ("summarize", None)]
    ):  # fmt: skip
        run = await WorkflowRun.start(
            workflow, input={"doc": f"d-{n}"}, started_at=start + dt.timedelta(minutes=n)
        )
        if ending == "finish":
            await run.finish(result={"pages": n})
        elif ending == "fail":
            await run.fail(error={"message": "input unreadable"})
        if workflow == "summarize":
            ids.append(run.id)
    await page.goto(dashboard + "/runs?span=hour")
    await expect(page.locator("#runs tbody tr")).to_have_count(6, timeout=WAIT_MS)
    # The chart: the six runs started over the last hour, stacked by status.
    await expect(page.locator("#chart rect.fill-completed")).not_to_have_count(0)
    drawn = await page.locator("#chart g.bar title").all_text_contents()
    assert sum(int(n) for t in drawn for n in re.findall(r"(\d+) [a-z]+", t.split(": ")[1])) == 6
    await page.screenshot(path=shots / "runs.png", full_page=True)
    await page.fill("input[name=workflow]", "summarize")
    await page.fill("input[name=limit]", "3")
    await page.click("button:has-text('Filter')")
    rows = page.locator("#runs tbody tr")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await expect(rows.first).to_contain_text(ids[-1], timeout=WAIT_MS)  # newest first
    await expect(page.locator(".count.status-errored")).to_contain_text("1", timeout=WAIT_MS)
    await page.click("#next-page")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.first).to_contain_text(ids[0], timeout=WAIT_MS)
    await expect(page.locator("#next-page")).to_have_count(0, timeout=WAIT_MS)
    assert "workflow=summarize" in page.url


async def test_a_run_page_shows_an_event_appended_after_it_loaded_and_then_the_end(
    dashboard: str, page: Page, shots: Path
) -> None:
    run = await WorkflowRun.start("summarize", input={"doc": "quarterly-report.pdf"})
    await run.events.append({"type": "log", "message": "summarize started"})
    await page.goto(f"{dashboard}/run?id={run.id}")
    state = page.locator("#stream-state")
    await expect(state).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await run.events.append({"type": "progress", "step": 1, "of": 2})
    events = page.locator("#events tbody tr")
    await expect(events).to_have_count(2, timeout=WAIT_MS)
    await expect(events.last).to_contain_text('"step":1', timeout=WAIT_MS)
    for row in (events.first, events.last):  # loaded with the page, written by the tail
        await expect(row.locator("td").nth(1)).to_have_text(CLOCK, timeout=WAIT_MS)
    await expect(events.first.locator("td").nth(2)).to_have_text("log")
    await expect(events.last.locator("td").nth(2)).to_have_text("progress")
    await expect(page.locator("[data-box=result]")).to_be_hidden()  # none yet: no box
    await page.screenshot(path=shots / "run-live.png", full_page=True)
    await run.events.append({"type": "progress", "step": 2, "of": 2})
    await run.finish(result={"summary": "Revenue up 4%"})
    await expect(state).to_have_attribute("data-state", "closed", timeout=WAIT_MS)
    await expect(events).to_have_count(3, timeout=WAIT_MS)
    await expect(page.locator("[data-field=status]")).to_have_text("completed", timeout=WAIT_MS)
    await expect(page.locator("pre[data-field=result]")).to_contain_text("Revenue up 4%")
    await expect(page.locator("[data-box=result]")).to_be_visible()
    await expect(page.locator("[data-box=error]")).to_be_hidden()
    await expect(page.locator("[data-field=duration_ms]")).to_have_text(
        re.compile(r"^\d+ ms$|^\d+\.\d s$"), timeout=WAIT_MS
    )


async def test_a_script_payload_is_shown_as_text(dashboard: str, page: Page) -> None:
    script = "<script>document.title='pwned'; alert('pwned')</script>"
    image = "<img src=x onerror=\"alert('pwned')\">"
    run = await WorkflowRun.start(script, input={"html": image})
    await run.events.append({"message": script})
    await page.goto(f"{dashboard}/run?id={run.id}")
    await expect(page.locator("#stream-state")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    await run.events.append({"message": image})  # arrives through the live tail
    events = page.locator("#events tbody tr")
    await expect(events).to_have_count(2, timeout=WAIT_MS)
    await expect(events.first).to_contain_text(json.dumps(script))  # loaded with the page
    await expect(events.last).to_contain_text(json.dumps(image))  # written by the live tail
    await expect(page.locator("dd a").first).to_have_text(script)
    assert await page.locator("#events img, main script").count() == 0
    assert await page.title() != "pwned"
    await page.goto(f"{dashboard}/runs")
    await expect(page.locator("#runs tbody")).to_contain_text(script, timeout=WAIT_MS)


async def test_sessions_submissions_and_server_pages(
    dashboard: str, page: Page, shots: Path
) -> None:
    session = await Session.open(fm.session_key("support", "eu-1", "claude", "order-1432"))
    parent = None
    for n, (role, text) in enumerate(
        [("user", "Where is my order #1432?"), ("assistant", "It left the warehouse today."),
         ("user", "When will it arrive?"), ("assistant", "Thursday, by noon.")]
    ):  # fmt: skip
        await session.append(MessageEntry(id=f"m{n}", parent_id=parent, role=role, content=text))
        parent = f"m{n}"
    await Session.open(fm.session_key("billing", "us-1", "claude", "invoice-88"))
    await Submission.admit_direct("p-1", session_id=session.id, input={"prompt": "hi"})
    await Submission.admit_direct("p-2", session_id="billing/us-1/claude/invoice-88", input={})
    attempt = await Submission.claim("p-2", owner_id="worker-a")
    assert attempt is not None

    await page.goto(dashboard + "/sessions")
    await expect(page.locator("#sessions tbody tr")).to_have_count(2, timeout=WAIT_MS)
    await page.click(f"text={session.id}")
    await expect(page.locator("#context tbody tr")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator("#history")).to_contain_text("Thursday, by noon.")
    await page.screenshot(path=shots / "session.png", full_page=True)

    await page.goto(dashboard + "/submissions?view=running")
    await expect(page.locator("#submissions tbody tr")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#submissions")).to_contain_text("worker-a")
    await expect(page.locator("#submission-counts")).to_contain_text("running 1")
    await page.screenshot(path=shots / "submissions.png", full_page=True)
    await page.click("#submissions a:has-text('p-2')")
    await expect(page.locator("#submission")).to_contain_text("1 of at most 10", timeout=WAIT_MS)
    await expect(page.locator("#journal")).to_have_text("no turn began")
    await page.screenshot(path=shots / "submission.png", full_page=True)

    # The search box goes straight to what an id names.
    await page.fill("header input[name=q]", "p-1")
    await page.press("header input[name=q]", "Enter")
    await expect(page.locator("#payload")).to_contain_text('"prompt": "hi"', timeout=WAIT_MS)
    assert page.url.endswith("/submission?id=p-1")
    await page.fill("header input[name=q]", "no-such-id")
    await page.press("header input[name=q]", "Enter")
    await expect(page.locator("#matches")).to_contain_text("nothing is named", timeout=WAIT_MS)

    await page.goto(dashboard + "/server")
    await expect(page.locator("#schema")).to_contain_text(
        f"{fm.schema.LAYOUT_VERSION:04d}_layout", timeout=WAIT_MS
    )
    await page.screenshot(path=shots / "server.png", full_page=True)


@pytest.fixture(scope="module")
def docs_site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """The documentation site, built as ``mkdocs build --strict`` builds it, and its pages."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    site = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert len(list(site.rglob("assets/diagrams/*.svg"))) >= 5
    return site, sorted(site.rglob("index.html"))


@pytest.mark.parametrize("width", [1280, 1440])
async def test_the_docs_render_offline_and_their_code_fits_the_column(
    browser: object, docs_site: tuple[Path, list[Path]], width: int
) -> None:
    """Every page of the built site, opened from disk with nothing else reachable: each
    image (the diagrams are static SVG) loads, nothing is fetched from another host, and
    no code example is cut on the right on a laptop screen."""
    context = await browser.new_context(viewport={"width": width, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    fetched: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(("file:", "data:")) else fetched.append(r.url)
    )
    try:
        site, pages = docs_site
        for html in pages:
            await page.goto(html.as_uri())
            broken = await page.evaluate(
                "() => [...document.images].filter(i => !i.complete || !i.naturalWidth)"
                ".map(i => i.src)"
            )
            cut = await page.evaluate(
                "() => [...document.querySelectorAll('.md-content pre > code')]"
                ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent)"
            )
            where = html.relative_to(site)
            assert broken == [], f"{where}: images that do not load: {broken}"
            assert cut == [], f"{where}: code cut at {width} px: {[c[:80] for c in cut]}"
    finally:
        await context.close()
    assert fetched == [], f"the site fetched from elsewhere: {fetched[:5]}"
