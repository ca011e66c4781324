"""Redis Sentinel URLs in kombu's form, read the way kombu and Celery read them.

`sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port][/db];...` lists the
Sentinels (port 26379 by default); the master's name is a setting of its own
(`REDIS_SENTINEL_MASTER`). kombu's transport and Celery's result backend take the database number
and the master's credentials from the first address only, so this parser does too, and refuses a
later address that names another database (a silent difference otherwise). No redis import here:
the settings (and so the healthcheck probes) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "sentinel://"
SENTINEL_DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    addresses: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def replicas_to_wait_for(url: str) -> int:
    """Replicas a write must reach before it counts (Redis WAIT): 1 behind Sentinel, whose failover
    must not lose it; none on a single Redis, which has no replica to wait for."""
    return 1 if is_sentinel_url(url) else 0


def _db(path: str) -> int | None:
    path = path.strip("/")
    if not path:
        return None
    if not path.isdigit():
        raise ValueError(f"the database must be a number, not {path!r}")
    return int(path)


def without_credentials(address: str) -> str:
    """`sentinel://user:secret@host:1/0` -> `sentinel://***@host:1/0`: what an error may show."""
    scheme, separator, rest = address.partition("://")
    return f"{scheme}{separator}***@{rest.rpartition('@')[2]}" if "@" in rest else address


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The Sentinels' addresses, database and master credentials; ValueError with a short reason."""
    addresses: list[tuple[str, int]] = []
    first_db: int | None = None
    username = password = None
    for index, chunk in enumerate(url.split(";")):
        if not chunk.startswith(SENTINEL_SCHEME):
            raise ValueError("every address of a Sentinel URL must start with sentinel:// (separated by ;)")
        parts = urlsplit(chunk)
        try:
            port = parts.port or SENTINEL_DEFAULT_PORT
        except ValueError:
            raise ValueError(f"bad port in {without_credentials(chunk)!r}") from None
        if not parts.hostname:
            raise ValueError(f"no host in {without_credentials(chunk)!r}")
        db = _db(parts.path)
        if index == 0:
            first_db = db
            username = unquote(parts.username) if parts.username else None
            password = unquote(parts.password) if parts.password else None
        elif db is not None and db != (first_db or 0):
            raise ValueError("the database (/N) must be the same on every address; kombu and Celery read the first")
        addresses.append((parts.hostname, port))
    return SentinelUrl(tuple(addresses), first_db or 0, username, password)
