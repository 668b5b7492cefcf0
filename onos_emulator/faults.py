"""Injected failures: what a test asks ONOS to do wrong, and the draw for each request.

Kept apart from the store so the failure model (which modes exist, how a spec is checked,
how a request draws one) can change without touching ONOS's semantics.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

FAULT_MODES = ("none", "error500", "slow", "unauthorized", "reset")


@dataclass
class Faults:
    modes: tuple[str, ...] = ()
    rate: float = 1.0
    delay: float = 0.0
    seed: int | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Faults:
        """The faults a `/_emulator/faults` body or `set_faults` call asks for; ValueError
        (or TypeError) names what is wrong with it."""
        mode = spec.get("mode", "none")
        modes = tuple(mode) if isinstance(mode, list) else (str(mode),)
        if any(m not in FAULT_MODES for m in modes):
            raise ValueError(f"mode must be one of {FAULT_MODES} or a list of them")
        modes = tuple(m for m in modes if m != "none")
        rate = float(spec.get("rate", 1.0))
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within 0..1")
        seed = spec.get("seed")
        return cls(modes, rate, float(spec.get("delay", 0.0)),
                   int(seed) if seed is not None else None)

    def draw(self, rng: random.Random) -> tuple[str, float]:
        """The fault one request gets ("none" most of the time), and the delay for "slow"."""
        if not self.modes or rng.random() >= self.rate:
            return "none", 0.0
        return (self.modes[0] if len(self.modes) == 1 else rng.choice(self.modes)), self.delay

    def as_dict(self) -> dict[str, Any]:
        return {"mode": list(self.modes) or "none", "rate": self.rate, "delay": self.delay,
                "seed": self.seed}
