"""One exception hierarchy for everything that can go wrong talking to ONOS.

The sync worker decides what to do with a failed call from the class alone: retry soon
(`OnosUnavailable`), retry slowly and alarm (`OnosAuthError`), or stop retrying as-is because
the payload itself is wrong (`OnosRejected`). Messages never carry credentials.
"""
from __future__ import annotations


class OnosError(Exception):
    """Root of every ONOS failure; `retryable` tells the worker whether repeating can help."""

    retryable: bool = True

    def __init__(self, message: str, *, status: int | None = None,
                 method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.method = method
        self.path = path

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        code = f" status={self.status}" if self.status is not None else ""
        return f"{self.message}{code}" + (f" ({where})" if where else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, " \
               f"method={self.method!r}, path={self.path!r})"


class OnosUnavailable(OnosError):
    """ONOS is down, slow or crashing (refused/reset connection, timeout, 5xx): retry later.

    `ambiguous` is set when the request may have reached ONOS without us seeing the answer
    (a read timeout, a connection dropped after sending): ONOS may still apply it later, so
    the object's next call must wait for it to settle or it could be overtaken (a late POST
    landing after the port's DELETE would leave a port nobody can remove)."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "",
                 path: str = "", ambiguous: bool = False) -> None:
        super().__init__(message, status=status, method=method, path=path)
        self.ambiguous = ambiguous


class OnosAuthError(OnosError):
    """401/403: the credentials or the user's role are wrong, which only an operator can fix.

    Still retried (slowly), because fixing the configuration must not require replaying the
    outbox by hand.
    """


class OnosRejected(OnosError):
    """A 4xx other than "already exists": ONOS refuses this payload, so repeating it as-is is
    pointless. A network DELETE refused with 409 "still in use" is the one benign case
    (`in_use`): the network's ports are not gone yet."""

    retryable = False

    @property
    def in_use(self) -> bool:
        return self.status == 409 and "still in use" in self.message
