"""The dashboard's routes through Starlette's test client, on a real redis-server and real jobs.

Given a bench with sites a.test and b.test (migrated), jobs run by an in-process
burst horse; when a page or action is requested; then what it shows or does.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from rq.job import Job
from starlette.testclient import TestClient

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.cli import main
from bgcore.dashboard.app import create_app
from bgcore.dashboard.settings import DashboardSettings
from bgcore.engine.horse import Horse, HorseLimits
from bgcore.engine.middleware import default_middleware
from bgcore.engine.slots import Slots
from bgcore.errors import ConfigError, InvalidArgument
from bgcore.rqbridge import SERIALIZER
from tests.conftest import BenchDir

SCRIPT = "<script>alert(1)</script>"
NOW = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def drain(bench: Bench, queue: str = "default") -> None:
    Horse(bench, [bench.queues[queue]], name="dash-horse", index=0, slots=Slots(1),
          middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(10**6, 10**6), burst=True).run()


def status(bench: Bench, rq_id: str) -> str:
    return str(Job.fetch(rq_id, connection=bench.redis(), serializer=SERIALIZER).get_status().value)


@pytest.fixture
def bench(bench_dir: BenchDir) -> Bench:
    bench_dir.write_common(time_zone="UTC")
    result = CliRunner().invoke(main, ["--bench", str(bench_dir.path), "migrate", "--site", "all"])
    assert result.exit_code == 0, result.output
    return bench_dir.bench()


@pytest.fixture
def client(bench: Bench) -> Iterator[TestClient]:
    with TestClient(create_app(bench)) as found:
        yield found


def token(client: TestClient) -> str:
    """Load a page (which sets the CSRF cookie) and return the token its forms carry."""
    page = client.get("/sites/a.test")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def failed_job(bench: Bench, site: str = "a.test", **kwargs: object) -> str:
    with bgcore.connect(site, bench):
        rq_id = bgcore.enqueue("testapp.tasks.fail", **kwargs).id
    drain(bench)
    assert status(bench, rq_id) == "failed"
    return rq_id


# -- pages -------------------------------------------------------------------------------------


def test_overview_shows_per_queue_counts_and_live_fragment(bench: Bench, client: TestClient) -> None:
    # Given two queued jobs of a.test on short, one failed on default
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short")
        bgcore.enqueue("testapp.tasks.noop", queue="short")
    failed_job(bench)
    # When the overview is loaded
    page = client.get("/")
    # Then each queue has its row with queued and failed counts, inside a polled live part
    assert page.status_code == 200
    short = re.search(r'<tr data-queue="short">.*?</tr>', page.text, re.S)
    assert short and '<td class="n queued">2</td>' in short.group(0)
    default = re.search(r'<tr data-queue="default">.*?</tr>', page.text, re.S)
    assert default and ">1</a></td>" in default.group(0)
    assert 'hx-trigger="every 3s"' in page.text and "/static/htmx-2.0.11.min.js" in page.text
    assert "No scheduler leads this bench" in page.text and "Throughput, last hour" in page.text
    # And htmx's poll gets only the fragment
    fragment = client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and 'data-queue="short"' in fragment.text


def test_overview_lists_a_busy_worker_with_its_job_and_site(bench: Bench, client: TestClient) -> None:
    # Given a registered horse that has taken a job of b.test
    from bgcore.engine.pool import register
    from bgcore.rqbridge import broker
    import socket

    with bgcore.connect("b.test", bench):
        rq_id = bgcore.enqueue("testapp.tasks.sleep", queue="long", seconds=1, job_name="nightly export").id
    register(bench.redis(), "horse-x", [bench.queues["long"]], bench.bench_id, socket.gethostname(), ttl=60)
    taken = broker(bench).take("horse-x", [("long", 1500)])
    assert taken is not None and taken.job_id == rq_id
    # When the overview is loaded
    page = client.get("/").text
    # Then the worker row names the job, its site and its run time
    row = re.search(r"<tr><td>horse-x</td>.*?</tr>", page, re.S)
    assert row, page
    assert "nightly export" in row.group(0) and "<td>b.test</td>" in row.group(0)
    assert f'href="/jobs/b.test/{keys.local_job_id(rq_id)}"' in row.group(0)


def test_sites_page_counts_filters_sorts_and_pages(bench: Bench, bench_dir: BenchDir, client: TestClient) -> None:
    # Given a third site paused, a fourth with a broken config, and failed jobs of b.test
    bench_dir.add_site("c.test", pause_scheduler=True)
    (bench_dir.add_site("d.test") / "site_config.json").write_text("{broken")
    failed_job(bench, "b.test")
    failed_job(bench, "b.test")
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop")
    # When the sites page is loaded
    page = client.get("/sites").text
    rows = dict(re.findall(r'<tr data-site="([^"]+)">(.*?)</tr>', page, re.S))
    # Then every site has its counts, switch state and config error
    assert set(rows) == {"a.test", "b.test", "c.test", "d.test"}
    assert '<td class="n">1</td>' in rows["a.test"] and "state-enabled" in rows["a.test"]
    assert ">2</a></td>" in rows["b.test"]
    assert "state-paused" in rows["c.test"]
    assert "site_config.json" in rows["d.test"] and 'class="warn"' in rows["d.test"]
    # And filters narrow it
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?scheduler=paused").text) == ["c.test"]
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?q=b.t").text) == ["b.test"]
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?errors=1").text) == ["d.test"]
    # And sorting by failed, descending, puts b.test first; paging by 20 keeps all four on page 1
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?sort=failed&desc=1").text)[0] == "b.test"
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?sort=site&desc=1&size=20").text)[0] == "d.test"
    assert re.findall(r'data-site="([^"]+)"', client.get("/sites?size=20&page=2").text) == []


def test_sites_page_pages_on_the_server(bench: Bench, bench_dir: BenchDir, client: TestClient) -> None:
    for n in range(25):
        bench_dir.add_site(f"s{n:02d}.test")
    first = re.findall(r'data-site="([^"]+)"', client.get("/sites?size=20").text)
    second = client.get("/sites?size=20&page=2").text
    assert len(first) == 20 and first[0] == "a.test"
    assert re.findall(r'data-site="([^"]+)"', second)[-1] == "s24.test" and "27 in all" in second


def test_site_detail_shows_events_log_and_buttons(bench: Bench, client: TestClient) -> None:
    failed_job(bench)
    page = client.get("/sites/a.test")
    assert page.status_code == 200
    assert 'id="scheduler-state" class="state-enabled">enabled' in page.text
    for action in ("enable", "disable", "pause", "resume"):
        assert f'action="/sites/a.test/scheduler/{action}"' in page.text
    assert "RuntimeError: boom" in page.text  # the failure in the site's job log
    assert "bgcore.cli" not in page.text


def test_jobs_page_filters_by_status_site_queue_and_method(bench: Bench, client: TestClient) -> None:
    # Given queued jobs in two sites and queues, one delayed job, one failed job
    with bgcore.connect("a.test", bench):
        a1 = bgcore.enqueue("testapp.tasks.noop", queue="short", job_id="a1").id
        bgcore.enqueue("testapp.tasks.add", queue="default", a=1, b="x", job_id="a2")
        bgcore.enqueue_in(3600, "testapp.tasks.noop", queue="long", job_id="a-later")
    with bgcore.connect("b.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short", job_id="b1")
    failed_job(bench, "b.test", job_id="b-bad")

    def ids(url: str) -> list[str]:
        response = client.get(url)
        assert response.status_code == 200, response.text
        return re.findall(r'<tr data-job="([^"]+)">', response.text)

    assert sorted(ids("/jobs")) == ["a1", "b1"]  # a2 ran (failed) with the default-queue drain
    assert ids("/jobs?status=queued&site=a.test") == ["a1"]
    assert ids("/jobs?status=queued&queue=short&site=b.test") == ["b1"]
    assert ids("/jobs?status=scheduled") == ["a-later"]
    assert ids("/jobs?status=scheduled&site=b.test") == []
    assert sorted(ids("/jobs?status=failed")) == ["a2", "b-bad"]
    assert ids("/jobs?status=failed&site=b.test") == ["b-bad"]
    assert ids("/jobs?status=failed&site=a.test&queue=default") == ["a2"]
    assert ids("/jobs?status=failed&method=testapp.tasks.add") == ["a2"]
    assert ids("/jobs?status=running") == []
    assert status(bench, a1) == "queued"
    # An unknown status or queue is a clear 400
    bad = client.get("/jobs?status=lost")
    assert bad.status_code == 400 and "unknown job status" in bad.text
    assert client.get("/jobs?queue=nope").status_code == 400


def test_jobs_page_pages_on_the_server(bench: Bench, client: TestClient) -> None:
    with bgcore.connect("a.test", bench):
        for n in range(45):
            bgcore.enqueue("testapp.tasks.noop", job_id=f"j{n:02d}")
    first = client.get("/jobs?size=20").text
    third = client.get("/jobs?size=20&page=3").text
    assert re.findall(r'data-job="([^"]+)"', first)[:2] == ["j00", "j01"] and "45 in all" in first
    assert re.findall(r'data-job="([^"]+)"', third) == [f"j{n}" for n in range(40, 45)]


def test_job_detail_shows_arguments_timings_worker_traceback(bench: Bench, client: TestClient) -> None:
    rq_id = failed_job(bench, message="disk full")
    page = client.get(f"/jobs/a.test/{keys.local_job_id(rq_id)}")
    assert page.status_code == 200
    arguments = re.search(r'<pre id="arguments">(.*?)</pre>', page.text, re.S)
    assert arguments and arguments.group(1) == "{\n  &#34;message&#34;: &#34;disk full&#34;\n}"
    assert "RuntimeError: disk full" in page.text and 'id="traceback"' in page.text
    assert "dash-horse" in page.text and 'id="requeue"' in page.text
    # And a finished job shows its result
    with bgcore.connect("a.test", bench):
        done = bgcore.enqueue("testapp.tasks.add", a=2, b=3, job_id="sum").id
    drain(bench)
    assert status(bench, done) == "finished"
    shown = client.get("/jobs/a.test/sum").text
    assert 'id="result">5</pre>' in shown and "finished" in shown


def test_unknown_sites_and_jobs_are_404(client: TestClient) -> None:
    assert client.get("/sites/nope.test").status_code == 404
    assert client.get("/sites/.hidden").status_code == 404
    assert client.get("/jobs/a.test/no-such-job").status_code == 404
    assert client.get("/jobs/nope.test/x").status_code == 404
    assert client.get("/jobs/a.test/bad%20id").status_code == 404


# -- actions -------------------------------------------------------------------------------------


def test_scheduler_buttons_switch_the_site_as_the_cli_does(bench: Bench, bench_dir: BenchDir,
                                                           client: TestClient) -> None:
    csrf = token(client)
    for action, expected in (("pause", "paused"), ("resume", "enabled"), ("disable", "disabled"),
                             ("enable", "enabled")):
        response = client.post(f"/sites/a.test/scheduler/{action}", data={"csrf_token": csrf},
                               follow_redirects=False)
        assert response.status_code == 303
        page = client.get(response.headers["location"]).text
        assert f'id="scheduler-state" class="state-{expected}">{expected}' in page
        shown = bench_dir.cli("scheduler", "status", "--site", "a.test", "--format", "json", check=True).stdout
        assert ('"stopped_by": null' in shown) == (expected == "enabled")
    assert client.post("/sites/a.test/scheduler/explode", data={"csrf_token": csrf}).status_code == 404


def test_trigger_enqueues_one_run_of_an_event(bench: Bench, bench_dir: BenchDir) -> None:
    # Given a site whose app has a scheduled event
    bench_dir.add_site("e.test", installed_apps=["demo_app"])
    bench_dir.write_common()
    assert CliRunner().invoke(main, ["--bench", str(bench_dir.path), "migrate", "--site", "e.test"]).exit_code == 0
    with TestClient(create_app(bench_dir.bench(), clock=lambda: NOW)) as client:
        page = client.get("/sites/e.test").text
        event = re.search(r'name="event" value="([0-9a-f]+)"', page)
        assert event, page
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert csrf
        response = client.post("/sites/e.test/trigger", data={"csrf_token": csrf.group(1), "event": event.group(1)},
                               follow_redirects=False)
        assert response.status_code == 303 and "enqueued+trigger-" in response.headers["location"]
        queued = client.get("/jobs?site=e.test").text
        assert "trigger-" + event.group(1) in queued
        missing = client.post("/sites/e.test/trigger", data={"csrf_token": csrf.group(1), "event": "nope"})
        assert missing.status_code == 400 and "has no scheduled event" in missing.text
        # And a paused site's event is not run, as the CLI refuses it without --force
        client.post("/sites/e.test/scheduler/pause", data={"csrf_token": csrf.group(1)})
        paused = client.post("/sites/e.test/trigger", data={"csrf_token": csrf.group(1), "event": event.group(1)})
        assert paused.status_code == 409 and "has pause_scheduler on" in paused.text


def test_requeue_and_delete_one_failed_job(bench: Bench, client: TestClient) -> None:
    first, second = failed_job(bench, job_id="one"), failed_job(bench, job_id="two")
    csrf = token(client)
    response = client.post("/jobs/a.test/one/requeue", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and status(bench, first) == "queued"
    again = client.post("/jobs/a.test/one/requeue", data={"csrf_token": csrf})
    assert again.status_code == 409  # no longer failed
    response = client.post("/jobs/a.test/two/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert bench.redis().exists(keys.rq_job(second)) == 0
    assert bench.redis().zcard(keys.site_failed(bench.bench_id, "a.test")) == 0


def test_bulk_requeue_and_delete_by_filter_touch_only_what_it_selects(bench: Bench, client: TestClient) -> None:
    a_fail = failed_job(bench, "a.test")
    with bgcore.connect("a.test", bench):
        a_add = bgcore.enqueue("testapp.tasks.add", a=1, b="x").id
    drain(bench)
    b_fail = failed_job(bench, "b.test")
    csrf = token(client)
    # When every failed fail() job of a.test is requeued
    response = client.post("/jobs/failed/requeue", data={"csrf_token": csrf, "site": "a.test",
                                                         "method": "testapp.tasks.fail"}, follow_redirects=False)
    assert response.status_code == 303 and "requeued+1+failed" in response.headers["location"]
    assert (status(bench, a_fail), status(bench, a_add), status(bench, b_fail)) == ("queued", "failed", "failed")
    # And deleting in bulk needs its box ticked
    assert client.post("/jobs/failed/delete", data={"csrf_token": csrf}).status_code == 400
    assert status(bench, a_add) == "failed"
    # And every failed job of every site is deleted
    response = client.post("/jobs/failed/delete", data={"csrf_token": csrf, "confirm": "yes"},
                           follow_redirects=False)
    assert "deleted+2+failed" in response.headers["location"]
    assert not bench.redis().exists(keys.rq_job(a_add)) and not bench.redis().exists(keys.rq_job(b_fail))
    assert status(bench, a_fail) == "queued"


def test_actions_never_touch_another_bench_on_the_same_redis(bench: Bench, bench_dir: BenchDir, tmp_path,
                                                              redis_server: str) -> None:
    # Given a second bench (its own id) on the same Redis with the same site name and a failed job
    other = BenchDir(tmp_path / "other", redis_server)
    other.sites.mkdir(parents=True)
    other.write_common(bench_id="other-bench")
    other.add_site("a.test")
    assert CliRunner().invoke(main, ["--bench", str(other.path), "migrate", "--site", "all"]).exit_code == 0
    theirs = failed_job(other.bench(), "a.test", job_id="theirs")
    with bgcore.connect("a.test", other.bench()):
        bgcore.enqueue("testapp.tasks.noop", job_id="their-queued")
    ours = failed_job(bench, "a.test", job_id="ours")
    with TestClient(create_app(bench)) as client:
        csrf = token(client)
        # When this bench's dashboard requeues, deletes in bulk and pauses a.test
        assert client.post("/jobs/failed/delete", data={"csrf_token": csrf, "confirm": "yes"},
                           follow_redirects=False).status_code == 303
        client.post("/sites/a.test/scheduler/pause", data={"csrf_token": csrf})
        # And lists jobs
        listed = client.get("/jobs?status=queued").text + client.get("/jobs?status=failed").text
    # Then the other bench's jobs and site are as they were
    assert status(other.bench(), theirs) == "failed" and not bench.redis().exists(keys.rq_job(ours))
    assert "their-queued" not in listed and "theirs" not in listed
    assert "pause_scheduler" not in (other.sites / "a.test" / "site_config.json").read_text()


def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(bench: Bench, client: TestClient) -> None:
    rq_id = failed_job(bench, job_id="keep")
    csrf = token(client)
    missing = client.post("/jobs/a.test/keep/delete", data={})
    wrong = client.post("/jobs/a.test/keep/delete", data={"csrf_token": "x" * 43})
    foreign = client.post("/jobs/a.test/keep/delete", data={"csrf_token": csrf},
                          headers={"Origin": "http://evil.example"})
    switched = client.post("/sites/a.test/scheduler/pause", data={})
    assert [r.status_code for r in (missing, wrong, foreign, switched)] == [403] * 4
    assert "CSRF token" in missing.text and "another site" in foreign.text
    assert status(bench, rq_id) == "failed"
    assert "state-enabled" in client.get("/sites/a.test").text
    # And GET never acts
    assert client.get("/jobs/a.test/keep/delete").status_code in (404, 405)
    # And the token in the header works as well as the form field
    assert client.post("/jobs/a.test/keep/requeue", headers={"X-CSRF-Token": csrf},
                       follow_redirects=False).status_code == 303


# -- escaping ----------------------------------------------------------------------------------


def test_every_value_from_a_job_is_escaped(bench: Bench, bench_dir: BenchDir, client: TestClient) -> None:
    # Given a failed job whose argument, name and traceback carry a script
    with bgcore.connect("a.test", bench):
        rq_id = bgcore.enqueue("testapp.tasks.fail", message=SCRIPT, job_name=SCRIPT, job_id="xss").id
    drain(bench)
    # And a queued job with such a name, and a site name check for the method filter
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.echo", job_name=SCRIPT, job_kwargs={"x": SCRIPT})
    pages = [client.get(url).text for url in (
        "/", "/sites", "/sites/a.test", "/jobs", "/jobs?status=failed", f"/jobs/a.test/{keys.local_job_id(rq_id)}",
        "/jobs?status=failed&method=" + SCRIPT, "/jobs?site=" + SCRIPT, "/sites/" + SCRIPT)]
    # Then no page carries the script as markup, and the escaped text is there
    for page in pages:
        assert SCRIPT not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[5]  # argument, name, traceback
    assert pages[5].count("&lt;script&gt;") >= 3


# -- authentication ------------------------------------------------------------------------------


def test_with_a_password_every_page_action_and_metrics_need_it(bench: Bench) -> None:
    with TestClient(create_app(bench, password="s3cret")) as client:
        for url in ("/", "/sites", "/sites/a.test", "/jobs", "/jobs/a.test/x", "/metrics", "/static/dashboard.css"):
            refused = client.get(url)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert client.post("/sites/a.test/scheduler/pause").status_code == 401
        wrong = "Basic " + base64.b64encode(b"admin:nope").decode()
        assert client.get("/", headers={"Authorization": wrong}).status_code == 401
        good = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        assert client.get("/", headers=good).status_code == 200
        metrics = client.get("/metrics", headers=good)
        assert metrics.status_code == 200 and "bgcore_jobs" in metrics.text


def test_without_a_password_pages_are_open(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_settings_refuse_a_non_loopback_address_without_a_password(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    assert DashboardSettings.from_bench(bench).url == "http://127.0.0.1:8009/"
    with pytest.raises(InvalidArgument, match="without a password: set dashboard_password"):
        DashboardSettings.from_bench(bench, host="0.0.0.0")
    bench_dir.write_common(dashboard_password="pw", dashboard_port=9100)
    chosen = DashboardSettings.from_bench(bench_dir.bench(), host="0.0.0.0")
    assert (chosen.host, chosen.port, chosen.password) == ("0.0.0.0", 9100, "pw")
    for bad in ({"dashboard_port": "80"}, {"dashboard_port": 0}, {"dashboard_password": ""},
                {"dashboard_host": ""}):
        bench_dir.write_common(**bad)
        with pytest.raises(ConfigError, match="dashboard_"):
            DashboardSettings.from_bench(bench_dir.bench())


def test_the_cli_refuses_to_serve_a_public_address_without_a_password(bench_dir: BenchDir) -> None:
    result = CliRunner().invoke(main, ["--bench", str(bench_dir.path), "dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "Error: the dashboard refuses to listen on '0.0.0.0' without a password" in result.output


def test_a_taken_port_is_one_clear_error_and_start_runs_without_the_dashboard(
        bench_dir: BenchDir, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from bgcore.start import dashboard_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["--bench", str(bench_dir.path), "dashboard", "--port", str(port)])
        assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.output
        bench_dir.write_common(dashboard_port=port)
        with caplog.at_level("WARNING", logger="bgcore.start"):
            assert dashboard_port(bench_dir.bench()) is None
        assert f"dashboard not started: port {port} of 127.0.0.1 is in use" in caplog.text
