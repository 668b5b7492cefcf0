"""`ecnet`: the CNI binary kubelet execs; a thin forwarder to the node agent.

Start-up is most of an ADD's latency (DESIGN.md: ~250 ms to import grpc+pyroute2, 8 ms for a
bare interpreter), so this module imports nothing but `_socket`, `os` and `sys` (already loaded
at start-up): no json, no socket (it pulls in enum), no re. It answers VERSION itself, forwards
everything else verbatim (environment + stdin) and relays the agent's answer. When the agent
cannot be reached it prints CNI error 11 ("try again later"), or 6 when stdin is not JSON at
all: a broken config never gets better on retry, and asking costs nothing on the hot path. It
never prints a traceback. packaging/shim/ecnet.c is the same pipe as a static binary (no Python
on the host, ~0.5 ms to start); tests/unit/test_shim.py holds both to the same answers.

Wire format to the agent (unix stream socket), chosen so neither side needs a JSON encoder
here: b"ECNET1 <env-bytes-len>\\n" + env ("KEY=VALUE\\0" for each CNI_* variable) + stdin bytes,
then half-close. Answer: b"<exit-code>\\n" + bytes for stdout.
"""
import _socket
import os
import sys

SUPPORTED = '["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]'
DEFAULT_SOCKET = "/run/ecnet/agent.sock"
TIMEOUT = 180.0  # below kubelet's 4-minute runtime request timeout
_WS = " \t\n\r\f\v"  # C's isspace(), so both shims read a field alike


def _string_field(data: str, key: str) -> str:
    """Value of a top-level string field, read without a JSON parser (paths and versions have
    no escapes; anything odd falls back to the default)."""
    i = data.find('"' + key + '"')
    if i < 0:
        return ""
    j = data.find(":", i + len(key) + 2)
    if j < 0:
        return ""
    k = data.find('"', j)
    end = data.find('"', k + 1)
    if k < 0 or end < 0 or data[j + 1:k].strip(_WS):
        return ""
    value = data[k + 1:end]
    return "" if "\\" in value else value


def _error(version: str, code: int, msg: str, details: str = "") -> str:
    safe = details.replace("\\", "\\\\").replace('"', "'").replace("\n", " ")
    return ('{"cniVersion":"%s","code":%d,"msg":"%s","details":"%s"}'
            % (version, code, msg, safe))


def _version(conf: str) -> str:
    v = _string_field(conf, "cniVersion")
    return v if v.strip(".") and not v.strip("0123456789.") else "1.0.0"


def _is_json(raw: bytes) -> bool:
    """Asked only when the agent cannot be reached, so the import costs the hot path nothing."""
    import json
    def refuse(name: str) -> object:
        raise ValueError(name)  # NaN/Infinity are not JSON (RFC 8259)
    try:
        json.loads(raw.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    return True


def _timeout() -> float:
    """ECNET_SHIM_TIMEOUT (seconds) lets a test or an impatient runtime bound the wait."""
    try:
        t = float(os.environ.get("ECNET_SHIM_TIMEOUT", "") or TIMEOUT)
    except ValueError:
        return TIMEOUT
    return t if 0 < t < 1e6 else TIMEOUT


def _unreachable(raw: bytes, version: str, path: str, exc: OSError) -> int:
    if not _is_json(raw):
        sys.stdout.write(_error(version, 6, "failed to decode content",
                                "network config is not JSON") + "\n")
    else:
        sys.stdout.write(_error(version, 11, "ecnet agent unreachable, try again later",
                                "%s: %s" % (path, exc.strerror or exc)) + "\n")
    return 1


def main() -> int:
    raw = sys.stdin.buffer.read()
    conf = raw.decode("utf-8", "replace")
    version = _version(conf)
    command = os.environ.get("CNI_COMMAND", "")
    out = sys.stdout
    if command == "VERSION":
        out.write('{"cniVersion":"%s","supportedVersions":%s}\n' % (version, SUPPORTED))
        return 0
    path = _string_field(conf, "agentSocket") or os.environ.get("ECNET_AGENT_SOCKET",
                                                                 DEFAULT_SOCKET)
    env = b"".join((k + "=" + v).encode("utf-8", "surrogateescape") + b"\0"
                   for k, v in os.environ.items() if k.startswith("CNI_"))
    request = b"ECNET1 %d\n" % len(env) + env + raw
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(_timeout())
    chunks = []
    try:
        sock.connect(path)
        try:
            sock.sendall(request)
            sock.shutdown(_socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent refused the rest (a request too large): its answer is queued
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # the agent hung up: whatever came before is all there is
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        return _unreachable(raw, version, path, exc)
    finally:
        sock.close()
    answer = b"".join(chunks)
    head, sep, body = answer.partition(b"\n")
    head = head.strip()
    if not sep or not head.isdigit() or len(head) > 3:
        out.write(_error(version, 11, "ecnet agent gave no answer, try again later",
                         "%d bytes from %s" % (len(answer), path)) + "\n")
        return 1
    out.flush()
    sys.stdout.buffer.write(body)
    return int(head)


if __name__ == "__main__":
    sys.exit(main())
