"""Uploaded datasets: validated as untrusted .npz, stored in the artifact store as datasets/<id>.npz (a key made
from the server's id only), owned by the uploader."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from api.errors import InvalidInput, NotFound
from api.uploads import StagedUpload
from core.artifacts.errors import StoreUnavailable
from core.artifacts.keys import dataset_key
from core.artifacts.store import ArtifactStore
from core.db.hooks import after_rollback
from core.db.models import ApiKey, Dataset, new_id
from core.ids import is_plain_id
from core.repositories import datasets as repo
from core.settings import Settings
from trainer.data import DataError, inspect_npz

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # matched whole: `$` lets a trailing newline by


def _name(given: str | None, filename: str | None) -> str:
    if given is not None:
        if not _NAME.fullmatch(given):
            raise InvalidInput([("name", "1-128 characters: letters, digits, '.', '_' or '-', starting with a "
                                 "letter or digit")])
        return given
    stem = Path(filename or "").stem
    derived = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-")[:128]
    return derived or "dataset"


def create_dataset(session: Session, owner: ApiKey, upload: StagedUpload, settings: Settings,
                   store: ArtifactStore) -> Dataset:
    """Validate the staged upload, put it in the store and add its row (the caller commits).

    The object is complete before the row exists, and a worker reads only what a row names; if the request
    then fails to commit, the object is deleted again.
    """
    name = _name(upload.fields.get("name"), upload.filename)
    try:
        info = inspect_npz(upload.path, max_bytes=settings.max_upload_bytes,
                           max_uncompressed_bytes=settings.max_upload_uncompressed_bytes)
    except DataError as exc:
        raise InvalidInput([(exc.field, exc.reason)]) from exc
    except Exception as exc:
        # The validator should turn every bad byte into a DataError; if one gets through, the file is still
        # the user's problem to fix, and ours to log, but never a 500.
        log.exception("inspect_npz raised %s on an upload", type(exc).__name__)
        raise InvalidInput([("file", f"not a readable .npz ({type(exc).__name__})")]) from exc

    dataset_id = new_id()
    key = dataset_key(dataset_id)
    store.put_file(key, upload.path)
    after_rollback(session, lambda: _forget(store, key))
    sample = list(info.input_shape)
    dataset = Dataset(
        id=dataset_id, owner_id=owner.id, name=name, sha256=upload.sha256, size_bytes=upload.size,
        n_train=info.n_train, n_test=info.n_test,
        input_shape={"train": [info.n_train, *sample], "test": [info.n_test, *sample] if info.n_test else None},
        task=info.task, num_classes=info.num_classes, output_dim=info.output_dim,
    )
    return repo.add(session, dataset)


def _forget(store: ArtifactStore, key: str) -> None:
    try:
        store.delete(key)
    except StoreUnavailable:  # an object without a row is never read; it only takes space
        log.warning("could not delete %s after a rolled-back upload", key)


def get_dataset(session: Session, owner: ApiKey, dataset_id: str) -> Dataset:
    dataset = repo.get_owned(session, owner.id, dataset_id) if is_plain_id(dataset_id) else None
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id[:64]!r}")
    return dataset


def list_datasets(session: Session, owner: ApiKey, *, limit: int, offset: int) -> tuple[Sequence[Dataset], int]:
    return repo.list_owned(session, owner.id, limit=limit, offset=offset)
