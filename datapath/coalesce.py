"""When the datapath applies a topology change to OVS: at once after a quiet spell, else
together with whatever else arrives in the same short window (pure: the caller passes
the clock).

Why: every apply is an ``ovs-ofctl`` exec and a vswitchd flow-mod bundle (a few ms of CPU
in the agent and in vswitchd), and the controller now pushes each pod's port to the
agent within a millisecond or two of its allocation, while that pod's own ADD is still
attaching it to OVS. Applying per change put one exec and one vswitchd pass into every
ADD; a burst of ADDs paid one per pod. Applying at most once per ``window`` gives a burst
one apply per window, however many pods it holds, and a lone change still goes at once,
except one to this node's own ports (``hold``): it comes from this agent's ADD, which is
attaching the port right then (the port's unicast flow needs the ofport the attach gives
it), so it waits for the window's end and goes in whole, after the attach.

What it costs: a change that arrives within ``window`` of the previous apply (or a held
one) reaches the switch up to ``window`` later, never more: the apply is due ``window``
after the last one (or after the held change), and more changes do not push it back.
Nothing waits on these flows: br-int keeps NORMAL, so a pod forwards by MAC learning
before its flows exist (:mod:`datapath.model`); the flows add the ARP answers and pin
MACs that moved hosts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ApplyWindow:
    """Throttle with a leading and a trailing edge. ``window`` 0 applies every change."""

    window: float
    last: float | None = None     # when the last apply went out (the caller's clock)
    due_at: float | None = None   # when the held changes go; None: nothing held

    def offer(self, now: float, *, hold: bool = False) -> bool:
        """A change arrived at ``now``: True when what is held is to be applied now (the
        caller then applies it and calls :meth:`applied`), False when it waits for the
        window's end. ``hold``: the change may wait a whole window even after a quiet
        spell (a port of this node, whose own ADD is attaching it right now). Either
        way no change waits longer than ``window``, however many follow it."""
        if hold:
            due = now + self.window
        elif self.last is None or now - self.last >= self.window:
            due = now
        else:
            due = self.last + self.window
        self.due_at = due if self.due_at is None else min(self.due_at, due)
        return self.due_at <= now

    def due_in(self, now: float) -> float | None:
        """Seconds until the held changes are due (0 when due); None when none are held."""
        if self.due_at is None:
            return None
        return max(0.0, self.due_at - now)

    def applied(self, now: float) -> None:
        """Everything offered so far is in OVS (or will be replaced whole after a failure)."""
        self.last = now
        self.due_at = None
