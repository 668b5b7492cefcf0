"""Shared fixtures: stores (memory, SQLite file, PostgreSQL), fake time, ONOS emulators, and
environment checks. (Plain helpers, usable outside pytest too, are in tests/lab/helpers.py.)

PostgreSQL tests use ECNET_TEST_PG_URL (default: the local server on 127.0.0.1:5432, database
"test", as on our machines and in CI). Each test gets a fresh database created for it, so
runs never see each other's rows. CI sets ECNET_REQUIRE_ALL=1: a missing PostgreSQL, OVS or
root then fails the run instead of skipping, so no feature hides behind a skip.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.lab.helpers import FakeClock, free_port

if TYPE_CHECKING:
    from onos_emulator import EmulatorServer

PG_URL = os.environ.get("ECNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_ALL = os.environ.get("ECNET_REQUIRE_ALL") == "1"


def _need(ok: bool, why: str) -> None:
    if ok:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required by ECNET_REQUIRE_ALL=1 but unavailable: {why}")
    pytest.skip(why)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") or item.get_closest_marker("ovs"):
            item.add_marker(pytest.mark.usefixtures("_require_root"))
        if item.get_closest_marker("ovs"):
            item.add_marker(pytest.mark.usefixtures("_require_ovs"))
        if item.get_closest_marker("podman"):
            item.add_marker(pytest.mark.usefixtures("_require_podman"))


@pytest.fixture
def _require_root() -> None:
    _need(os.geteuid() == 0, "needs root (network namespaces, netlink)")


@pytest.fixture
def _require_ovs() -> None:
    _need(shutil.which("ovsdb-server") is not None and shutil.which("ovs-vswitchd") is not None,
          "needs Open vSwitch (apt-get install openvswitch-switch)")


@pytest.fixture
def _require_podman() -> None:
    _need(shutil.which("podman") is not None, "needs podman (apt-get install podman runc)")


def _pg_admin_url() -> str:
    return PG_URL


def _pg_available() -> bool:
    try:
        import psycopg
        url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    _need(_pg_available(), f"needs PostgreSQL at {PG_URL}")
    import psycopg
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"ecnet_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A PostgreSQL server of this test's own (tests/lab/postgres.py), for tests that crash
    or restart the database: never the shared one. Stopped by its pid afterwards."""
    from tests.lab.postgres import PrivatePostgres, available
    why = available() if os.geteuid() == 0 else "needs root (runs initdb as postgres)"
    _need(not why, why)
    pg = PrivatePostgres(tmp_path_factory.mktemp("pg"))
    try:
        yield pg.start()
    finally:
        pg.stop()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[object]:
    """Every store implementation; the conformance suite runs against each."""
    from ipam.store.memory import MemoryStore
    from ipam.store.sql import SqlStore
    if request.param == "memory":
        s: object = MemoryStore()
        yield s
        return
    if request.param == "sqlite":
        s = SqlStore(f"sqlite:///{tmp_path}/ipam.db")
    else:
        s = SqlStore(request.getfixturevalue("pg_url"))
    try:
        yield s
    finally:
        s.close()  # type: ignore[attr-defined]


@pytest.fixture
def clock() -> FakeClock:
    """Time for an `IpamService` or a `SyncWorker` that moves only when the test moves it."""
    return FakeClock()


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Makes ONOS emulators, each stopped after the test. `start=False` leaves one down (each
    test then decides when ONOS is up) on a port chosen now, so its URL is known before it
    starts and stays the same across stop/start; other keywords go to `EmulatorServer`."""
    from onos_emulator import EmulatorServer
    made: list[EmulatorServer] = []

    def make(*, start: bool = True, **kw: Any) -> EmulatorServer:
        kw.setdefault("port", 0 if start else free_port())
        e = EmulatorServer(**kw)
        made.append(e)
        if start:
            e.start()
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture
def emu(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    """A running ONOS emulator: admin onos/rocks, and a viewer-only user viewer/look."""
    return make_emulator(viewer_user="viewer", viewer_password="look")
