"""SQLite connection arguments for the embedded Airflow default (SQLite with the LocalExecutor).

On SQLite the scheduler, the dag-processor, the api-server and commands such as
``airflow backfill create`` share one database file, and only one connection can write
at a time. Airflow turns WAL journal mode on (readers do not block the writer), but two
things still made a backfill fail with ``database is locked`` on a busy machine:

- Python's ``sqlite3`` waits only 5 s for another connection's write lock. Here it waits
  ``LOCK_TIMEOUT_S``.
- A transaction that SQLAlchemy opens with ``SAVEPOINT`` (``Session.begin_nested()``, as
  ``airflow backfill create`` does per run) starts as a reader: it reads, then asks for
  the write lock. If another process committed in between, SQLite refuses at once
  (``SQLITE_BUSY_SNAPSHOT``, reported as "database is locked"), whatever the timeout.
  Such a transaction here starts with ``BEGIN IMMEDIATE``: it takes the write lock first,
  waiting for it like any writer. Every other statement keeps ``sqlite3``'s usual
  transaction handling (a transaction begins at the first write, which waits as well).

Airflow imports these dictionaries by name (``[database] sql_alchemy_connect_args`` and
``sql_alchemy_connect_args_async``, Airflow 3.1 and later), set by the Makefile and by the
tests' Airflow environment::

    AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=foresight_dags.sqlite.CONNECT_ARGS
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC=foresight_dags.sqlite.ASYNC_CONNECT_ARGS

Only for SQLite: other databases take other arguments (the Compose stack on Postgres sets
neither). Nothing here imports Airflow, which imports this module while configuring itself.
"""
from __future__ import annotations

import sqlite3
from typing import Any

# Seconds a connection waits for another one's write lock before "database is locked".
LOCK_TIMEOUT_S = 60.0


class Cursor(sqlite3.Cursor):
    """A cursor that opens a savepoint's transaction with ``BEGIN IMMEDIATE``."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        if not self.connection.in_transaction and sql.lstrip()[:9].upper() == "SAVEPOINT":
            super().execute("BEGIN IMMEDIATE")
        return super().execute(sql, parameters)


class Connection(sqlite3.Connection):
    """``sqlite3.Connection`` whose cursors are ``Cursor`` (SQLAlchemy runs every statement on one)."""

    def cursor(self, factory: type[sqlite3.Cursor] = Cursor) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory)


# ``sqlite3.connect`` arguments of the synchronous engine (Airflow adds ``check_same_thread``).
CONNECT_ARGS: dict[str, Any] = {"timeout": LOCK_TIMEOUT_S, "factory": Connection}

# ``aiosqlite.connect`` arguments of the api-server's async engine (passed on to ``sqlite3.connect``).
ASYNC_CONNECT_ARGS: dict[str, Any] = {"timeout": LOCK_TIMEOUT_S, "factory": Connection}

# The settings above as Airflow environment variables, for the tests and the Makefile.
AIRFLOW_ENV: dict[str, str] = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.CONNECT_ARGS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.ASYNC_CONNECT_ARGS",
}
