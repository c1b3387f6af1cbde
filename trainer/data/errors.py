"""The one error the data layer raises for bad data: it names the offending field or file key."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing data; `field` is the spec field (`data.path`) or file key (`X`) at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self):  # so the error survives pickling (Celery results, multiprocessing)
        return (type(self), (self.field, self.reason))
