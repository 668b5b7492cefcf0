"""Batched teardown of deleted pods' veth pairs (DESIGN.md "DEL walks back"; STYLE.md 17).

DEL dooms its pair and waits for the reaper, which deletes every doomed pair in one netlink
request: a group commit. When DEL returns the interface is gone (the CNI spec's promise: a
runtime may ADD the same ifname into the same netns next), yet concurrent DELs share the
kernel's cost.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import errors as ce
from .seams import VethReaper

log = logging.getLogger(__name__)

RETRY_STUCK_SECONDS = 1.0  # before retrying pairs the kernel refused to delete


class Teardown:
    """Veth pairs of deleted pods, removed in batches that their DELs wait for.

    DEL moves the pod's host end into the doomed link group (cheap) and waits; one reaper
    thread deletes the whole group in one request, so the kernel's RCU grace periods
    (~16 ms per pair) are paid once per batch, on a netlink socket of its own. Group commit,
    not deferral: an idle reaper starts at once for the first waiter, and DELs that arrive
    while a batch is in flight go together in the next one, which starts as soon as it ends.
    Whoever needs a doomed name again (a bound port's host name) waits the same way. If a
    batch fails, its pairs are deleted one by one before anyone waiting is let go."""

    def __init__(self, netlink: VethReaper) -> None:
        self.netlink = netlink
        self._cv = threading.Condition()
        self._pending: dict[str, int] = {}       # key -> the reap cycle that covers it
        self._owners: dict[str, str] = {}        # doomed host end -> its container id
        self._extra: list[Callable[[], object]] = []  # pairs found only inside a pod netns
        self._started = 0                         # last cycle begun
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self, container_id: str, names: list[str], netns: str | None,
              ifname: str) -> bool:
        """Doom the pod's host ends (or, with none known, queue a delete from inside its
        netns) and wake the reaper; False when there was nothing to remove, so nobody needs
        to wait. The reaper starts at once: its netlink request overlaps whatever the
        caller does before `wait_for`."""
        doomed = [name for name in names if self.netlink.doom_host_end(name)]
        inside = not names and bool(netns)
        if not (doomed or inside):
            return False
        with self._cv:
            if self._stopped:
                raise ce.TryAgainLater("the agent is shutting down")
            if inside:
                self._extra.append(lambda: self._quiet_delete("", netns, ifname,
                                                              container_id))
            cycle = self._started + 1
            for key in (container_id, *doomed):
                self._pending[key] = cycle
            for name in doomed:
                self._owners[name] = container_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="veth-reaper",
                                                daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return True

    def _quiet_delete(self, name: str, netns: str | None, ifname: str | None,
                      container_id: str) -> bool:
        try:
            self.netlink.delete_pod_interface(name, netns, ifname)
            return True
        except Exception as exc:  # noqa: BLE001 - logged; the netns removal destroys the pair
            log.error("veth teardown failed container=%s name=%s: %s", container_id[:12],
                      name, exc)
            return False

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopped:
                    self._cv.wait()
                if self._stopped and not self._pending:
                    return
                # No window: whoever doomed a pair is waiting for it. Pairs doomed while
                # this batch is in flight make the next one.
                self._started += 1
                cycle = self._started
                extra, self._extra = self._extra, []
                names = [n for n in self._owners if self._pending.get(n, cycle) <= cycle]
            stuck: list[str] = []
            try:
                self.netlink.reap_doomed()
            except Exception as exc:  # noqa: BLE001 - fall back to one by one
                log.error("batched veth teardown failed, deleting %d pairs one by one: %s",
                          len(names), exc)
                stuck = [n for n in names if not self._quiet_delete(n, None, None, "")]
            for job in extra:
                job()
            with self._cv:
                # A pair that could not be deleted stays pending (its waiters keep waiting,
                # then get "try again later") and is tried again a second later.
                for name in stuck:
                    self._pending[name] = self._pending[self._owners[name]] = cycle + 1
                for key in [k for k, c in self._pending.items() if c <= cycle]:
                    del self._pending[key]
                for name in [n for n in self._owners if n not in self._pending]:
                    del self._owners[name]
                self._cv.notify_all()
                if stuck and not self._stopped:
                    self._cv.wait(RETRY_STUCK_SECONDS)

    def wait_for(self, key: str, timeout: float = 30.0) -> None:
        """Return once `key`'s pair is gone."""
        with self._cv:
            if key not in self._pending:
                return
            if not self._cv.wait_for(lambda: key not in self._pending, timeout):
                raise ce.TryAgainLater(f"the previous veth pair of {key} is still being "
                                       f"removed after {timeout:.0f} s")

    def drain(self, timeout: float = 30.0) -> None:
        with self._cv:
            keys = set(self._pending)
            if not keys:
                return
            if not self._cv.wait_for(lambda: not keys & self._pending.keys(), timeout):
                raise TimeoutError(f"veth teardown did not finish in {timeout} s")

    def stop(self) -> None:
        """After `drain`: the reaper finishes what is pending, then exits."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()


__all__ = ["RETRY_STUCK_SECONDS", "Teardown"]
