"""Batched teardown of deleted pods' veth pairs (DESIGN.md "DEL walks back"; STYLE.md 17).

DEL dooms its pair and waits until the kernel has unregistered both its ends: a group
commit of deletions whose waiters are let go by the kernel's notifications, not by the
request's return. When DEL returns the interface and its addresses are gone (the CNI spec's
promise: a runtime may ADD the same ifname into the same netns next), yet concurrent DELs
share the kernel's cost, and none waits out the RCU barrier the kernel does after its work.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import errors as ce
from .netlink.plan import VethEnds
from .seams import VethReaper

log = logging.getLogger(__name__)

RETRY_STUCK_SECONDS = 1.0  # before retrying pairs the kernel refused to delete
SENDERS = 4  # group deletes in flight at once (each holds its thread ~15 ms: see below)


@dataclass(eq=False)
class _Pair:
    """A doomed pair until it is gone."""

    name: str                  # host end
    ends: VethEnds
    owners: set[str] = field(default_factory=set)  # container ids waiting for it
    host_gone: bool = False    # its host end's RTM_DELLINK was read
    sent: bool = False         # a group delete carrying it is in flight
    retry_at: float = 0.0      # not before (the kernel refused it once)
    doomed_at: float = field(default_factory=time.perf_counter)


class Teardown:
    """Veth pairs of deleted pods, removed in batches; each DEL waits for its own pair.

    DEL moves the pod's host end into the doomed link group (cheap) and waits; a sender
    thread deletes the whole group in one request, so the kernel's RCU grace periods
    (~16 ms per pair) are paid once per batch. Group commit, not deferral: an idle sender
    starts at once, and DELs that arrive while every sender is in flight go together in the
    next free one's request.

    Why several senders, and why a DEL does not wait for the request: the kernel unlists
    both ends, runs their NETDEV_UNREGISTER (addresses, routes) and sends an RTM_DELLINK for
    each ~1 ms into the request, host end first (veth_dellink queues it before its peer),
    then lets go of the RTNL and spends the other ~15 ms in an RCU barrier before it
    answers. So a pair is gone once the netlink layer's monitor reported its host end and,
    after that, its pod end (by the ids `doom_host_end` read: the order on one socket is the
    order the kernel sent them, so a stale report of an earlier pod end with the same nsid
    and ifindex, sent before this pair's host end went, never counts); meanwhile the next
    request goes out on another sender. The request's answer still decides when no reports
    came: success (or an empty group) means every pair it carried is gone; a refusal
    deletes them one by one, and any that cannot be deleted keep their waiters waiting
    (then "try again later") and are retried a second later. When the monitor lost reports
    (socket overrun), the kernel is asked which doomed links are still there.
    Whoever needs a doomed name again (a bound port's host name) waits the same way."""

    def __init__(self, netlink: VethReaper, senders: int = SENDERS) -> None:
        self.netlink = netlink
        self._senders = senders
        self._cv = threading.Condition()
        self._pairs: dict[str, _Pair] = {}                        # host end -> pair
        self._by_host: dict[int, _Pair] = {}                      # host ifindex -> pair
        self._by_pod: dict[tuple[int | None, int], _Pair] = {}    # (nsid, ifindex) -> pair
        self._owners: dict[str, set[str]] = {}   # container id -> its pairs and jobs left
        self._jobs: list[tuple[str, str, Callable[[], object]]] = []  # found only in a netns
        self._tokens = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._stopped = False
        self._checking = False
        self._recheck = False
        self.finished: Counter[str] = Counter()  # how pairs were found gone (bench, tests)
        netlink.watch_unregistered(self._unregistered, self._overrun)

    # ------------------------------------------------------------------------ DEL's side
    def start(self, container_id: str, names: list[str], netns: str | None,
              ifname: str) -> bool:
        """Doom the pod's host ends (or, with none known, queue a delete from inside its
        netns) and wake a sender; False when there was nothing to remove, so nobody needs
        to wait. The request goes out at once: it overlaps whatever the caller does before
        `wait_for`."""
        doomed = [(name, ends) for name in names
                  if (ends := self.netlink.doom_host_end(name)) is not None]
        inside = not names and bool(netns)
        if not (doomed or inside):
            return False
        with self._cv:
            if self._stopped:
                raise ce.TryAgainLater("the agent is shutting down")
            left = self._owners.setdefault(container_id, set())
            if inside:
                token = f"\0inside-{next(self._tokens)}"
                left.add(token)
                self._jobs.append((container_id, token, lambda: self._quiet_delete(
                    "", netns, ifname, container_id)))
            for name, ends in doomed:
                self._track(name, ends).owners.add(container_id)
                left.add(name)
            self._wake_sender()
        return True

    def _track(self, name: str, ends: VethEnds) -> _Pair:
        pair = self._pairs.get(name)
        if pair is not None and pair.ends == ends:
            return pair               # doomed again (a retried DEL): same pair, same wait
        new = _Pair(name, ends)
        if pair is not None:          # another link by that name: the old one went unseen
            new.owners = pair.owners
            self._forget(pair)
        self._pairs[name] = new
        self._by_host[ends.host_index] = new
        if ends.pod_index:
            self._by_pod[(ends.pod_nsid, ends.pod_index)] = new
        return new

    def _forget(self, pair: _Pair) -> None:
        del self._pairs[pair.name]
        if self._by_host.get(pair.ends.host_index) is pair:
            del self._by_host[pair.ends.host_index]
        key = (pair.ends.pod_nsid, pair.ends.pod_index)
        if self._by_pod.get(key) is pair:
            del self._by_pod[key]

    def _done(self, pair: _Pair, how: str) -> None:
        """`pair` is gone: let its waiters go (under the lock)."""
        if self._pairs.get(pair.name) is not pair:
            return
        self._forget(pair)
        for owner in pair.owners:
            self._release(owner, pair.name)
        self.finished[how] += 1
        log.debug("veth pair gone host_ifname=%s by=%s ms=%.2f", pair.name, how,
                  (time.perf_counter() - pair.doomed_at) * 1e3)
        self._cv.notify_all()

    def _release(self, owner: str, item: str) -> None:
        left = self._owners.get(owner)
        if left is not None:
            left.discard(item)
            if not left:
                del self._owners[owner]

    def _busy(self, key: str) -> bool:
        return key in self._pairs or key in self._owners

    def wait_for(self, key: str, timeout: float = 30.0) -> None:
        """Return once `key`'s pairs (a container id's, or the one of that host name) are
        gone."""
        with self._cv:
            if not self._cv.wait_for(lambda: not self._busy(key), timeout):
                raise ce.TryAgainLater(f"the previous veth pair of {key} is still being "
                                       f"removed after {timeout:.0f} s")

    def drain(self, timeout: float = 30.0) -> None:
        with self._cv:
            keys = set(self._pairs) | set(self._owners)
            if not self._cv.wait_for(lambda: not any(self._busy(k) for k in keys), timeout):
                raise TimeoutError(f"veth teardown did not finish in {timeout} s")

    def stop(self) -> None:
        """After `drain`: the senders finish what is due, then exit."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    # ------------------------------------------------------------------ the kernel's side
    def _unregistered(self, nsid: int | None, indexes: list[int]) -> None:
        """The monitor read RTM_DELLINK notifications (see the class docstring)."""
        with self._cv:
            for index in indexes:
                pair = self._by_host.get(index) if nsid is None else None
                if pair is not None:
                    pair.host_gone = True
                    if not pair.ends.pod_index:
                        self._done(pair, "notified")
                    continue
                pair = self._by_pod.get((nsid, index))
                if pair is not None and pair.host_gone:
                    self._done(pair, "notified")

    def _overrun(self) -> None:
        """Reports were lost: ask the kernel, on a thread of its own (the monitor must go
        on reading), which doomed links are gone."""
        with self._cv:
            self._recheck = True
            if self._checking:
                return
            self._checking = True
        threading.Thread(target=self._check, name="veth-recheck", daemon=True).start()

    def _check(self) -> None:
        while True:
            with self._cv:
                if not self._recheck:
                    self._checking = False
                    return
                self._recheck = False
                pairs = list(self._pairs.values())
            try:
                gone = self.netlink.links_gone([p.ends.host_index for p in pairs])
            except Exception as exc:  # noqa: BLE001 - the requests' answers still decide
                log.error("rechecking %d doomed veth pairs failed: %s", len(pairs), exc)
                gone = set()
            with self._cv:
                for pair in pairs:
                    if pair.ends.host_index in gone:
                        self._done(pair, "rechecked")

    # ------------------------------------------------------------------------ the senders
    def _wake_sender(self) -> None:
        if self._idle == 0 and len(self._threads) < self._senders:
            thread = threading.Thread(target=self._loop, name="veth-reaper", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._cv.notify_all()

    def _take(self) -> tuple[list[_Pair], list[tuple[str, str, Callable[[], object]]]]:
        now = time.monotonic()
        due = [p for p in self._pairs.values() if not p.sent and p.retry_at <= now]
        for pair in due:
            pair.sent = True
        jobs, self._jobs = self._jobs, []
        return due, jobs

    def _next_retry(self) -> float | None:
        waits = [p.retry_at for p in self._pairs.values() if not p.sent and p.retry_at]
        return max(0.0, min(waits) - time.monotonic()) if waits else None

    def _loop(self) -> None:
        while True:
            with self._cv:
                batch, jobs = self._take()
                while not (batch or jobs):
                    if self._stopped:
                        self._threads.remove(threading.current_thread())
                        return
                    self._idle += 1
                    try:
                        self._cv.wait(self._next_retry())
                    finally:
                        self._idle -= 1
                    batch, jobs = self._take()
            if batch:
                self._reap(batch)
            for owner, token, job in jobs:
                job()
                with self._cv:
                    self._release(owner, token)
                    self._cv.notify_all()

    def _reap(self, batch: list[_Pair]) -> None:
        try:
            self.netlink.reap_doomed()
        except Exception as exc:  # noqa: BLE001 - fall back to one by one
            log.error("batched veth teardown failed, deleting %d pairs one by one: %s",
                      len(batch), exc)
        else:
            with self._cv:
                for pair in batch:
                    self._done(pair, "answered")
            return
        for pair in batch:
            with self._cv:
                if self._pairs.get(pair.name) is not pair:
                    continue          # reported gone meanwhile
            ok = self._quiet_delete(pair.name, None, None, "")
            with self._cv:
                if ok:
                    self._done(pair, "one by one")
                elif self._pairs.get(pair.name) is pair:
                    pair.sent = False
                    pair.retry_at = time.monotonic() + RETRY_STUCK_SECONDS

    def _quiet_delete(self, name: str, netns: str | None, ifname: str | None,
                      container_id: str) -> bool:
        try:
            self.netlink.delete_pod_interface(name, netns, ifname)
            return True
        except Exception as exc:  # noqa: BLE001 - logged; the netns removal destroys the pair
            log.error("veth teardown failed container=%s name=%s: %s", container_id[:12],
                      name, exc)
            return False


__all__ = ["RETRY_STUCK_SECONDS", "SENDERS", "Teardown"]
