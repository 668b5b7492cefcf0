"""Secrets never reach a log line: database URLs redacted, secret files checked for exposure.

Shared by the daemon (the database URL, the TLS key) and the ONOS sync (its password file).
"""
from __future__ import annotations

import logging
import os
import stat
from urllib.parse import parse_qsl, urlencode

log = logging.getLogger(__name__)

# Query parameters of a database URL that carry a secret (libpq and SQLAlchemy spellings).
SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret", "token"})
MASK = "***"


def redact_url(url: str) -> str:
    """A database URL fit for a log: the password masked, in `user:pw@` and in `?password=`."""
    base, sep, query = url.partition("?")
    if "@" in base and "://" in base:
        scheme, rest = base.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user, colon, _ = creds.partition(":")
        base = f"{scheme}://{user}{':' + MASK if colon else ''}@{host}"
    if not sep:
        return base
    pairs = parse_qsl(query, keep_blank_values=True)
    masked = [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return f"{base}?{urlencode(masked, safe='*/:')}"


def warn_if_exposed(path: str, what: str) -> bool:
    """Warn (and say True) when a secret file is open to others or to a group other than the
    daemon's own: the permissions should leave it to the daemon alone. The daemon's own group
    is allowed because that is how Kubernetes hands a secret to a non-root container (group
    fsGroup, mode 0440). A missing file is the caller's error to report, not ours."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mode = st.st_mode
    group_open = bool(mode & stat.S_IRWXG) and st.st_gid != os.getegid()
    if group_open or mode & stat.S_IRWXO:
        log.warning("%s %s is accessible to its group or others (mode %04o): chmod 0600 it",
                    what, path, stat.S_IMODE(mode))
        return True
    return False
