"""The outbox drain: turns committed outbox rows into ONOS REST calls, losing none.

Why this shape:
* Rows are written in the same transaction as the IPAM change, so a change is never lost;
  the worker only has to apply each row at least once. Every ONOS call is idempotent
  (upsert = POST-or-PUT, DELETE of an absent object is 204), so "at least once" is enough.
* Order per object is the store's job (only the oldest row of an object is claimable) and the
  worker keeps it inside a batch: once an object's item fails, its later items wait.
* One drainer among replicas (a lease in the store), so ONOS sees one ordered stream.
* When ONOS is unreachable or refuses our credentials, every further call in the batch would
  fail the same way; the worker stops the batch and pauses (as long as the failed row waits)
  instead of hammering ONOS. So transient failures also keep the producer's order across
  objects (network, then subnet, then port); only a rejected row lets younger rows pass.
* ONOS has no read-back, so `resync` replays the desired state (create-or-update, delete what
  was released) to repair anything ONOS lost, e.g. after an ONOS rebuild.
* A call that timed out may still be applied by ONOS later. Nothing else is sent for that
  object until `settle` seconds have passed, so the late call cannot overtake a newer one
  (a POST landing after the port's DELETE would leave a port nobody can delete: no GET).
* A rejected row must not block its object forever: a newer row of the object supersedes it
  (`drop_superseded`), and one rejected `dead_letter_after` times moves to the dead letters
  (an admin skips or retries it). Its first rejection is logged at ERROR, later ones at
  DEBUG with a WARNING summary at most every `_REJECT_LOG_EVERY` seconds.
* Every retirement of a row is fenced by the lease's token: a worker that lost the lease
  mid-batch (a takeover while it waited on ONOS) stops at its next write instead of retiring
  a row the new holder has claimed.
* Backoffs stored on rows are this holder's pacing, not facts: a holder that just got the
  lease (a restart with fixed credentials, a takeover from a dead replica) probes at once
  instead of waiting out delays its predecessor chose.

Times (`now`, `next_attempt_at`) are wall-clock seconds by default because they are stored in
a database shared by replicas and compared with `created_at` written by the IPAM service
(time.time); a per-process monotonic clock would not be comparable across replicas. The lease's
expiry is the store's business, on its own clock (the database's), never this process's.
"""
from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

from .errors import OnosAuthError, OnosError, OnosRejected, OnosUnavailable
from .model import (
    OnosNetwork,
    OnosObject,
    OnosPort,
    OnosSubnet,
    PayloadError,
    from_payload,
)
from .outbox import OutboxItem, OutboxStore

log = logging.getLogger(__name__)


class OnosApi(Protocol):
    """What the worker needs from OnosClient (a fake can stand in)."""

    def upsert_network(self, n: OnosNetwork) -> str: ...
    def upsert_subnet(self, s: OnosSubnet) -> str: ...
    def upsert_port(self, p: OnosPort) -> str: ...
    def delete_network(self, network_id: str) -> None: ...
    def delete_subnet(self, subnet_id: str) -> None: ...
    def delete_port(self, port_id: str) -> None: ...


class DesiredState(NamedTuple):
    """What ONOS should hold (upserted) and what was released (deleted), for resync."""

    networks: Sequence[OnosNetwork]
    subnets: Sequence[OnosSubnet]
    ports: Sequence[OnosPort]
    deleted_ports: Sequence[str] = ()
    deleted_subnets: Sequence[str] = ()
    deleted_networks: Sequence[str] = ()


@dataclass(frozen=True)
class SyncStatus:
    pending: int
    failed: int
    oldest_pending_seconds: float | None
    last_error: str
    last_error_at: float | None
    last_success_at: float | None
    holder: str
    leader: bool
    paused_until: float | None
    dead_letters: int = 0


# on_result(outcome, item, error): outcome is one of OUTCOMES; item is None during resync.
ResultHook = Callable[[str, "OutboxItem | None", "OnosError | None"], None]
OUTCOMES = ("ok", "unavailable", "auth", "rejected", "in_use", "payload", "internal")

# A new holder's first claim ignores next_attempt_at (far enough ahead to cover any backoff).
_PROBE_HORIZON = 10 * 365 * 86400.0
# Repeated rejections are summarised at WARNING at most this often (the first is an ERROR).
_REJECT_LOG_EVERY = 60.0
# While failed rows may exist, look for superseded ones at most this often (a write).
_SUPERSEDE_EVERY = 1.0


