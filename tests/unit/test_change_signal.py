"""A SQLite store's tailer hears of this process's commits at once, not at the next poll
(ipam.store.signal.PushedPollSignal): the embedded default serves the topology watch
without the poll's latency. The poll stays for writers that cannot push."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

import ipam.store.sql as sql
from ipam.service import IpamService
from ipam.store.sql import SqlStore


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SqlStore:
    # An hour between polls: only a push can wake a waiter within the test's patience.
    monkeypatch.setattr(sql, "SQLITE_LOG_POLL", 3600.0)
    return SqlStore(f"sqlite:///{tmp_path}/ipam.db")


def _waiter(store: SqlStore) -> tuple[threading.Thread, threading.Event]:
    sig = store.change_signal()
    woke = threading.Event()

    def run() -> None:
        sig.wait(600)
        woke.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, woke


def test_a_commit_with_change_rows_wakes_the_tailers_signal(store: SqlStore) -> None:
    svc = IpamService(store)
    svc.create_pool("p", "dynamic")
    _, woke = _waiter(store)
    svc.create_subnet("p", "10.9.0.0/24")           # a subnet change: a change-log row
    assert woke.wait(30), "the signal slept through a commit that logged a change"


def test_every_tailer_of_the_store_is_woken(store: SqlStore) -> None:
    svc = IpamService(store)
    svc.create_pool("p", "dynamic")
    waiters = [_waiter(store)[1] for _ in range(3)]
    svc.create_subnet("p", "10.9.0.0/24")
    assert all(w.wait(30) for w in waiters)


def test_a_write_without_change_rows_does_not_wake_it(store: SqlStore) -> None:
    """A rolled-back or change-less write has nothing for the tailer to read."""
    _, woke = _waiter(store)
    with store.transaction():
        pass
    assert not woke.wait(0.2)


def test_a_closed_signal_is_forgotten_by_the_store(store: SqlStore) -> None:
    """A stopped tailer closes its signal; the store kept it and fired it on every commit
    for the store's life (one more each time a watch service restarted on it)."""
    import gc
    import weakref
    svc = IpamService(store)
    svc.create_pool("p", "dynamic")
    sig = store.change_signal()
    gone = weakref.ref(sig)
    sig.close()
    del sig
    svc.create_subnet("p", "10.9.0.0/24")           # a commit fires the store's signals
    gc.collect()
    assert gone() is None
