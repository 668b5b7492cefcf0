"""`ecnet-onos-emulator`: the emulator as a process, for labs and for tests that need one."""
from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ecnet-onos-emulator",
                                description="Emulate ONOS's openstacknetworking REST API.")
    p.add_argument("--listen", default="127.0.0.1:8181", help="host:port (default %(default)s)")
    p.add_argument("--user", default="onos")
    p.add_argument("--password", default="rocks")
    p.add_argument("--viewer-user", default=None, help="a user with the viewer role only")
    p.add_argument("--viewer-password", default=None)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        p.error("--listen must be host:port")
    if (args.viewer_user is None) != (args.viewer_password is None):
        p.error("--viewer-user and --viewer-password go together")
    srv = EmulatorServer(host.strip("[]"), int(port), user=args.user, password=args.password,
                         viewer_user=args.viewer_user, viewer_password=args.viewer_password)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    srv.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        srv.stop()
    return 0