class SyncWorker:
    def __init__(self, store: OutboxStore, client: OnosApi, holder: str, *, batch: int = 64,
                 base_backoff: float = 0.2, max_backoff: float = 30.0,
                 auth_backoff: float = 60.0, lease_ttl: float = 15.0,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None,
                 on_result: ResultHook | None = None, settle: float = 0.0,
                 coalesce: float = 0.0, dead_letter_after: int = 5) -> None:
        self.store = store
        self.client = client
        self.holder = holder
        self.batch = batch
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.auth_backoff = auth_backoff
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_result = on_result
        self.settle = settle
        self.coalesce = coalesce
        self.dead_letter_after = dead_letter_after   # 0: never
        self._token = 0   # the lease's token while this worker holds it
        self._failed_maybe = True   # failed rows may exist: look for superseded ones
        self._supersede_at = float("-inf")
        self._rejected_quiet = 0    # rejections logged at DEBUG since the last summary
        self._reject_summary_at = clock()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # run_once and resync never interleave
        self._leader = False
        self._lease_at = float("-inf")
        self._pause_until: float | None = None
        self._streak = 0  # consecutive unavailable failures, for the worker's own pause
        self._last_error = ""
        self._last_error_at: float | None = None
        self._last_success_at: float | None = None
        self._probe = False  # set when the lease is won: ignore the rows' backoffs once
        # (kind, object_id) -> until when a call that timed out may still land in ONOS
        self._unsettled: dict[tuple[str, str], float] = {}
        # when rows this worker rescheduled become due (a heap), so an idle worker wakes for
        # them instead of sleeping a whole idle_wait
        self._due: list[float] = []

    def __repr__(self) -> str:
        return f"SyncWorker(holder={self.holder!r}, leader={self._leader})"

    # ------------------------------------------------------------------ driving
    def wake(self) -> None:
        """New rows were committed: drain now instead of after idle_wait."""
        self._wake.set()

    def run_once(self) -> int:
        """Claim one batch and apply it; returns how many items completed."""
        with self._lock:
            now = self.clock()
            # Renewed at most every ttl/3 (a write transaction each time: on SQLite it queues
            # behind the allocations' writes, so a round per allocation must not add one).
            if not self._renew(now, force=False):
                return 0
            if self._pause_until is not None and now < self._pause_until:
                return 0
            self._pause_until = None
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
            self._drop_superseded(now)
            horizon = now + _PROBE_HORIZON if self._probe else now
            self._probe = False
            items = self.store.claim(self.holder, self.batch, horizon)
            self._forget_settled(now)
            done = 0
            blocked: set[tuple[str, str]] = set()
            for item in sorted(items, key=lambda i: i.id):
                key = (item.kind, item.object_id)
                if key in blocked:
                    continue  # an earlier item of this object failed: keep the order
                if self._unsettled.get(key, 0.0) > self.clock():
                    self._note_due(self._unsettled[key])
                    continue  # a lost call for it may still land: wait (see settle)
                if not self._renew(self.clock(), force=False):
                    break  # lost the lease mid-batch: the new holder takes over
                verdict = self._process(item)
                if verdict == "ok":
                    done += 1
                elif verdict == "stop":
                    break
                else:
                    blocked.add(key)
            return done

    def run_forever(self, stop_event: threading.Event, idle_wait: float = 1.0) -> None:
        """Drain until stop_event is set. After progress, loop at once; otherwise wait for
        wake(), idle_wait, a row's retry time or the end of a pause, whichever comes first.
        A wake() is followed by `coalesce` seconds of waiting for more: under a burst of
        allocations one round then carries many rows, instead of one round (a claim and its
        transactions, competing with the allocations for the GIL and SQLite's writer) per
        allocation."""
        log.info("onos sync started holder=%s", self.holder)
        while not stop_event.is_set():
            self._wake.clear()
            try:
                done = self.run_once()
            except Exception:  # a store error or bug must not kill the loop
                log.exception("onos sync round failed holder=%s", self.holder)
                done = 0
            if done and self._pause_until is None:
                continue  # progress: more rows may be due (e.g. the next row of an object)
            timeout = idle_wait
            if self._pause_until is not None:
                timeout = min(idle_wait, max(0.0, self._pause_until - self.clock()))
            elif self._due:
                timeout = min(idle_wait, max(0.0, self._due[0] - self.clock()))
            # Wait in short slices so stop_event is honoured even without a wake().
            deadline = time.monotonic() + timeout
            while not stop_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._wake.wait(min(left, 0.1)):
                    if self.coalesce > 0:
                        stop_event.wait(self.coalesce)
                    break
        log.info("onos sync stopped holder=%s", self.holder)

    def drain(self, timeout: float = 30.0, poll: float = 0.05) -> int:
        """Run rounds until the outbox is empty or `timeout` (on self.clock) passes; sleeps
        with self.sleep between idle rounds. For tests, tools and shutdown."""
        deadline = self.clock() + timeout
        total = 0
        while True:
            done = self.run_once()
            total += done
            if self.store.stats(self.clock()).pending == 0 or self.clock() >= deadline:
                return total
            if done:
                continue  # progress: the next batch may be due already
            now = self.clock()
            wait = poll
            if self._pause_until is not None and self._pause_until > now:
                wait = max(poll, min(self._pause_until - now, deadline - now))
            self.sleep(wait)

    def status(self) -> SyncStatus:
        now = self.clock()
        st = self.store.stats(now)
        return SyncStatus(
            pending=st.pending, failed=st.failed,
            oldest_pending_seconds=st.oldest_pending_seconds,
            last_error=self._last_error or st.last_error, last_error_at=self._last_error_at,
            last_success_at=self._last_success_at, holder=self.holder, leader=self._leader,
            paused_until=self._pause_until, dead_letters=self.store.dead_letter_count())

    # ------------------------------------------------------------------ resync
    def resync(self, source: Callable[[], DesiredState | tuple[Any, ...]],
               fresh_ports: Callable[[list[str]], list[OnosPort]] | None = None,
               chunk: int = 500,
               fresh_deleted: Callable[[str, list[str]], list[str]] | None = None) -> int:
        """Replay the desired state to ONOS and return how many operations were sent.

        Needs the lease, and runs under the drain lock: `source` must return one consistent
        snapshot of the store; a change committed after it has its own outbox row, which the
        worker applies after the replay, so a stale snapshot is corrected, never the reverse.

        With `fresh_ports`, the ports (by far the most objects) are replayed in chunks and
        the drain runs between them, so a long replay does not hold up the outbox. Each
        chunk re-reads its ports under the lock (`fresh_ports(ids)` returns the ones still
        live and without pending rows, as they are now): the drain can no longer have
        applied anything newer than what the chunk sends. With `fresh_deleted`, the deletes
        (a week of them: thousands) go the same way, ports, then subnets, then networks,
        each chunk re-checked (`fresh_deleted(kind, ids)`: still gone, no pending row).
        Stops (raises) on OnosUnavailable/OnosAuthError; a rejected object is logged, skipped.
        """
        c = self.client
        deleters: dict[str, Callable[[str], None]] = {
            "port": c.delete_port, "subnet": c.delete_subnet, "network": c.delete_network}
        with self._lock:
            if not self._renew(self.clock(), force=True):
                log.info("onos resync skipped holder=%s reason=not-leader", self.holder)
                return 0
            want = DesiredState(*source())
            deleted = {"port": list(want.deleted_ports), "subnet": list(want.deleted_subnets),
                       "network": list(want.deleted_networks)}
            ops: list[tuple[str, str, Callable[[], object]]] = []
            ops += [("network", n.id, partial(c.upsert_network, n)) for n in want.networks]
            ops += [("subnet", s.id, partial(c.upsert_subnet, s)) for s in want.subnets]
            if fresh_ports is None:
                ops += [("port", p.id, partial(c.upsert_port, p)) for p in want.ports]
            if fresh_deleted is None:
                ops += [(k, i, partial(deleters[k], i)) for k in deleters for i in deleted[k]]
            sent, ok = self._replay(ops, 0)
        chunks: list[Callable[[], list[tuple[str, str, Callable[[], object]]]]] = []
        if fresh_ports is not None:
            ids = [p.id for p in want.ports]
            chunks += [partial(self._port_chunk, fresh_ports, c.upsert_port, ids[i:i + chunk])
                       for i in range(0, len(ids), max(1, chunk))]
        if fresh_deleted is not None:
            chunks += [partial(self._delete_chunk, fresh_deleted, deleters[k], k,
                               deleted[k][i:i + chunk])
                       for k in deleters for i in range(0, len(deleted[k]), max(1, chunk))]
        for make_ops in chunks:
            if not ok:
                return sent
            self._drain_between_chunks()
            with self._lock:
                if not self._renew(self.clock(), force=True):
                    self._note_error(f"resync aborted after {sent} calls: lost the lease")
                    log.warning("onos resync aborted holder=%s reason=lost-lease "
                                "sent=%d", self.holder, sent)
                    return sent
                sent, ok = self._replay(make_ops(), sent)
        if not ok:
            return sent
        log.info("onos resync done holder=%s ops=%d networks=%d subnets=%d ports=%d "
                 "deleted=%d", self.holder, sent, len(want.networks), len(want.subnets),
                 len(want.ports), sum(len(v) for v in deleted.values()))
        return sent

    @staticmethod
    def _port_chunk(fresh_ports: Callable[[list[str]], list[OnosPort]],
                    upsert: Callable[[OnosPort], str], ids: list[str]
                    ) -> list[tuple[str, str, Callable[[], object]]]:
        """The chunk's ports as they are now (read under the lock)."""
        return [("port", p.id, partial(upsert, p)) for p in fresh_ports(ids)]

    @staticmethod
    def _delete_chunk(fresh_deleted: Callable[[str, list[str]], list[str]],
                      delete: Callable[[str], None], kind: str, ids: list[str]
                      ) -> list[tuple[str, str, Callable[[], object]]]:
        """The chunk's deletes still due now (read under the lock): an object live again,
        or with a pending row (which carries its newest state), is left alone."""
        return [(kind, i, partial(delete, i)) for i in fresh_deleted(kind, ids)]

    def _drain_between_chunks(self) -> None:
        """Let the outbox through between two chunks of a replay: new pods reach ONOS while
        a long resync runs. Done here rather than left to the drain thread, which a lock
        released and at once retaken by this thread would rarely let in."""
        for _ in range(16):   # a few batches; a backlog larger than that waits a chunk
            if self.run_once() == 0:
                return

    def _replay(self, ops: list[tuple[str, str, Callable[[], object]]],
                sent: int) -> tuple[int, bool]:
        """Send `ops` in order (under the drain lock); (calls sent so far, completed)."""
        for kind, obj_id, call in ops:
            # A long replay must keep the lease: were it to lapse, another replica would
            # drain (e.g. a port's DELETE) while this one still replays an older snapshot.
            if not self._renew(self.clock(), force=False):
                self._note_error(f"resync aborted after {sent} calls: lost the lease")
                log.warning("onos resync aborted holder=%s reason=lost-lease sent=%d",
                            self.holder, sent)
                return sent, False
            sent += 1
            try:
                call()
            except OnosRejected as e:
                outcome = "in_use" if e.in_use else "rejected"
                log.warning("onos resync %s kind=%s id=%s error=%s", outcome, kind,
                            obj_id, e)
                self._hook(outcome, None, e)
                continue
            except OnosError as e:
                outcome = "auth" if isinstance(e, OnosAuthError) else "unavailable"
                if isinstance(e, OnosUnavailable) and e.ambiguous:
                    self._mark_unsettled((kind, obj_id), self.clock())
                text = _auth_text(e) if isinstance(e, OnosAuthError) else outcome
                self._note_error(f"{text}: resync {kind}/{obj_id}: {e}")
                self._hook(outcome, None, e)
                raise
            self._last_success_at = self.clock()
            self._hook("ok", None, None)
        return sent, True

    # ------------------------------------------------------------------ internals
    def _renew(self, now: float, *, force: bool) -> bool:
        """Renew the lease at most every ttl/3 inside a batch; always at a round's start."""
        if not force and self._leader and now - self._lease_at < self.lease_ttl / 3:
            return True
        token = self.store.acquire_lease(self.holder, self.lease_ttl)
        ok = token > 0
        if ok != self._leader or (ok and token != self._token):
            log.info("onos sync lease holder=%s leader=%s token=%d", self.holder, ok, token)
            self._probe = ok
            self._failed_maybe = self._failed_maybe or ok
        self._leader = ok
        self._token = token
        if ok:
            self._lease_at = now
        return ok

    def _lost_lease(self, what: str) -> str:
        """A fenced write was refused: another holder took the lease. Stop at once; what
        this worker had claimed is the new holder's now."""
        log.warning("onos sync lost the lease holder=%s token=%d during=%s", self.holder,
                    self._token, what)
        self._leader = False
        self._token = 0
        return "stop"

    def _drop_superseded(self, now: float) -> None:
        """Drop rejected rows a newer row of their object replaces (fenced: a worker that
        lost the lease drops nothing, and its next retirement stops it)."""
        if not self._failed_maybe or now - self._supersede_at < _SUPERSEDE_EVERY:
            return
        self._supersede_at = now
        dropped = self.store.drop_superseded(self._token)
        if dropped:
            log.info("onos sync dropped superseded rejected rows count=%d", dropped)
            self._note_due(now)
        elif self.store.stats(now).failed == 0:
            self._failed_maybe = False

    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with full jitter (AWS style): spreads retries of many rows."""
        cap = min(self.max_backoff, self.base_backoff * (2 ** min(attempts, 32)))
        return self.rng.uniform(0.0, cap)

    def _apply(self, item: OutboxItem) -> None:
        if item.op == "delete":
            deleters: dict[str, Callable[[str], None]] = {
                "network": self.client.delete_network, "subnet": self.client.delete_subnet,
                "port": self.client.delete_port}
            if item.kind not in deleters:
                raise PayloadError(f"unknown kind {item.kind!r}")
            deleters[item.kind](item.object_id)
            return
        if item.op != "upsert":
            raise PayloadError(f"unknown op {item.op!r}")
        obj: OnosObject = from_payload(item.kind, item.payload)
        if obj.id != item.object_id:
            raise PayloadError(f"payload id {obj.id!r} != object_id {item.object_id!r}")
        if isinstance(obj, OnosNetwork):
            self.client.upsert_network(obj)
        elif isinstance(obj, OnosSubnet):
            self.client.upsert_subnet(obj)
        else:
            self.client.upsert_port(obj)

    def _process(self, item: OutboxItem) -> str:
        """Apply one item; returns "ok", "blocked" (this object waits) or "stop" (the batch
        ends: ONOS is down or refuses our credentials, so the next call would fail too)."""
        ctx = f"{item.kind}/{item.object_id} {item.op}"
        try:
            self._apply(item)
        except OnosUnavailable as e:
            now = self.clock()
            self._streak += 1
            # The worker pauses exactly as long as the item waits: when it resumes, this item
            # (the oldest due) goes first, so a transient failure never lets younger rows
            # (e.g. the ports of a network whose upsert failed) overtake it.
            delay = self._backoff(max(item.attempts, self._streak - 1))
            pause = delay
            if e.ambiguous:
                # The call may still land: this object waits for it to settle. A port holds
                # up nothing else, so other rows go on; a network or subnet holds up its ports.
                self._mark_unsettled((item.kind, item.object_id), now)
                delay = max(delay, self.settle)
                pause = pause if item.kind == "port" else delay
            if not self._retry(item.id, f"unavailable: {e}", now + delay, False):
                return self._lost_lease("retry_later")
            self._pause_until = now + pause
            self._note_error(f"unavailable: {ctx}: {e}")
            log.warning("onos unavailable item=%d %s attempts=%d error=%s", item.id, ctx,
                        item.attempts + 1, e)
            self._hook("unavailable", item, e)
            return "stop"
        except OnosAuthError as e:
            now = self.clock()
            if not self._retry(item.id, f"{_auth_text(e)}: {e}", now + self.auth_backoff,
                               True):
                return self._lost_lease("retry_later")
            self._pause_until = now + self.auth_backoff
            self._note_error(f"{_auth_text(e)} ({ctx}): {e}")
            log.error("onos auth failure item=%d %s error=%s retry_in=%.0fs", item.id, ctx, e,
                      self.auth_backoff)
            self._hook("auth", item, e)
            return "stop"
        except OnosRejected as e:
            now = self.clock()
            if e.in_use and item.kind == "network" and item.op == "delete":
                # Its ports are still in ONOS (their deletes are queued or retrying): not yet.
                if not self._retry(item.id, f"in use: {e}",
                                   now + self._backoff(item.attempts), False):
                    return self._lost_lease("retry_later")
                log.info("onos network still in use item=%d %s", item.id, ctx)
                self._hook("in_use", item, e)
                return "blocked"
            self._hook("rejected", item, e)
            return self._rejected(item, "rejected", str(e), ctx)
        except PayloadError as e:
            self._hook("payload", item, None)
            return self._rejected(item, "payload", str(e), ctx)
        except Exception as e:  # a bug in one item must not stall the rest
            log.log(logging.ERROR if item.rejections == 0 else logging.DEBUG,
                    "onos sync internal error item=%d %s", item.id, ctx, exc_info=True)
            self._hook("internal", item, None)
            return self._rejected(item, "internal", f"{type(e).__name__}: {e}", ctx)
        if not self.store.complete(item.id, self._token):
            return self._lost_lease("complete")
        self._streak = 0
        self._last_success_at = self.clock()
        log.debug("onos synced item=%d %s", item.id, ctx)
        self._hook("ok", item, None)
        return "ok"

    def _rejected(self, item: OutboxItem, what: str, detail: str, ctx: str) -> str:
        """ONOS refused this row as it is (or it cannot be applied at all): retry it slowly
        until a newer row supersedes it, or move it to the dead letters after
        `dead_letter_after` rejections, so it never blocks its object for good. Logged at
        ERROR the first time, then quietly (a WARNING summary now and then)."""
        now = self.clock()
        error = f"{what}: {detail}"
        self._note_error(f"{what}: {ctx}: {detail}")
        self._failed_maybe = True
        rejections = item.rejections + 1
        if self.dead_letter_after and rejections >= self.dead_letter_after:
            if not self.store.dead_letter(item.id, error, now, self._token):
                return self._lost_lease("dead_letter")
            log.error("onos sync dead-lettered item=%d %s rejections=%d error=%s "
                      "(ipctl sync dead-letters)", item.id, ctx, rejections, error)
            self._note_due(now)   # the object's next row, if any, is claimable now
            return "blocked"
        if not self._retry(item.id, error, now + self.max_backoff, True, rejected=True):
            return self._lost_lease("retry_later")
        if item.rejections == 0:
            log.error("onos %s item=%d %s error=%s (retried every %.0fs until a newer row "
                      "supersedes it or it is dead-lettered)", what, item.id, ctx, detail,
                      self.max_backoff)
        else:
            self._rejected_quiet += 1
            log.debug("onos %s again item=%d %s rejections=%d error=%s", what, item.id,
                      ctx, rejections, detail)
            if now - self._reject_summary_at >= _REJECT_LOG_EVERY:
                log.warning("onos sync rows still rejected count=%d in_last=%.0fs "
                            "(ipctl sync status)", self._rejected_quiet,
                            now - self._reject_summary_at)
                self._reject_summary_at = now
                self._rejected_quiet = 0
        self._supersede_at = float("-inf")   # a newer row may be waiting behind it already
        return "blocked"

    def _retry(self, item_id: int, error: str, at: float, failed: bool, *,
               rejected: bool = False) -> bool:
        if not self.store.retry_later(item_id, error, at, failed, self._token,
                                      rejected=rejected):
            return False
        self._note_due(at)
        return True

    def _note_due(self, at: float) -> None:
        if len(self._due) < 10_000:  # beyond that, idle_wait polling is good enough
            heapq.heappush(self._due, at)

    def _mark_unsettled(self, key: tuple[str, str], now: float) -> None:
        if self.settle > 0:
            self._unsettled[key] = max(self._unsettled.get(key, 0.0), now + self.settle)

    def _forget_settled(self, now: float) -> None:
        for key in [k for k, until in self._unsettled.items() if until <= now]:
            del self._unsettled[key]

    def _note_error(self, text: str) -> None:
        self._last_error = text[:2000]
        self._last_error_at = self.clock()

    def _hook(self, outcome: str, item: OutboxItem | None, err: OnosError | None) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(outcome, item, err)
        except Exception:  # metrics must never break the sync
            log.exception("onos sync on_result hook failed outcome=%s", outcome)


def _auth_text(e: OnosAuthError) -> str:
    """What an operator reads in `ipctl sync status`: which of the two settings is wrong."""
    if e.status == 403:
        return ("authorization failed (HTTP 403): the configured ONOS user lacks the admin "
                "role needed for writes")
    return ("authentication failed (HTTP 401): ONOS refused the configured credentials "
            "(check --onos-user and --onos-password-file)")
