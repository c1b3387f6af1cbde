"""SQLite for the embedded default (core/db/sqlite.py), on real database files: WAL, writers on many threads taking
turns, a bounded wait for another connection's write lock (then a "busy" error, not an outage), the lock going
with every way a transaction ends, and count-then-insert made atomic by begin_write."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.db.errors import is_busy, is_unavailable
from core.db.session import begin_write, make_engine
from core.queue import enqueue_job, make_celery


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
def engine(path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{path}", busy_timeout=2.0)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (owner TEXT NOT NULL, n INTEGER)")
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine)


def rows(engine: Engine) -> int:
    with engine.connect() as c:
        return int(c.exec_driver_sql("SELECT count(*) FROM t").scalar_one())


def run_threads(n: int, target: object) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            target(i)  # type: ignore[operator]  # a callable taking the thread's index
        except BaseException as exc:  # collected and asserted on by the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_connections_use_wal_and_enforce_foreign_keys(engine: Engine):
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_writers_on_many_threads_take_turns_without_busy_errors(engine: Engine):
    def write(i: int) -> None:
        for n in range(5):
            with engine.begin() as c:
                c.execute(text("INSERT INTO t VALUES (:o, :n)"), {"o": f"w{i}", "n": n})

    assert run_threads(40, write) == []
    assert rows(engine) == 200


def test_a_write_waits_at_most_the_busy_timeout_for_another_connections_lock_and_reads_go_on(path: Path):
    engine = make_engine(f"sqlite:///{path}", busy_timeout=0.3)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (owner TEXT, n INTEGER)")
    other = sqlite3.connect(path, isolation_level=None)  # another process would do the same
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError) as raised:
            with engine.begin() as c:
                c.exec_driver_sql("INSERT INTO t VALUES ('a', 1)")
        assert is_busy(raised.value) and not is_unavailable(raised.value)
        with engine.connect() as c:  # WAL: readers are not blocked by the writer
            assert c.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        other.rollback()
        other.close()
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO t VALUES ('a', 1)")
    assert rows(engine) == 1
    engine.dispose()


def test_a_writer_in_the_same_process_waits_for_the_holder_to_commit(engine: Engine, sessions: sessionmaker[Session]):
    holder = sessions()
    holder.execute(text("INSERT INTO t VALUES ('holder', 1)"))  # the write lock, until commit
    done = threading.Event()

    def second() -> None:
        with engine.begin() as c:
            c.exec_driver_sql("INSERT INTO t VALUES ('second', 2)")
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.3)  # still waiting its turn
    holder.commit()
    holder.close()
    thread.join(timeout=10)
    assert done.is_set() and rows(engine) == 2


@pytest.mark.parametrize("end", ["commit", "rollback", "sql_commit", "close"])
def test_the_write_lock_goes_with_every_way_a_transaction_ends(engine: Engine, end: str):
    connection = engine.connect()
    connection.exec_driver_sql("INSERT INTO t VALUES ('a', 1)")
    if end == "commit":
        connection.commit()
    elif end == "rollback":
        connection.rollback()
    elif end == "sql_commit":
        connection.exec_driver_sql("COMMIT")
    connection.close()  # back to the pool (close: with the transaction still open)
    # Another thread gets the lock at once; a leaked lock would time out after 2 s with "database is locked".
    assert run_threads(1, lambda _: _write_once(engine)) == []


def _write_once(engine: Engine) -> None:
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO t VALUES ('b', 2)")


def test_reads_before_a_write_take_no_lock(engine: Engine, sessions: sessionmaker[Session]):
    reader = sessions()
    assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0  # left open on purpose
    assert run_threads(1, lambda _: _write_once(engine)) == []
    reader.close()


def test_count_then_insert_after_begin_write_never_passes_a_cap(engine: Engine, sessions: sessionmaker[Session]):
    cap, barrier = 5, threading.Barrier(30)

    def submit(_: int) -> None:
        barrier.wait()
        with sessions.begin() as s:
            begin_write(s)
            if s.execute(text("SELECT count(*) FROM t WHERE owner = 'u'")).scalar_one() < cap:
                s.execute(text("INSERT INTO t VALUES ('u', 0)"))

    assert run_threads(30, submit) == []
    assert rows(engine) == cap


def test_the_embedded_broker_uses_the_same_connections(tmp_path: Path):
    broker = tmp_path / "broker.db"
    app = make_celery(f"sqla+sqlite:///{broker}", busy_timeout=2.0)
    try:
        assert run_threads(20, lambda i: enqueue_job(app, f"job-{i}", "cpu")) == []
    finally:
        app.close()
    with sqlite3.connect(broker) as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert c.execute("SELECT count(*) FROM kombu_message").fetchone() == (20,)
