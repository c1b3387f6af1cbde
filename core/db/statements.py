"""Statement helpers every repository shares: dialect-aware insert-or-ignore, a JSON number, typed row counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.db.models import Base


def rowcount(result: object) -> int:
    """Rows an UPDATE/DELETE matched. Session.execute is typed as returning Result; for DML it returns a
    CursorResult, which carries the count."""
    return cast(CursorResult[Any], result).rowcount


def core_table(model: type[Base]) -> Table:
    """The model's Table. DML on it runs as a Core statement: an ORM-enabled UPDATE or INSERT (on the mapped
    class) spends ~0.3-0.7 ms of Python per statement on bulk-statement bookkeeping for objects the session might
    hold, a sizable part of a small job's writes (bench/RESULTS.md). For sessions that hold no such objects."""
    return cast(Table, model.__table__)


def insert_ignoring_conflicts(session: Session, model: type[Base], index_elements: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (index_elements) DO NOTHING for the session's dialect; add values and execute.

    Settles concurrent inserts of one key inside the database (on PostgreSQL the loser waits for the winner's
    commit), with no savepoint, which pysqlite mishandles.
    """
    dialect = session.get_bind().dialect.name
    table = core_table(model)
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))
    raise RuntimeError(f"database_url: unsupported database dialect {dialect!r}")


JsonColumn = InstrumentedAttribute[dict[str, Any]] | InstrumentedAttribute[dict[str, Any] | None]


def json_number(session: Session, column: JsonColumn, key: str) -> tuple[ColumnElement[float], ColumnElement[bool]]:
    """(column[key] as a float, whether column[key] holds a JSON number). Filter on the second before reading
    the first: a string or a boolean is never cast, so it cannot fail the query on PostgreSQL."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        is_number = func.json_typeof(column.op("->")(key)) == "number"
    elif dialect == "sqlite":
        is_number = func.json_type(column, f'$."{key}"').in_(("real", "integer"))
    else:
        raise RuntimeError(f"database_url: unsupported database dialect {dialect!r}")
    return column[key].as_float(), is_number
