"""The two kinds of learning task a data set poses (numpy-only, so upload validation needs no torch)."""

from typing import Literal

Task = Literal["regression", "classification"]
