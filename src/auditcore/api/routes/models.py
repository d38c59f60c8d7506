"""``/v1/models``: the read models this key may read, and current-state rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder

from auditcore.api import params
from auditcore.api.deps import ReaderDep
from auditcore.api.schemas import ColumnOut, FilterOut, ReadModelOut, RowsOut
from auditcore.errors import NotEntitledError, NotFoundError
from auditcore.readmodel.model import EventTable, ReadModel, StateTable

router = APIRouter(prefix="/v1", tags=["read models"])


@router.get("/models", response_model=list[ReadModelOut], summary="Read models you may read")
def list_models(reader: ReaderDep) -> list[ReadModelOut]:
    """As the registry declares them: columns, filters, free text, time column."""
    visible = []
    for model in reader.models:
        try:
            reader.model(model.name)
        except NotEntitledError:
            continue
        visible.append(_describe(model))
    return visible


@router.get(
    "/models/{name}/rows",
    response_model=RowsOut,
    summary="Current state (incidents, monitors…)",
)
def model_rows(
    name: str,
    request: Request,
    reader: ReaderDep,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    limit: Annotated[str | None, Query(description="1 to 1000; default 50.")] = None,
) -> RowsOut:
    """Rows of a current-state read model, most recently started first; filter by its filters."""
    model = reader.model(name)
    if not isinstance(model, StateTable):
        raise NotFoundError(
            f"{name} has no current-state rows (it is a table of events); see /v1/models"
        )
    query = request.query_params
    rows = reader.current(
        model.name,
        params.filters_from(query, model, ("text", "limit")),
        text=text,
        limit=params.integer(query, "limit", 50),
    )
    return RowsOut(items=jsonable_encoder(rows))


def _describe(model: ReadModel) -> ReadModelOut:
    kind = "state" if isinstance(model, StateTable) else "events"
    if isinstance(model, EventTable) and model.group_by:
        kind = "rollup"
    return ReadModelOut(
        name=model.name,
        description=model.description,
        kind=kind,
        columns=[ColumnOut(name=c.name, type=c.type) for c in model.table.columns],
        filters=[
            FilterOut(name=f.name, help=f.help, live=f.live is not None) for f in model.filters
        ],
        text_search=model.text_column is not None,
        time_column=model.time_column,
    )
