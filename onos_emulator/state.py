"""The emulated ONOS store: networks, subnets and ports, and what ONOS does with them.

It survives server stop/start as ONOS's distributed store does, counts every call (by
collection and status, by object, by user) so tests can see what reached ONOS, and holds
the injected faults. All of it under one lock: the server answers on many threads.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .contract import HttpError, java_string, validate
from .faults import Faults


@dataclass
class EmulatorState:
    """The emulated ONOS store; survives server stop/start like ONOS's distributed store."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    subnets: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    by_object: Counter[str] = field(default_factory=Counter)
    # user -> {"calls", "first", "last"} (wall clock): which replica talked to ONOS, and when
    by_user: dict[str, dict[str, float]] = field(default_factory=dict)
    total: int = 0
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def table(self, coll: str) -> dict[str, dict[str, Any]]:
        return {"networks": self.networks, "subnets": self.subnets, "ports": self.ports}[coll]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps({"networks": self.networks, "subnets": self.subnets,
                                          "ports": self.ports}))

    def call_stats(self) -> dict[str, Any]:
        with self.lock:
            return {"total": self.total, "counts": dict(self.calls),
                    "by_object": dict(self.by_object),
                    "by_user": {u: dict(v) for u, v in self.by_user.items()}}

    def reset(self) -> None:
        with self.lock:
            self.networks.clear()
            self.subnets.clear()
            self.ports.clear()
            self.calls.clear()
            self.by_object.clear()
            self.by_user.clear()
            self.total = 0
            self.faults = Faults()

    def set_faults(self, spec: dict[str, Any]) -> Faults:
        f = Faults.from_spec(spec)
        with self.lock:
            self.faults = f
            self.rng = random.Random(f.seed)
        return f

    def draw_fault(self) -> tuple[str, float]:
        with self.lock:
            return self.faults.draw(self.rng)

    def count(self, method: str, coll: str, status: int | str, obj: str | None,
              user: str | None = None) -> None:
        with self.lock:
            if user is not None:
                now = time.time()
                u = self.by_user.setdefault(user, {"calls": 0, "first": now, "last": now})
                u["calls"] += 1
                u["last"] = now
            self.total += 1
            self.calls[f"{method} {coll} {status}"] += 1
            if obj is not None:
                self.by_object[f"{method} {coll}/{obj}"] += 1

    # -------------------------------------------------------------- ONOS semantics
    def create(self, kind: str, body: dict[str, Any]) -> str:
        """POST: the object must be new."""
        return self._store(kind, body, exists=False)

    def update(self, kind: str, body: dict[str, Any]) -> str:
        """PUT: the object must exist (ONOS takes the id from the body, not the path)."""
        return self._store(kind, body, exists=True)

    def _store(self, kind: str, body: dict[str, Any], *, exists: bool) -> str:
        obj_id = validate(kind, body)
        with self.lock:
            table = self.table(kind + "s")
            if (obj_id in table) != exists:
                # Networks name the *name* in the duplicate and not-found messages
                # (DistributedOpenstackNetworkStore); Java renders a null name as "null".
                who = java_string(body.get("name")) if kind == "network" else obj_id
                what = "does not exist" if exists else "already exists"
                raise HttpError(400, f"{who if who is not None else 'null'} {what}")
            table[obj_id] = body
        return obj_id

    def delete(self, kind: str, obj_id: str) -> None:
        with self.lock:
            if kind == "network":
                # isNetworkInUse: >=1 subnet AND >=1 port naming this network. The real text
                # has two spaces: String.format("OpenStack network %s %s", id, " still in use").
                has_subnet = any(java_string(s.get("network_id")) == obj_id
                                 for s in self.subnets.values())
                has_port = any(java_string(p.get("network_id")) == obj_id
                               for p in self.ports.values())
                if has_subnet and has_port:
                    raise HttpError(409, f"OpenStack network {obj_id}  still in use")
            self.table(kind + "s").pop(obj_id, None)
