"""An ONOS emulator for the openstacknetworking REST API, faithful to shared/onos-contract.md.

Real ONOS offers no read-back, so tests need a stand-in that answers exactly as ONOS does
(status codes, message texts, Location, auth) and lets them look inside (`/_emulator/...`).
It must be no stricter and no looser than ONOS: a test that passes here must not fail
against the real thing because the emulator accepted or refused something ONOS would not.

A test and lab tool, not part of the product: no product package imports it, and it imports
nothing of ours (import-linter checks both). Modules, one job each:

- `contract`: what ONOS answers and accepts: paths, message texts, openstack4j's body rules;
- `state`: the emulated ONOS store and its semantics (duplicates, in-use network, counting);
- `faults`: injected failures (500s, slowness, 401s, connection resets);
- `server`: Jetty + Jersey's order of checks over HTTP, and `EmulatorServer` to run it;
- `cli`: the `ecnet-onos-emulator` console script (also `python -m onos_emulator`).

The k8snetworking tree (contract section 8) is not emulated.
"""
from .contract import HttpError, java_string
from .faults import FAULT_MODES, Faults
from .server import Credentials, EmulatorServer
from .state import EmulatorState

__all__ = ["FAULT_MODES", "Credentials", "EmulatorServer", "EmulatorState", "Faults",
           "HttpError", "java_string"]
