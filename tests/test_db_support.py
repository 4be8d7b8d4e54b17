"""Fixtures of the database tests (imported by tests/test_db*.py; holds no tests itself).

``backend`` runs a test against SQLite always, and against the real PostgreSQL
and MariaDB servers named by BGCORE_TEST_POSTGRES / BGCORE_TEST_MARIADB. Each
server gets two throwaway databases per test session (``bgcore_t_<random>_a``
and ``_b``, one per test site), dropped afterwards. Unset variables skip those
variants with the reason; with BGCORE_REQUIRE_DATABASES=1 (CI) a missing or
unreachable server fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

SERVER_ENV = {"postgres": "BGCORE_TEST_POSTGRES", "mariadb": "BGCORE_TEST_MARIADB"}
EXAMPLE = {
    "postgres": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}


def _required() -> bool:
    return os.environ.get("BGCORE_REQUIRE_DATABASES") == "1"


def _unavailable(message: str) -> None:
    if _required():
        pytest.fail(f"{message} (BGCORE_REQUIRE_DATABASES=1, so this fails instead of skipping)")
    pytest.skip(message)


@dataclass
class ServerDatabases:
    """Two throwaway databases on one server (None for SQLite: the sites' own files)."""

    kind: str
    urls: dict[str, str] | None

    def reset(self) -> None:
        """Drop every table in both databases, so each test starts from nothing."""
        for url in (self.urls or {}).values():
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                meta = sa.MetaData()
                meta.reflect(conn)
                meta.drop_all(conn)
            engine.dispose()


def _create_databases(kind: str) -> Iterator[ServerDatabases]:
    env = SERVER_ENV[kind]
    base = os.environ.get(env)
    if not base:
        _unavailable(f"{env} is not set; set it (e.g. {EXAMPLE[kind]}) to run the {kind} variants")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
                             connect_args={"connect_timeout": 5})
    tag = uuid.uuid4().hex[:10]
    names = {"a": f"bgcore_t_{tag}_a", "b": f"bgcore_t_{tag}_b"}
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        _unavailable(f"{env}={base} is unreachable: {str(exc.orig).strip().splitlines()[0]}")
    url = sa.make_url(base)
    urls = {k: url.set(database=v).render_as_string(hide_password=False) for k, v in names.items()}
    try:
        yield ServerDatabases(kind, urls)
    finally:
        from bgcore.db.engines import ENGINES

        ENGINES.dispose_all()
        with admin.connect() as conn:
            for name in names.values():
                if kind == "postgres":
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (name,))
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[ServerDatabases]:
    yield from _create_databases("postgres")


@pytest.fixture(scope="session")
def mariadb_databases() -> Iterator[ServerDatabases]:
    yield from _create_databases("mariadb")


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def backend(request: pytest.FixtureRequest) -> ServerDatabases:
    """The database kind of this test run; server kinds come with clean databases."""
    if request.param == "sqlite":
        return ServerDatabases("sqlite", None)
    databases: ServerDatabases = request.getfixturevalue(f"{request.param}_databases")
    databases.reset()
    return databases


@pytest.fixture
def db_bench(bench_dir, backend):  # type: ignore[no-untyped-def]
    """``bench_dir`` whose sites a.test and b.test have migrated databases of ``backend``."""
    from bgcore.migrate import migrate_site

    if backend.urls:
        bench_dir.add_site("a.test", db_url=backend.urls["a"])
        bench_dir.add_site("b.test", db_url=backend.urls["b"])
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    bench_dir.backend = backend
    return bench_dir
