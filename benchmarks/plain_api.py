"""The baseline of ``--only api``: a plain FastAPI handler answering "event by id" straight from
PostgreSQL through a psycopg pool (no auth, no upcasting), run as
``uvicorn benchmarks.plain_api:app`` with ``PLAIN_API_DB`` set to the store's URL and
``PLAIN_API_EVENTS`` / ``PLAIN_API_IDS`` to its tables."""

import os

from fastapi import FastAPI, HTTPException, Response
from psycopg_pool import ConnectionPool

pool = ConnectionPool(os.environ["PLAIN_API_DB"], min_size=4, max_size=16, open=True)
app = FastAPI()
SQL = (
    f"SELECT e.state FROM {os.environ['PLAIN_API_EVENTS']} e JOIN {os.environ['PLAIN_API_IDS']} i "
    "ON e.originator_id = i.originator_id AND e.originator_version = i.originator_version "
    "WHERE i.workspace_id = %s AND i.event_id = %s"
)


@app.get("/v1/events/{event_id}")
def event(event_id: str, workspace: str = "ws3") -> Response:
    with pool.connection() as conn:
        row = conn.execute(SQL, (workspace, event_id), prepare=True).fetchone()
    if row is None:
        raise HTTPException(404)
    return Response(bytes(row[0]), media_type="application/json")
