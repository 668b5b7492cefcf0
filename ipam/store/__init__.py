"""Stores behind the IPAM: a protocol, an in-memory implementation and the SQL one."""
from .base import Store, UnitOfWork

__all__ = ["Store", "UnitOfWork", "open_store"]


def open_store(url: str, pool_size: int = 8) -> Store:
    """`memory://` for tests and demos, any SQLAlchemy URL otherwise (`pool_size`: pooled
    PostgreSQL connections kept open, as many again allowed on top)."""
    if url.startswith("memory:"):
        from .memory import MemoryStore
        return MemoryStore()
    from .sql import SqlStore
    return SqlStore(url, pool_size=pool_size)
