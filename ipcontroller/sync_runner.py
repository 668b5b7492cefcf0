"""Runs the ONOS sync for one controller replica: the outbox drainer (under a lease, so one
replica drains at a time) and the periodic full resync. Domain logic is in ipam.onos: the
worker (sync), the store seam (outbox.OutboxStore) and the desired state (desired).

What the resync repairs (ONOS has no read-back, shared/onos-contract.md):
* It replays every live network, subnet and port (create-or-update), so anything ONOS lost
  (a rebuild, an emptied store) or holds in an older version comes back as the store has it.
* It replays the deletes of everything the store released in the last week (the `released`
  table, written in the release's own transaction), so an object that reappears in ONOS
  after its delete was applied (ONOS restored from an old backup, a request that landed
  late) is removed again. DELETE of an absent object is 204: a replayed delete is harmless.
* It leaves objects with pending outbox rows to those rows, which carry the newest state, so
  it neither resurrects a port whose delete is queued nor doubles the backlog's work.
Any replica can be asked for a resync (`ipctl sync now`): it counts the request in the
database and the lease holder runs it within a second, replaying every kept delete. The
periodic resync replays only the deletes released since the holder's previous one.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam.onos import OnosClient, SyncWorker, read_password
from ipam.onos.client import DEFAULT_PASSWORD
from ipam.onos.desired import DesiredStateReader
from ipam.service import IpamService
from ipam.store import Store

from .metrics import (
    SYNC_DEAD_LETTERS,
    SYNC_FAILED,
    SYNC_OLDEST,
    SYNC_OUTBOX_CAP,
    SYNC_OUTBOX_OVERFLOWS,
    SYNC_PENDING,
)

log = logging.getLogger(__name__)

# sync_state keys: resync requests made so far (a counter any replica bumps), the count the
# lease holders have served, and when a resync last completed (for `ipctl sync status`).
RESYNC_REQUESTS = "resync-requests"
RESYNC_SERVED = "resync-served"
LAST_RESYNC = "last-resync"
# A periodic resync replays the deletes released since the previous one began, less this
# margin (clock steps, a slow previous run); a requested one, or the first one after taking
# the lease, replays everything the `released` table keeps.
RELEASED_MARGIN_SECONDS = 300.0
# Ports (or deletes) a resync sends per hold of the drain lock: between chunks the outbox
# drains, so new pods reach ONOS during a long replay (500 calls: about a second against ONOS
# here).
RESYNC_CHUNK = 500
# After a failed resync (ONOS down or refusing us) try again this soon, not a whole interval
# later: the state ONOS lost stays lost until a resync succeeds.
RESYNC_RETRY_SECONDS = 30.0


def _ts(epoch: float | None) -> str:
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


class SyncRunner:
    def __init__(self, store: Store, settings: Any, ipam: IpamService | None = None) -> None:
        # `ipam` is accepted for the daemon's call and not used: the resync reads the store
        # through ipam.onos.desired, the drain goes through the store's OutboxStore.
        self.store = store
        self.settings = settings
        self.desired = DesiredStateReader(store)
        password = read_password(settings.onos_password_file or None)
        if password == DEFAULT_PASSWORD:
            log.warning("the ONOS password is ONOS's factory default: anyone who reaches ONOS "
                        "can change the overlay; set one and give --onos-password-file")
        self.client = OnosClient(settings.onos_url, settings.onos_user, password,
                                 timeout=settings.onos_timeout)
        self.worker = SyncWorker(
            store, self.client, settings.holder,
            lease_ttl=settings.onos_lease_ttl, max_backoff=settings.onos_max_backoff,
            # A timed-out call may still land in ONOS later; the object's next call waits
            # for it (see SyncWorker.settle).
            settle=2.0 * settings.onos_timeout,
            # Gather a burst's rows into one round (ONOS learns ~10 ms later; the pod path
            # competes with fewer sync rounds for the GIL and SQLite's single writer).
            coalesce=0.01, dead_letter_after=settings.onos_dead_letter_after)
        self.resync_interval = settings.onos_resync_interval
        self.outbox_cap = settings.onos_outbox_cap
        SYNC_OUTBOX_CAP.set(self.outbox_cap)
        self.last_resync = 0.0     # when a resync last completed here (status)
        self._next_resync = 0.0    # when the periodic loop tries next (0: at start-up)
        self._next_request_try = 0.0   # after a failed requested resync: not every second
        # Deletes released before this were replayed by an earlier resync of this holder;
        # None: replay all (start-up, a new lease, a request).
        self._released_cutoff: float | None = None
        self._was_leader = False

    def resync_now(self, full: bool = True) -> int:
        """Replay the store to ONOS now (this replica must hold the lease). `full` replays
        every kept delete; otherwise only those since this holder's previous resync."""
        started = time.time()
        since = None if full else self._released_cutoff
        calls = self.worker.resync(lambda: self.desired.desired(since),
                                   self.desired.fresh_ports, chunk=RESYNC_CHUNK,
                                   fresh_deleted=self.desired.fresh_deleted)
        if self.worker.status().leader:
            self.last_resync = time.time()
            self.store.set_state(LAST_RESYNC, repr(self.last_resync))
            self._released_cutoff = started - RELEASED_MARGIN_SECONDS
        log.info("onos resync calls=%d full=%s", calls, since is None)
        return calls

    def request_resync(self) -> pb.SyncNowResponse:
        """`ipctl sync now` on any replica: count a request in the database; the replica
        holding the lease runs it within a second (one replayer at a time, and a long
        replay never holds the caller's RPC open)."""
        self.store.set_state(RESYNC_REQUESTS, str(self._count(RESYNC_REQUESTS) + 1))
        return pb.SyncNowResponse(forwarded=True, holder=self.lease_holder())

    def _count(self, key: str) -> int:
        text = self.store.get_state(key)
        try:
            return int(text) if text else 0
        except ValueError:
            return 0

    def wake(self) -> None:
        self.worker.wake()

    def start(self, stop_event: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self._run, args=(stop_event,), name="onos-sync",
                             daemon=True)
        t.start()
        return t

    def _run(self, stop_event: threading.Event) -> None:
        drainer = threading.Thread(target=self.worker.run_forever, args=(stop_event, 1.0),
                                   name="onos-drain", daemon=True)
        drainer.start()
        while not stop_event.wait(1.0):
            try:
                st = self.worker.status()
            except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
                log.exception("onos sync status failed")
                continue
            SYNC_PENDING.set(st.pending)
            SYNC_FAILED.set(st.failed)
            SYNC_OLDEST.set(st.oldest_pending_seconds or 0)
            SYNC_DEAD_LETTERS.set(st.dead_letters)
            if st.leader and not self._was_leader:
                self._released_cutoff = None   # a new holder replays every kept delete
            self._was_leader = st.leader
            if st.leader:
                self.enforce_cap(st.pending)
                self._serve(time.time())
        drainer.join(timeout=5)
        self.client.close()

    def enforce_cap(self, pending: int) -> bool:
        """Over the cap (ONOS away for long, pods coming and going), the port rows give way:
        they are dropped and a full resync requested, which replays every live port and
        every kept delete from the store once ONOS is back. Nothing is lost; the alert
        (a counter, and an ERROR line) says ONOS is far behind."""
        if not self.outbox_cap or pending < self.outbox_cap:
            return False
        dropped = self.store.drop_rows("port")
        self.request_resync()
        SYNC_OUTBOX_OVERFLOWS.inc()
        log.error("onos outbox reached its cap pending=%d cap=%d: dropped %d port rows, "
                  "a full resync will replay the store", pending, self.outbox_cap, dropped)
        return True

    def _serve(self, now: float) -> None:
        """One round of the holder's loop: a requested resync first, else a periodic one."""
        try:
            asked, served = self._count(RESYNC_REQUESTS), self._count(RESYNC_SERVED)
        except Exception:  # noqa: BLE001 - a store hiccup must not end the loop
            log.exception("reading resync requests failed")
            asked = served = 0
        if asked > served and now >= self._next_request_try:
            try:
                self.resync_now(full=True)
                self.store.set_state(RESYNC_SERVED, str(asked))
                self._next_resync = time.time() + self.resync_interval
            except Exception as exc:  # noqa: BLE001 - kept; tried again RESYNC_RETRY later
                log.warning("requested onos resync failed: %s", exc)
                self._next_request_try = time.time() + RESYNC_RETRY_SECONDS
            return
        if self.resync_interval and now >= self._next_resync:
            try:
                self.resync_now(full=False)
                self._next_resync = time.time() + self.resync_interval
            except Exception as exc:  # noqa: BLE001 - retried soon, see RESYNC_RETRY
                log.warning("periodic onos resync failed: %s", exc)
                self._next_resync = time.time() + min(self.resync_interval,
                                                      RESYNC_RETRY_SECONDS)

    def lease_holder(self) -> str:
        """Who drains right now (any replica can answer), or "" while nobody holds it."""
        return self.store.lease_holder()

    def status_pb(self) -> pb.SyncStatusResponse:
        st = self.worker.status()
        return pb.SyncStatusResponse(
            enabled=True, pending=st.pending, failed=st.failed,
            oldest_pending_seconds=st.oldest_pending_seconds or 0.0,
            last_error=st.last_error, last_success=_ts(st.last_success_at),
            last_resync=_ts(self._last_resync_anywhere()), holder=self.lease_holder(),
            dead_letters=st.dead_letters)

    # ------------------------------------------------------------ dead letters
    def dead_letters_pb(self) -> pb.ListDeadLettersResponse:
        return pb.ListDeadLettersResponse(dead_letters=[
            pb.DeadLetter(id=d.id, kind=d.kind, object_id=d.object_id, op=d.op,
                          attempts=d.attempts, last_error=d.last_error,
                          created_at=_ts(d.created_at), dead_at=_ts(d.dead_at))
            for d in self.store.dead_letters()])

    def skip_dead_letter(self, dead_id: int) -> bool:
        found = self.store.skip_dead_letter(dead_id)
        log.info("onos dead letter skipped id=%d found=%s", dead_id, found)
        SYNC_DEAD_LETTERS.set(self.store.dead_letter_count())
        return found

    def retry_dead_letters(self, dead_ids: list[int] | None) -> int:
        """Back into the outbox (at its end) and the drain woken for them."""
        retried = self.store.retry_dead_letters(dead_ids, time.time())
        log.info("onos dead letters retried asked=%s retried=%d",
                 "all" if dead_ids is None else len(dead_ids), retried)
        SYNC_DEAD_LETTERS.set(self.store.dead_letter_count())
        self.worker.wake()
        return retried

    def _last_resync_anywhere(self) -> float:
        """Whichever replica ran it: the holder records it in the database."""
        try:
            text = self.store.get_state(LAST_RESYNC)
        except Exception:  # noqa: BLE001 - status must answer even on a store hiccup
            text = None
        return max(self.last_resync, float(text) if text else 0.0)

