"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright for Python.

A running bench of real processes (redis-server, ``bgcore worker``, ``bgcore
schedule``, ``bgcore dashboard``) and one browser page that never reloads
while it watches a job go from queued to finished, reads a failed job's
traceback, requeues it once its cause is fixed, and pauses a site's scheduler
(which ``bgcore scheduler status`` then reports). Screenshots of every page go
to ``.screenshots/`` (git-ignored; ``BGCORE_SCREENSHOTS`` picks another folder).

Skipped when chromium or Playwright is missing, unless ``BGCORE_REQUIRE_BROWSER=1``
(``.ci/run`` sets it, and installs chromium with apt).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bgcore
from bgcore import keys
from bgcore.processes import free_port
from tests.conftest import BGCORE_EXE, FIXTURE_APPS, REPO, BenchDir
from tests.polling import wait_until

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # a busy 2-core machine: every wait is on a condition, with room to spare
SCREENSHOTS = Path(os.environ.get("BGCORE_SCREENSHOTS", REPO / ".screenshots"))

REQUIRED = bool(os.environ.get("BGCORE_REQUIRE_BROWSER"))
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)
if not CHROMIUM.exists():
    if REQUIRED:
        raise RuntimeError(f"{CHROMIUM} is missing; install it with 'apt-get install -y chromium chromium-driver'")
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

pytestmark = pytest.mark.slow

APP = {
    "__init__.py": "",
    "hooks.py": 'app_name = "browserapp"\nscheduler_events = {"hourly": ["browserapp.tasks.hourly_report"]}\n',
    "tasks.py": textwrap.dedent('''
        import os
        import time


        def hourly_report():
            return "report"


        def slow(seconds):
            time.sleep(seconds)
            return "slept"


        def wait_for_file(path, timeout=300):
            deadline = time.monotonic() + timeout
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.1)
            return "gate opened"


        def needs_flag(flag, note=""):
            if not os.path.exists(flag):
                raise RuntimeError("flag file missing: " + flag)
            return "flag found"
    '''),
}


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "condition") -> None:
    wait_until(predicate, what, timeout, 0.2)


@pytest.fixture
def running_bench(tmp_path: Path, redis_client: Any, redis_server: str) -> Iterator[tuple[BenchDir, str]]:
    """A migrated bench served by a real worker, scheduler and dashboard; yields it and the dashboard URL."""
    apps = tmp_path / "apps" / "browserapp"
    apps.mkdir(parents=True)
    for name, text in APP.items():
        (apps / name).write_text(text)
    bench = BenchDir(tmp_path / "bench", redis_server)
    bench.sites.mkdir(parents=True)
    port = free_port()
    bench.write_common(apps_path=[str(FIXTURE_APPS), str(apps.parent)], dashboard_port=port,
                       scheduler_tick_interval=2, worker_heartbeat_seconds=2)
    bench.add_site("a.test", installed_apps=["browserapp"], time_zone="Europe/Berlin")
    bench.add_site("b.test", installed_apps=["browserapp"])
    bench.cli("migrate", "--site", "all", check=True)
    env = dict(os.environ, BGCORE_BENCH=str(bench.path))
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "processes.log").open("ab")
    try:
        for argv in (["worker", "--pool", "1"], ["schedule"], ["dashboard"]):
            procs.append(subprocess.Popen([BGCORE_EXE, *argv], env=env, stdout=log, stderr=log, cwd=bench.path))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/sites"), what="the dashboard to answer")
        yield bench, url
    finally:
        for proc in procs:  # ours, by PID
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def page(running_bench: tuple[BenchDir, str]) -> Iterator[Any]:
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            found = context.new_page()
            found.set_default_timeout(TIMEOUT_MS)
            yield found
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def enqueue(bench: BenchDir, method: str, **kwargs: Any) -> str:
    with bgcore.connect("a.test", bench.bench()):
        return keys.local_job_id(bgcore.enqueue(method, queue="default", **kwargs).id)


