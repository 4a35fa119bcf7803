"""``sql_sources:``: the databases questions may be asked over, each with its allow-list and limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid")


class SqlSourceConfig(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # SQLAlchemy URL: sqlite:///path.db, postgresql://user@host/db, mysql+pymysql://user@host/db (MariaDB/MySQL).
    url: str = Field(min_length=1)
    # Tables questions may read ("schema.table" where the database has schemas); None: every table the connection
    # sees outside the system catalogs. Catalogs (information_schema, pg_catalog, mysql, sqlite_master) are only
    # readable when named here.
    tables: list[str] | None = None
    max_rows: int = Field(default=200, ge=1, le=100_000)  # a LIMIT is added or lowered to this; rows past it are cut
    timeout: float = Field(default=10.0, gt=0, le=600)  # seconds per statement, enforced by the database
    # Free-text descriptions for the prompt and table search: {"table": "...", "table.column": "..."}.
    descriptions: dict[str, str] = Field(default_factory=dict)
    glossary: dict[str, str] = Field(default_factory=dict)  # business terms → what they mean in this schema
    sample_values: int = Field(default=3, ge=0, le=20)  # distinct example values per text column (prompt, search)
    model: str | None = None  # chat model writing the SQL and the answer; None: the application's (or the first)
    max_tables: int = Field(default=5, ge=1, le=50)  # tables picked by retrieval for one question
    examples: int = Field(default=3, ge=0, le=20)  # question→SQL examples shown per question
    max_repairs: int = Field(default=2, ge=0, le=5)  # generations fed an error or an empty result back

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
            raise ValueError("url must be a sqlite://, postgresql:// or mysql+pymysql:// SQLAlchemy URL")
        return v


def check_unique(sources: list[SqlSourceConfig]) -> None:
    seen: set[str] = set()
    for i, s in enumerate(sources):
        if s.name in seen:
            raise ValueError(f"sql_sources[{i}].name: '{s.name}' is defined twice")
        seen.add(s.name)
