"""Redis the way production has it: ACL users and passwords, TLS, malformed settings, and no password in
any output. Real redis-servers (with a conf file, or TLS certificates made by trustme) on free ports;
the CLI in-process where that shows the behaviour, real worker and start processes for their logs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bgcore.connection import parse_redis_url, parse_sentinel, redact
from bgcore.errors import RedisConfigError
from bgcore.processes import free_port
from tests.cli_support import run
from tests.conftest import BGCORE_EXE, FIXTURE_APPS, BenchDir
from tests.redis_topology import Node, server, tls_supported, wait_until

PASSWORD = "s3cret-pass"  # requirepass: the default user's password
APP_USER, APP_PASSWORD = "bgapp", "app-Pa55"  # an ACL user allowed everything bgcore does
RO_USER, RO_PASSWORD = "reader", "ro-Pa55"  # an ACL user that may only read
SECRETS = (PASSWORD, APP_PASSWORD, RO_PASSWORD)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A redis-server with requirepass and two ACL users."""
    node = server(tmp_path_factory.mktemp("acl"), "acl", [
        f'requirepass "{PASSWORD}"',
        f"user {APP_USER} on >{APP_PASSWORD} ~* &* +@all",
        f"user {RO_USER} on >{RO_PASSWORD} ~* +@read +ping +hello +client",
    ])
    try:
        node.wait_ready(PASSWORD)
        yield node
    finally:
        node.stop()


def make_bench(root: Path, **common: Any) -> BenchDir:
    """A bench with sites a.test and b.test (app testapp) whose common config is ``common`` (no default Redis)."""
    bench = BenchDir(root / "bench", redis_url="")
    bench.sites.mkdir(parents=True)
    (bench.sites / "common_site_config.json").write_text(
        json.dumps({"apps_path": [str(FIXTURE_APPS)], **common}, indent=2))
    bench.add_site("a.test")
    bench.add_site("b.test")
    return bench


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS + ("master-secret", "sentinel-secret"):
            assert secret not in text, f"a password shows in:\n{text}"


