"""The shim<->agent wire format (see cni.shim): parsing and answering, pure."""
from __future__ import annotations

from ..errors import DecodeFailure

MAGIC = b"ECNET1 "
MAX_REQUEST = 4 << 20


def parse(data: bytes) -> tuple[dict[str, str], str]:
    """Split a request into the CNI environment and the network config text."""
    if not data.startswith(MAGIC):
        raise DecodeFailure("request from the ecnet shim is malformed (bad header)")
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise DecodeFailure("request from the ecnet shim is malformed (no header end)")
    try:
        env_len = int(head[len(MAGIC):])
    except ValueError:
        raise DecodeFailure("request from the ecnet shim is malformed (bad length)") from None
    if env_len < 0 or env_len > len(rest):
        raise DecodeFailure("request from the ecnet shim is truncated")
    env: dict[str, str] = {}
    for item in rest[:env_len].split(b"\0"):
        if item:
            k, _, v = item.decode("utf-8", "surrogateescape").partition("=")
            env[k] = v
    return env, rest[env_len:].decode("utf-8", "replace")


def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    """What the shim sends; used by tests and tools that talk to the agent directly."""
    blob = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    return MAGIC + str(len(blob)).encode() + b"\n" + blob + stdin


def answer(exit_code: int, stdout: str) -> bytes:
    return f"{exit_code}\n".encode() + stdout.encode()
