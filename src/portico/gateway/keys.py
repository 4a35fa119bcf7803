"""Virtual keys: what a team gets instead of the organisation's provider keys.

A key is shown once at creation; only its SHA-256 is stored (keys are 256-bit random, so a fast hash is
enough and a lookup costs one dict access). Every process caches the keys it has seen; with shared state a
change is published so other workers refresh at once, and revocation is also checked against the shared set.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from portico.gateway.state import State
from portico.protocol.errors import ServiceUnavailable
from portico.storage import keys as repo
from portico.storage.db import Database

KEY_PREFIX = "pk-"
Period = Literal["day", "month", "total"]


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    key_hash: str
    prefix: str
    models: frozenset[str] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: Period | None
    created_at: float
    revoked_at: float | None
    tools: tuple[str, ...] | None = None  # tool names/globs it may call; None: read-only tools only

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> KeyRecord:
        models = r.get("models")
        return cls(
            id=r["id"], name=r["name"], key_hash=r["key_hash"], prefix=r["key_prefix"],
            models=frozenset(models) if models is not None else None, rpm=r.get("rpm"), tpm=r.get("tpm"),
            budget_usd=r.get("budget_usd"), budget_period=r.get("budget_period"), created_at=r["created_at"],
            revoked_at=r.get("revoked_at"), tools=tuple(r["tools"]) if r.get("tools") is not None else None,
        )  # fmt: skip

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "prefix": self.prefix,
            "models": sorted(self.models) if self.models is not None else None, "rpm": self.rpm, "tpm": self.tpm,
            "budget_usd": self.budget_usd, "budget_period": self.budget_period, "created_at": self.created_at,
            "revoked_at": self.revoked_at, "active": self.active,
            "tools": list(self.tools) if self.tools is not None else None,
        }  # fmt: skip


class KeyStore:
    def __init__(self, db: Database, state: State, *, shared: bool) -> None:
        self.db = db
        self.state = state
        self.shared = shared  # other processes may create/revoke keys
        self._by_hash: dict[str, KeyRecord] = {}
        self._misses: dict[str, float] = {}  # hash → time of a failed DB lookup (bounds DB load from bad keys)

    async def load(self) -> None:
        self._by_hash = {r["key_hash"]: KeyRecord.from_row(r) for r in await repo.all_keys(self.db)}
        if self.shared:
            await self.state.subscribe_key_changes(self._refresh, self._resync)

    async def _resync(self) -> None:
        """After the shared state was away: changes published meanwhile were missed, so read every key again."""
        rows = await repo.all_keys(self.db)
        self._by_hash.update({r["key_hash"]: KeyRecord.from_row(r) for r in rows})
        self._misses.clear()

    async def _refresh(self, key_hash: str) -> None:
        self._misses.pop(key_hash, None)
        row = await repo.key_by_hash(self.db, key_hash)
        if row is not None:
            self._by_hash[key_hash] = KeyRecord.from_row(row)

    async def lookup(self, token: str, *, check_revoked: bool = True) -> KeyRecord | None:
        h = hash_key(token)
        rec = self._by_hash.get(h)
        if rec is None and self.shared and time.monotonic() - self._misses.get(h, -60.0) > 5.0:
            try:
                row = await repo.key_by_hash(self.db, h)  # created by another worker since we loaded
            except Exception as e:  # the database is down: an unknown key cannot be checked now
                raise ServiceUnavailable("The key store is unreachable; retry shortly.",
                                         code="storage_unavailable", headers={"retry-after": "2"}) from e  # fmt: skip
            if row is None:
                if len(self._misses) > 10_000:
                    self._misses.clear()
                self._misses[h] = time.monotonic()
                return None
            rec = self._by_hash[h] = KeyRecord.from_row(row)
        if rec is not None and rec.active and self.shared and check_revoked and await self.state.is_revoked(rec.id):
            return None
        return rec

    def all(self) -> list[KeyRecord]:
        return sorted(self._by_hash.values(), key=lambda r: r.created_at)

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await repo.key_by_id(self.db, key_id)
        return KeyRecord.from_row(row) if row else None

    async def create(
        self,
        name: str,
        *,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        budget_period: Period | None = None,
        tools: list[str] | None = None,
    ) -> tuple[KeyRecord, str]:
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": "key_" + uuid.uuid4().hex[:20], "name": name, "key_hash": hash_key(token),
            "key_prefix": token[:10], "models": models, "rpm": rpm, "tpm": tpm, "budget_usd": budget_usd,
            "budget_period": budget_period if budget_usd is not None else None, "created_at": time.time(),
            "revoked_at": None, "tools": tools,
        }  # fmt: skip
        await repo.insert_key(self.db, row)
        rec = self._by_hash[row["key_hash"]] = KeyRecord.from_row(row)
        await self.state.publish_key_change(rec.key_hash)
        return rec, token

    async def update(self, key_id: str, values: dict[str, Any]) -> KeyRecord | None:
        row = await repo.update_key(self.db, key_id, values)
        if row is None:
            return None
        rec = self._by_hash[row["key_hash"]] = KeyRecord.from_row(row)
        await self.state.publish_key_change(rec.key_hash)
        return rec

    async def revoke(self, key_id: str) -> KeyRecord | None:
        current = await self.get(key_id)
        if current is None:
            return None
        if current.revoked_at is not None:
            return current
        # Shared set first: from this moment no worker accepts the key, even before the DB write lands.
        await self.state.revoke(key_id)
        return await self.update(key_id, {"revoked_at": time.time()})
