"""The SDK flow against a live server whose store is PostgreSQL (a fresh schema, dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from tests.conftest import PG_URL, require_pg
from tests.support.batch import create_pool, wait_idle_nodes, wait_tasks_done
from tests.support.live import LiveServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _pg_exec(sql: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[LiveServer]:
    require_pg()
    name = f"by_{uuid.uuid4().hex}"
    _pg_exec(f"CREATE SCHEMA {name}")
    srv = LiveServer(tmp_path / "data", database_url=f"{PG_URL}?options=-csearch_path%3D{name}")
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        _pg_exec(f"DROP SCHEMA {name} CASCADE")


def _tables_in(schema_url: str) -> set[str]:
    name = schema_url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_URL) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (name,)
        ).fetchall()
    return {r[0] for r in rows}


def test_sdk_flow_on_postgresql(pg_server: LiveServer) -> None:
    assert pg_server.database_url is not None
    assert {"pools", "jobs", "tasks", "nodes"} <= _tables_in(pg_server.database_url)  # the server migrated it

    client = BatchClient(
        endpoint=pg_server.endpoint, credential=AzureNamedKeyCredential(pg_server.account, pg_server.key)
    )
    pool_id, job_id = "pg-pool", "pg-job"
    create_pool(client, pool_id, nodes=1)
    wait_idle_nodes(client, pool_id, 1)

    client.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    ids = [f"task{i}" for i in range(5)]
    result = client.create_task_collection(
        job_id,
        m.BatchTaskGroup(
            task_values=[
                m.BatchTaskCreateOptions(id=t, command_line="/bin/sh -c 'echo hi $AZ_BATCH_TASK_ID'")
                for t in ids
            ]
        ),
    )
    assert result.result_values is not None
    assert sorted(r.task_id for r in result.result_values) == ids
    assert {r.status.lower() for r in result.result_values} == {"success"}

    tasks = wait_tasks_done(client, job_id, 5)
    assert sorted(t.id for t in tasks) == ids
    for t in tasks:
        assert t.execution_info is not None
        assert t.execution_info.exit_code == 0
        assert t.execution_info.result == "success"

    c = client.get_job_task_counts(job_id).task_counts
    assert (c.active, c.running, c.completed, c.succeeded, c.failed) == (0, 0, 5, 5, 0)

    out = b"".join(client.download_task_file(job_id, "task3", "stdout.txt")).decode()
    assert out == "hi task3\n"

    # rows live in PostgreSQL: the server reports what it wrote there
    name = pg_server.database_url.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_URL) as conn:
        n = conn.execute(f"SELECT count(*) FROM {name}.tasks WHERE state = 'completed'").fetchone()
    assert n is not None and n[0] == 5

    client.begin_delete_job(job_id, polling_interval=0.2).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)
    client.begin_delete_pool(pool_id, polling_interval=0.2).result()
    with pytest.raises(ResourceNotFoundError):
        client.get_pool(pool_id)
