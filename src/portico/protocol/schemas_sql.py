"""Request and response shapes of ``POST /v1/sql_sources/{name}/query`` for the OpenAPI document (descriptions of
what the handler reads and builds; never instantiated per request)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SqlQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(default=None, description="a question in plain words (generate, check, run, answer)")
    sql: str | None = Field(default=None, description="one SELECT to check and run (exactly one of question / sql)")
    model: str | None = Field(default=None, description="the chat model that writes the SQL (questions only)")


class SqlResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: Literal["sql.result"]
    source: str
    sql: str = Field(description="what ran: the checked statement rebuilt from its syntax tree, LIMIT applied")
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="more rows existed than max_rows")
    tables: list[str] = Field(description="the tables the statement read (cite these)")
    answer: str | None = Field(default=None, description="questions only: the answer written from the rows")
    attempts: int | None = Field(default=None, description="questions only: generations, repairs included")
    examples: list[Any] | None = None
    chosen_tables: list[str] | None = None