def test_an_operator_watches_requeues_and_pauses_in_a_real_browser(running_bench: tuple[BenchDir, str],
                                                                   page: Any, tmp_path: Path) -> None:
    bench, url = running_bench
    # Given the overview of the running bench, open in the browser
    page.goto(url + "/")
    page.wait_for_selector("#workers td:has-text('a.test'), #workers td:has-text('idle')")
    page.wait_for_selector("#scheduler:has-text('Leader')")
    page.evaluate("window.__not_reloaded = true")

    # When a job is enqueued behind one that holds the only horse until a gate file appears
    gate = tmp_path / "gate"
    enqueue(bench, "browserapp.tasks.wait_for_file", path=str(gate), job_id="gatekeeper")
    page.wait_for_selector("#workers a:has-text('browserapp.tasks.wait_for_file')")  # the busy worker, live
    job = enqueue(bench, "browserapp.tasks.slow", seconds=0, job_id="watched")
    # Then the overview counts it queued, without a reload
    page.wait_for_selector("tr[data-queue='default'] td.queued:text-is('1')")
    assert page.evaluate("window.__not_reloaded") is True
    shot(page, "overview")
    # And its own page shows it queued, then, once the gate opens, finished, without a reload
    page.goto(f"{url}/jobs/a.test/{job}")
    page.wait_for_selector("#job-status:text-is('queued')")
    page.evaluate("window.__not_reloaded = true")
    gate.write_text("open")
    page.wait_for_selector("#job-status:text-is('finished')")
    assert page.evaluate("window.__not_reloaded") is True
    assert "slept" in page.inner_text("#result")

    # Given a job that fails until a flag file exists
    flag = tmp_path / "flag"
    failing = enqueue(bench, "browserapp.tasks.needs_flag", flag=str(flag), note="<script>alert(1)</script>",
                      job_id="needs-flag")
    # When the operator opens the failed jobs of a.test and then that job
    page.goto(f"{url}/jobs?status=failed&site=a.test")
    page.wait_for_selector(f"tr[data-job='{failing}']")
    shot(page, "jobs-failed")
    page.click(f"tr[data-job='{failing}'] a:has-text('browserapp.tasks.needs_flag')")
    # Then the traceback is there, and the script in its argument is only text
    page.wait_for_selector("#traceback")
    assert f"RuntimeError: flag file missing: {flag}" in page.inner_text("#traceback")
    assert "<script>alert(1)</script>" in page.inner_text("#arguments")
    shot(page, "job-failed")
    # When the cause is fixed and Requeue is clicked
    flag.write_text("ok")
    page.click("#requeue")
    # Then the job runs again and the page shows it finished
    page.wait_for_selector("#message:has-text('requeued needs-flag')")
    page.wait_for_selector("#job-status:has-text('finished')")
    assert "flag found" in page.inner_text("#result")
    shot(page, "job-requeued")

    # When the operator pauses a.test's scheduler from its page
    page.goto(f"{url}/sites/a.test")
    page.wait_for_selector("#events td:has-text('browserapp.tasks.hourly_report')")
    shot(page, "site")
    page.click("button:has-text('Pause scheduler')")
    # Then the page says paused, and so does `bgcore scheduler status`
    page.wait_for_selector("#scheduler-state:has-text('paused')")
    status = json.loads(bench.cli("scheduler", "status", "--site", "a.test", "--format", "json", check=True).stdout)
    assert status[0]["stopped_by"] == "pause_scheduler" and status[0]["active"] is False

    # And the sites page shows it paused, b.test still enabled
    page.goto(f"{url}/sites")
    page.wait_for_selector("tr[data-site='a.test'] td.state-paused")
    assert page.inner_text("tr[data-site='b.test'] td.state-enabled") == "enabled"
    shot(page, "sites")
    page.goto(f"{url}/jobs")
    page.wait_for_selector("#jobs")
    shot(page, "jobs")