def one_error_line(result: Any) -> str:
    """The CLI failed with exit 1 and one 'Error:' line on stderr; that line."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert_no_secret(result.stdout, result.stderr)
    return str(lines[0])


def evidence(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- ACL users and passwords ----------------------------------------------------------------------
def test_enqueue_and_a_worker_run_a_job_as_an_acl_user(acl_server: Node, tmp_path: Path) -> None:
    # Given a bench whose redis_queue names an ACL user and its password
    client = acl_server.client(PASSWORD)
    client.flushall()
    bench = make_bench(tmp_path, redis_queue=f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0")
    bench.cli("migrate", check=True)
    out = tmp_path / "ran.jsonl"
    # When a job is enqueued from the command line and a burst worker runs
    enqueued = bench.cli("enqueue", "testapp.tasks.record", "--site", "a.test",
                         "--kwargs", json.dumps({"path": str(out), "tag": "acl"}), check=True)
    worker = bench.cli("worker", "--burst", check=True)
    # Then the job ran in its site, and Redis logged no refused login
    assert [(r["site"], r["tag"]) for r in evidence(out)] == [("a.test", "acl")]
    assert client.acl_log() == []
    assert_no_secret(enqueued.stdout, enqueued.stderr, worker.stdout, worker.stderr)


def test_the_requirepass_password_alone_works_too(acl_server: Node, tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_queue=f"redis://:{PASSWORD}@127.0.0.1:{acl_server.port}/0")
    result = run(bench, "show-pending-jobs", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize("url", [
    "redis://{user}:wrong-password@127.0.0.1:{port}/0",
    "redis://:wrong-password@127.0.0.1:{port}/0",
    "redis://127.0.0.1:{port}/0",  # no password at all: NOAUTH
])
def test_a_wrong_password_is_one_clear_line_and_exit_1(acl_server: Node, tmp_path: Path, url: str) -> None:
    bench = make_bench(tmp_path, redis_queue=url.format(user=APP_USER, port=acl_server.port))
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "refused the credentials" in line and "check the user and password in redis_queue" in line
    assert "wrong-password" not in line
    doctor = run(bench, "doctor", "--format", "json")  # doctor reports it (exit 1), password hidden
    assert doctor.exit_code == 1 and "refused the credentials" in json.loads(doctor.stdout)["redis_error"]
    assert "wrong-password" not in doctor.stdout + doctor.stderr


def test_a_worker_and_the_scheduler_refuse_a_wrong_password_at_start(acl_server: Node, tmp_path: Path) -> None:
    # A wrong password cannot be waited out: the daemons exit 1 with one line instead of retrying forever
    bench = make_bench(tmp_path, redis_queue=f"redis://{APP_USER}:wrong-password@127.0.0.1:{acl_server.port}/0")
    for command in (["worker"], ["schedule"]):
        result = bench.cli(*command, timeout=60)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and "refused the credentials" in errors[0], result.stderr
        assert "wrong-password" not in result.stdout + result.stderr


def test_an_acl_user_without_the_permissions_bgcore_needs_is_named(acl_server: Node, tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_queue=f"redis://{RO_USER}:{RO_PASSWORD}@127.0.0.1:{acl_server.port}/0")
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "the ACL user may not run a command bgcore needs" in line


# -- passwords never shown -------------------------------------------------------------------------
def test_doctor_text_and_json_show_the_url_without_its_password(acl_server: Node, tmp_path: Path) -> None:
    url = f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    bench = make_bench(tmp_path, redis_queue=url)
    text = run(bench, "doctor")
    assert f"redis: redis://{APP_USER}:***@127.0.0.1:{acl_server.port}/0 -> OK" in text.stdout
    as_json = run(bench, "doctor", "--format", "json")
    report = json.loads(as_json.stdout)
    assert report["redis_ok"] and report["redis_url"] == f"redis://{APP_USER}:***@127.0.0.1:{acl_server.port}/0"
    assert_no_secret(text.stdout, text.stderr, as_json.stdout, as_json.stderr)


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    bench = make_bench(tmp_path, redis_queue=f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{port}/0")
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert f"Redis at redis://{APP_USER}:***@127.0.0.1:{port}/0 failed (ConnectionError" in line
    for fmt in ((), ("--format", "json")):
        doctor = run(bench, "doctor", *fmt)
        assert doctor.exit_code == 1 and "***" in doctor.stdout
        assert_no_secret(doctor.stdout, doctor.stderr)


def test_worker_and_start_log_lines_never_show_the_password(acl_server: Node, tmp_path: Path) -> None:
    # Given a bench on a password URL, and a worker started while that server is down (the outage line)
    down = free_port()
    bench = make_bench(tmp_path, redis_queue=f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{down}/0")
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([BGCORE_EXE, "--bench", str(bench.path), "worker", "--log-file", str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "Redis is unreachable" in (log.read_text() if log.exists() else ""), 60,
                   "the worker's outage line")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    worker_out = (worker.stdout.read().decode() if worker.stdout else "") + log.read_text()
    assert f"redis://{APP_USER}:" not in worker_out or f"{APP_USER}:***@" in worker_out
    # And `bgcore start` on the reachable server: its banner and logs
    good = make_bench(tmp_path / "good", redis_queue=f"redis://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{acl_server.port}/0",
                      workers={"short": {"background_workers": 0}, "long": {"background_workers": 0}})
    start_log = tmp_path / "start.out"
    with open(start_log, "wb") as out:
        start = subprocess.Popen([BGCORE_EXE, "--bench", str(good.path), "start", "--no-scheduler"],
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "bgcore start: bench" in start_log.read_text() and "pool pid=" in start_log.read_text(),
                   90, "the start banner and a pool's first line")
    finally:
        start.send_signal(signal.SIGTERM)
        try:
            start.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(start.pid, signal.SIGKILL)
            start.wait(timeout=10)
    started = start_log.read_text()
    assert f"Redis at redis://{APP_USER}:***@127.0.0.1:{acl_server.port}/0" in started
    assert_no_secret(worker_out, started)


def test_redact_hides_every_password_form() -> None:
    assert redact("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert redact("rediss://:p@h:1/0?ssl_cert_reqs=none") == "rediss://:***@h:1/0?ssl_cert_reqs=none"
    assert redact("unix:///run/r.sock?db=0&password=p") == "unix:///run/r.sock?db=0&password=***"
    assert redact("Redis at redis://u:p%40x@h:1/0 failed; and redis://h:2/0") == \
        "Redis at redis://u:***@h:1/0 failed; and redis://h:2/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("redis://u:p@ss@h:1/0 and x@y") == "redis://u:***@h:1/0 and x@y"  # a raw @ in the password


# -- TLS --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Path]]:
    """A redis-server that speaks only TLS, with a certificate of a CA made by trustme; (node, CA file)."""
    if not tls_supported():
        pytest.skip("this redis-server was built without TLS (no tls-port)")
    trustme = pytest.importorskip("trustme")
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port()
    node = server(directory, "tls", [f"tls-port {port}", f'tls-cert-file "{cert_file}"',
                                     f'tls-key-file "{key_file}"', f'tls-ca-cert-file "{ca_file}"',
                                     "tls-auth-clients no", f'requirepass "{PASSWORD}"'])
    node.port = port  # clients use the TLS port; the plain one is left unused
    try:
        wait_until(lambda: node.client(PASSWORD, ssl=True, ssl_ca_certs=str(ca_file)).ping(), 30, "the TLS server")
        yield node, ca_file
    finally:
        node.stop()


def test_enqueue_and_a_worker_run_a_job_over_tls(tls_server: tuple[Node, Path], tmp_path: Path) -> None:
    node, ca_file = tls_server
    url = f"rediss://:{PASSWORD}@127.0.0.1:{node.port}/0?ssl_ca_certs={ca_file}"
    bench = make_bench(tmp_path, redis_queue=url)
    bench.cli("migrate", check=True)
    out = tmp_path / "ran.jsonl"
    bench.cli("enqueue", "testapp.tasks.record", "--site", "b.test",
              "--kwargs", json.dumps({"path": str(out), "tag": "tls"}), check=True)
    bench.cli("worker", "--burst", check=True)
    assert [(r["site"], r["tag"]) for r in evidence(out)] == [("b.test", "tls")]
    doctor = run(bench, "doctor", "--format", "json")
    assert json.loads(doctor.stdout)["redis_url"].startswith("rediss://:***@")


def test_a_certificate_that_does_not_verify_is_one_clear_line(tls_server: tuple[Node, Path], tmp_path: Path) -> None:
    node, _ = tls_server
    bench = make_bench(tmp_path, redis_queue=f"rediss://:{PASSWORD}@127.0.0.1:{node.port}/0")  # no CA: unknown issuer
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "the TLS handshake failed" in line and "CERTIFICATE_VERIFY_FAILED" in line


def test_a_plain_url_to_a_tls_only_port_says_to_use_rediss(tls_server: tuple[Node, Path], tmp_path: Path) -> None:
    node, _ = tls_server
    bench = make_bench(tmp_path, redis_queue=f"redis://:{PASSWORD}@127.0.0.1:{node.port}/0")
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "use a rediss:// URL" in line


def test_a_tls_url_to_a_plain_text_server_is_one_clear_line(acl_server: Node, tmp_path: Path) -> None:
    # The plain server never answers the TLS handshake: after the connect timeout (5 s), one line
    bench = make_bench(tmp_path, redis_queue=f"rediss://:{PASSWORD}@127.0.0.1:{acl_server.port}/0")
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "no answer to the TLS handshake" in line and "use redis:// for it" in line
    worker = bench.cli("worker", timeout=60)  # and a worker exits 1 instead of waiting for ever
    assert worker.returncode == 1 and "no answer to the TLS handshake" in worker.stderr


# -- malformed settings ------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:6379/0", "must be a redis://, rediss:// or unix:// URL"),
    (6379, "must be a redis://, rediss:// or unix:// URL (redis://user:password@host:6379/0), found 6379 (int)"),
    ("redis://127.0.0.1:notaport/0", "is not a valid Redis URL"),
    ("redis://127.0.0.1:6379/0?socket_timout=3", "unknown option 'socket_timout'; did you mean 'socket_timeout'?"),
    ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "is not a rediss:// URL; use rediss:// for TLS"),
    ("rediss://127.0.0.1:6379/0?ssl_cert_reqs=sometimes", "ssl_cert_reqs='sometimes' must be one of"),
    ("rediss://127.0.0.1:6379/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs='/no/such/ca.pem' does not exist"),
])
def test_a_malformed_redis_queue_names_the_key_and_what_is_expected(url: object, expected: str) -> None:
    with pytest.raises(RedisConfigError, match="redis_queue") as caught:
        parse_redis_url(url, where="sites/common_site_config.json: redis_queue")
    assert expected in str(caught.value)


def test_a_malformed_url_never_shows_its_password(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_queue=f"redis://u:{APP_PASSWORD}@127.0.0.1:6379/0?socket_timout=3")
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "redis://u:***@127.0.0.1" in line


GOOD_SENTINEL = {"sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"], "master": "mymaster",
                 "password": "master-secret", "sentinel_password": "sentinel-secret", "db": 2}


def test_a_well_formed_redis_sentinel_parses() -> None:
    parsed = parse_sentinel(GOOD_SENTINEL)
    assert parsed.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379)) and parsed.db == 2
    assert parsed.describe() == "Sentinel master 'mymaster' (db 2) via 10.0.0.1:26379, 10.0.0.2:26379"


@pytest.mark.parametrize(("value", "expected"), [
    (["10.0.0.1:26379"], "redis_sentinel must be an object like"),
    ({**GOOD_SENTINEL, "sentinels": []}, "redis_sentinel.sentinels must be a non-empty list"),
    ({}, "redis_sentinel.sentinels must be a non-empty list"),
    ({**GOOD_SENTINEL, "sentinels": "10.0.0.1:26379"}, "redis_sentinel.sentinels must be a non-empty list"),
    ({**GOOD_SENTINEL, "sentinels": ["10.0.0.1"]}, "'10.0.0.1' is not a \"host:port\" address"),
    ({**GOOD_SENTINEL, "sentinels": ["10.0.0.1:99999"]}, "is not a \"host:port\" address"),
    ({k: v for k, v in GOOD_SENTINEL.items() if k != "master"}, "redis_sentinel.master must be the name"),
    ({**GOOD_SENTINEL, "db": -1}, "redis_sentinel.db must be a database number"),
    ({**GOOD_SENTINEL, "db": "0"}, "redis_sentinel.db must be a database number"),
    ({**GOOD_SENTINEL, "password": 1234}, "redis_sentinel.password must be a string"),
    ({**GOOD_SENTINEL, "sentinel": ["10.0.0.1:26379"]}, "unknown key 'sentinel'; did you mean 'sentinels'?"),
])
def test_a_malformed_redis_sentinel_is_one_clear_error(value: object, expected: str) -> None:
    with pytest.raises(RedisConfigError) as caught:
        parse_sentinel(value, where="sites/common_site_config.json")
    message = str(caught.value)
    assert expected in message and "sites/common_site_config.json: redis_sentinel" in message
    assert_no_secret(message)


def test_a_malformed_redis_sentinel_on_the_command_line_is_exit_1(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_sentinel={**GOOD_SENTINEL, "sentinels": ["nowhere"]})
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert "redis_sentinel.sentinels: 'nowhere' is not a \"host:port\" address" in line
    worker = bench.cli("worker", timeout=60)
    assert worker.returncode == 1 and "is not a \"host:port\" address" in worker.stderr


def test_both_redis_queue_and_redis_sentinel_is_refused(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_queue=f"redis://127.0.0.1:{free_port()}/0", redis_sentinel=GOOD_SENTINEL)
    line = one_error_line(run(bench, "show-pending-jobs"))
    assert "both redis_queue and redis_sentinel are set; keep one" in line


# -- redis_wait_replicas -----------------------------------------------------------------------------
def test_wait_replicas_without_replicas_warns_once_and_still_enqueues(
        acl_server: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import bgcore
    from bgcore.jobs import queued_count

    # Given a bench that asks one replica to confirm every write, on a server that has none
    bench_dir = make_bench(tmp_path, redis_queue=f"redis://:{PASSWORD}@127.0.0.1:{acl_server.port}/0",
                           redis_wait_replicas=1)
    bench = bench_dir.bench()
    before = queued_count(bench, "default", "a.test")
    # When two jobs are enqueued
    with caplog.at_level("WARNING", logger="bgcore.engine.broker"), bgcore.connect("a.test", bench=bench):
        bgcore.enqueue("testapp.tasks.noop")
        bgcore.enqueue("testapp.tasks.noop")
    # Then both are queued (on the master), and one warning says they could be lost in a failover
    assert queued_count(bench, "default", "a.test") == before + 2
    warnings = [r.getMessage() for r in caplog.records if "redis_wait_replicas" in r.getMessage()]
    assert warnings == ["only 0 of redis_wait_replicas=1 replica(s) confirmed a write within 1000 ms; such writes "
                        "can be lost in a failover until the replicas keep up (said once)"]


@pytest.mark.parametrize("value", [-1, "1", True, 17, 1.5])
def test_a_malformed_redis_wait_replicas_is_one_clear_line(tmp_path: Path, value: object) -> None:
    bench = make_bench(tmp_path, redis_queue=f"redis://127.0.0.1:{free_port()}/0", redis_wait_replicas=value)
    line = one_error_line(run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test"))
    assert f"redis_wait_replicas must be an integer from 0 to 16, found {value!r}" in line


def test_only_the_connection_module_builds_redis_clients() -> None:
    # One place: a client built anywhere else would miss Sentinel, TLS checks and the clear errors
    package = Path(__file__).resolve().parent.parent / "bgcore"
    # redis-py's Sentinel(...) takes the Sentinels' addresses; the config schema's Sentinel() kind takes nothing
    builder = re.compile(r"from_url\(|redis\.Redis\(|StrictRedis\(|Sentinel\((?!\))")
    found = [f"{path.relative_to(package)}: {line.strip()}" for path in package.rglob("*.py")
             if path.name != "connection.py"
             for line in path.read_text().splitlines() if builder.search(line)]
    assert found == []


def test_a_unix_socket_url_with_a_password_works(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    node = server(tmp_path / "redis", "unix", [f'unixsocket "{sock}"', "unixsocketperm 700",
                                               f'requirepass "{PASSWORD}"'])
    try:
        node.wait_ready(PASSWORD)
        bench = make_bench(tmp_path, redis_queue=f"unix://{sock}?db=0&password={PASSWORD}")
        enqueued = run(bench, "enqueue", "testapp.tasks.noop", "--site", "a.test")
        assert enqueued.exit_code == 0, enqueued.stderr
        pending = json.loads(run(bench, "show-pending-jobs", "--format", "json").stdout)
        assert "a.test" in json.dumps(pending)
        doctor = run(bench, "doctor", "--format", "json")
        assert json.loads(doctor.stdout)["redis_url"] == f"unix://{sock}?db=0&password=***"
        assert_no_secret(enqueued.stdout, enqueued.stderr, doctor.stdout)
    finally:
        node.stop()


def test_an_empty_redis_sentinel_is_an_error_not_silently_ignored(tmp_path: Path) -> None:
    bench = make_bench(tmp_path, redis_sentinel={})
    line = one_error_line(run(bench, "show-pending-jobs"))
    assert "redis_sentinel.sentinels must be a non-empty list" in line
