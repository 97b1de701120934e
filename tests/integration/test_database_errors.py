"""A database failure during a request reaches the user as one line: PostgreSQL's DETAIL/CONTEXT
lines (other sessions' pids, table names, SQL) stay in the server log."""

from __future__ import annotations

import logging
import threading

import pytest
import sqlalchemy as sa
from lora_studio.core.db import Database
from lora_studio.core.errors import Unavailable


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # deadlocks: SQLite has one writer
def test_a_deadlock_answers_one_line_and_logs_the_detail(database_url, caplog):
    db = Database(database_url)
    try:
        with db.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id int primary key, v int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 0), (2, 0)"))
        barrier = threading.Barrier(2, timeout=30)
        failures: list[Unavailable] = []

        def lock(first: int, second: int) -> None:  # opposite orders: PostgreSQL aborts one of the two
            try:
                with db.begin() as conn:
                    conn.execute(sa.text("SET LOCAL deadlock_timeout = '100ms'"))
                    conn.execute(sa.text("UPDATE t SET v = v + 1 WHERE id = :i"), {"i": first})
                    barrier.wait()
                    conn.execute(sa.text("UPDATE t SET v = v + 1 WHERE id = :i"), {"i": second})
            except Unavailable as e:
                failures.append(e)

        with caplog.at_level(logging.WARNING, logger="lora_studio.db"):
            threads = [threading.Thread(target=lock, args=order) for order in ((1, 2), (2, 1))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
        assert len(failures) == 1
        message = failures[0].message
        assert failures[0].status == 503 and failures[0].code == "database_unavailable"
        assert "deadlock detected" in message
        assert "\n" not in message and "DETAIL" not in message and "Process" not in message
        assert "CONTEXT" not in message and "relation" not in message
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "deadlock detected" in logged and "Process" in logged  # the operator still sees who waited for whom
    finally:
        db.dispose()
