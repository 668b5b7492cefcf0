"""Stores behind the IPAM: a protocol, an in-memory implementation and the SQL one."""
from .base import Store, UnitOfWork

__all__ = ["Store", "UnitOfWork", "open_store"]


def open_store(url: str) -> Store:
    """`memory://` for tests and demos, any SQLAlchemy URL otherwise."""
    if url.startswith("memory:"):
        from .memory import MemoryStore
        return MemoryStore()
    from .sql import SqlStore
    return SqlStore(url)
