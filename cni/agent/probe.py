"""`python -m cni.agent.probe live|ready`: the agent's Kubernetes probes, through its socket.

They ask the agent what a runtime would, so they mean what a runtime sees:
- live: the socket accepts and a worker answers VERSION (a wedged pool fails it; a controller
  outage does not, so kubelet does not restart a healthy agent for someone else's fault);
- ready: CNI STATUS answers 0, i.e. the agent, OVSDB and the controller are usable for ADD.
Exit 0 when healthy, 1 with the reason on stderr otherwise.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys

from . import wire

PROBE_CONF = {"cniVersion": "1.1.0", "name": "ecnet-probe", "type": "ecnet"}


def ask(path: str, command: str, timeout: float) -> tuple[int, str]:
    """One request as the shim sends it; (exit code, stdout)."""
    request = wire.encode_request({"CNI_COMMAND": command},
                                  json.dumps(PROBE_CONF).encode())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\n")
    return int(head), body.decode("utf-8", "replace")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecnet-agent-probe", description=__doc__)
    p.add_argument("check", choices=("live", "ready"))
    p.add_argument("--socket", default="/run/ecnet/agent.sock")
    p.add_argument("--timeout", type=float, default=5.0)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    command = "VERSION" if a.check == "live" else "STATUS"
    try:
        code, out = ask(a.socket, command, a.timeout)
    except (OSError, ValueError) as exc:
        print(f"agent socket {a.socket}: {exc}", file=sys.stderr)
        return 1
    if code != 0:
        try:
            reason = json.loads(out).get("msg", out)
        except ValueError:
            reason = out
        print(f"{command}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
