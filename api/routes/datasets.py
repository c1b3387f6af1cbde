"""/v1/datasets: upload a .npz (validated, size-capped), list, read."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CommittingRoute, CurrentKey, RuntimeDep, SessionDep
from api.routes import V1
from api.schemas import DatasetOut, DatasetPage, error_responses
from api.services import datasets
from api.uploads import staged_upload

router = APIRouter(prefix=f"{V1}/datasets", tags=["datasets"], route_class=CommittingRoute)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": ".npz with X, y and optionally X_test, y_test (no object arrays)"},
                "name": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
            },
        }}},
    }
}


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=_UPLOAD_BODY,
             responses=error_responses(401, 413, 415, 422, 429, 503))
async def upload_dataset(request: Request, response: Response, session: SessionDep, key: CurrentKey,
                         runtime: RuntimeDep) -> DatasetOut:
    """Upload a .npz as multipart field `file` (optional `name`); its id is usable as a job's data.id."""
    settings = runtime.settings
    async with staged_upload(request, staging_dir=settings.upload_staging_dir,
                             max_file_bytes=settings.max_upload_bytes, text_fields=frozenset({"name"})) as upload:
        # Validation reads the arrays (CPU), the store and the session are synchronous: all off the event loop.
        dataset = await run_in_threadpool(datasets.create_dataset, session, key, upload, settings,
                                          runtime.artifacts)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetOut.from_row(dataset)


@router.get("", response_model=DatasetPage, responses=error_responses(401, 422, 429))
def list_datasets(session: SessionDep, key: CurrentKey, limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> DatasetPage:
    """Your datasets, newest first."""
    rows, total = datasets.list_datasets(session, key, limit=limit, offset=offset)
    return DatasetPage(items=[DatasetOut.from_row(d) for d in rows], total=total, limit=limit, offset=offset)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses(401, 404, 429))
def get_dataset(dataset_id: str, session: SessionDep, key: CurrentKey) -> DatasetOut:
    """One of your datasets: sha256, size, shapes, task."""
    return DatasetOut.from_row(datasets.get_dataset(session, key, dataset_id))
