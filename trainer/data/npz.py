"""User .npz files (uploads and local paths), validated without trusting a byte of them.

Order matters: the zip's directory is checked (keys, sizes, compression ratio) and every member's
.npy header is parsed (dtype, shape, size consistent with the member) BEFORE any array is read, so a
zip bomb or a pickled object array is refused without being inflated or unpickled. Arrays are then
read with np.load(allow_pickle=False) and checked for values (NaN/Inf, labels).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.errors import DataError
from trainer.data.task import Task
from trainer.spec import MAX_INPUT_DIM, MAX_SAMPLES

NPZ_KEYS = ("X", "y", "X_test", "y_test")
MAX_CLASSES = 10_000
MAX_COMPRESSION_RATIO = 200  # deflate tops out near 1000:1; real data sets sit far below 200:1
RATIO_CHECK_MIN_BYTES = 1 << 20  # small members can be all zeros legitimately
# Caps used when the trainer loads a file itself (CLI, worker); the API passes its own settings.
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_UNCOMPRESSED_BYTES = 8 << 30
INPUT_KINDS = "biuf"
TARGET_KINDS = "iuf"


@dataclass(frozen=True)
class NpzInfo:
    """What a valid .npz holds. n_test is 0 when the file has no X_test (split at training time)."""

    keys: tuple[str, ...]
    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    task: Task
    num_classes: int | None
    output_dim: int
    uncompressed_bytes: int


@dataclass(frozen=True)
class NpzArrays:
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    task: Task
    num_classes: int | None
    uncompressed_bytes: int


def _check_archive(path: Path, max_bytes: int, max_uncompressed_bytes: int) -> dict[str, zipfile.ZipInfo]:
    """The zip directory: known keys only, once each, plain members, sizes and ratios within caps."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError("file", f"cannot read {path}: {exc.strerror}") from exc
    if size > max_bytes:
        raise DataError("file", f"{size} bytes exceeds the limit of {max_bytes}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # a hostile directory raises BadZipFile, NotImplementedError, ValueError, EOFError...
        raise DataError("file", f"not a valid .npz (zip) archive: {exc}") from exc
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key not in NPZ_KEYS or key == info.filename:  # np.savez names members "<key>.npy"
            raise DataError(key, f"unknown key; an .npz may hold only {', '.join(NPZ_KEYS)}")
        if key in members:
            raise DataError(key, "appears twice in the archive")
        if info.flag_bits & 0x1:
            raise DataError(key, "encrypted members are not supported")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(key, f"compression method {info.compress_type} is not supported (use np.savez)")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECK_MIN_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise DataError(key, f"compression ratio {ratio:.0f}:1 is implausible (zip bomb?)")
        members[key] = info
    total = sum(info.file_size for info in members.values())
    if total > max_uncompressed_bytes:
        raise DataError("file", f"uncompressed {total} bytes exceeds the limit of {max_uncompressed_bytes}")
    return members


def _check_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> None:
    """Parse a member's .npy header (never its data) and check dtype and that the shape fits the member."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DataError(key, f".npy format version {version} is not supported")
            header_len = f.tell()
    except DataError:
        raise
    except Exception as exc:  # malformed headers raise ValueError, SyntaxError, zipfile errors, ...
        raise DataError(key, f"not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DataError(key, "object arrays are refused (they would need pickle; allow_pickle=False)")
    if dtype.fields is not None or dtype.kind not in INPUT_KINDS:
        raise DataError(key, f"dtype {dtype} is not numeric")
    if math.prod(shape) * dtype.itemsize != info.file_size - header_len:
        held = info.file_size - header_len
        raise DataError(key, f"header shape {shape} does not match the member's {held} data bytes")


def _check_values(key: str, a: np.ndarray, kinds: str) -> None:
    if a.dtype.kind not in kinds:
        raise DataError(key, f"dtype {a.dtype} is not allowed here")
    if a.ndim == 0 or a.size == 0:
        raise DataError(key, f"empty array (shape {a.shape})")
    if len(a) > MAX_SAMPLES:
        raise DataError(key, f"{len(a)} samples exceeds the cap of {MAX_SAMPLES}")
    if math.prod(a.shape[1:]) > MAX_INPUT_DIM:
        raise DataError(key, f"{math.prod(a.shape[1:])} values per sample exceeds the cap of {MAX_INPUT_DIM}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(key, "contains NaN or Inf")


def _target_task(key: str, y: np.ndarray) -> Task:
    """Integer 1-D labels are classes; anything else numeric is a regression target (n,) or (n, k)."""
    if y.ndim == 1 and y.dtype.kind in "iu":
        return "classification"
    if y.ndim not in (1, 2):
        raise DataError(key, f"targets must be (n,) or (n, k), got shape {y.shape}")
    return "regression"


def _check_arrays(arrays: dict[str, np.ndarray]) -> tuple[Task, int | None]:
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(key, "missing (an .npz needs X and y)")
    if ("X_test" in arrays) != ("y_test" in arrays):
        missing = "y_test" if "X_test" in arrays else "X_test"
        raise DataError(missing, "missing: X_test and y_test come together")
    for key, a in arrays.items():
        _check_values(key, a, INPUT_KINDS if key.startswith("X") else TARGET_KINDS)
    X = arrays["X"]
    if X.ndim not in (2, 4):
        raise DataError("X", f"must be (n, d) or (n, C, H, W), got shape {X.shape}")
    task = _target_task("y", arrays["y"])
    for x_key, y_key in (("X", "y"), ("X_test", "y_test")):
        if x_key not in arrays:
            continue
        if len(arrays[y_key]) != len(arrays[x_key]):
            counts = f"{len(arrays[y_key])} targets for {len(arrays[x_key])} samples"
            raise DataError(y_key, f"{counts} in {x_key}")
        if arrays[x_key].shape[1:] != X.shape[1:]:
            raise DataError(x_key, f"sample shape {arrays[x_key].shape[1:]} differs from X's {X.shape[1:]}")
        if _target_task(y_key, arrays[y_key]) != task:
            raise DataError(y_key, f"must be {task} targets like y")
    if task == "regression":
        k = arrays["y"].reshape(len(X), -1).shape[1]
        if "y_test" in arrays and arrays["y_test"].reshape(len(arrays["y_test"]), -1).shape[1] != k:
            raise DataError("y_test", f"must have {k} outputs like y")
        return task, None
    labels = [arrays[key] for key in ("y", "y_test") if key in arrays]
    for key, y in zip(("y", "y_test"), labels, strict=False):
        if y.min() < 0:
            raise DataError(key, f"class labels must be non-negative, found {y.min()}")
    num_classes = int(max(y.max() for y in labels)) + 1
    if num_classes > MAX_CLASSES:
        raise DataError("y", f"{num_classes} classes exceeds the cap of {MAX_CLASSES}")
    return task, num_classes


def read_npz(path: Path, *, max_bytes: int, max_uncompressed_bytes: int) -> NpzArrays:
    """Validated arrays from an untrusted .npz; DataError naming the key (or 'file') otherwise."""
    path = Path(path)
    members = _check_archive(path, max_bytes, max_uncompressed_bytes)
    with zipfile.ZipFile(path) as zf:
        for key, info in members.items():
            _check_header(zf, info, key)
    arrays: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as npz:
        for key in members:
            try:
                arrays[key] = npz[key]
            except Exception as exc:  # CRC errors, truncated data: the bytes are bad, whatever the type
                raise DataError(key, f"cannot read array: {exc}") from exc
    task, num_classes = _check_arrays(arrays)
    return NpzArrays(
        X=arrays["X"],
        y=arrays["y"],
        X_test=arrays.get("X_test"),
        y_test=arrays.get("y_test"),
        task=task,
        num_classes=num_classes,
        uncompressed_bytes=sum(info.file_size for info in members.values()),
    )


def inspect_npz(path: Path, *, max_bytes: int, max_uncompressed_bytes: int) -> NpzInfo:
    """Validate an uploaded or local .npz and describe it; raises DataError naming the key at fault."""
    a = read_npz(path, max_bytes=max_bytes, max_uncompressed_bytes=max_uncompressed_bytes)
    keys = tuple(k for k, v in zip(NPZ_KEYS, (a.X, a.y, a.X_test, a.y_test), strict=True) if v is not None)
    return NpzInfo(
        keys=keys,
        n_train=len(a.X),
        n_test=0 if a.X_test is None else len(a.X_test),
        input_shape=tuple(a.X.shape[1:]),
        task=a.task,
        num_classes=a.num_classes,
        output_dim=a.num_classes if a.num_classes is not None else a.y.reshape(len(a.y), -1).shape[1],
        uncompressed_bytes=a.uncompressed_bytes,
    )
