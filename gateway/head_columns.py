"""Growable numpy columns: the head's uncompressed samples and per-series state.

Appends are amortised O(1) per element by doubling capacity, so the head never holds
a Python object per sample.
"""

from __future__ import annotations

import numpy as np


class GrowableArray:
    """A 1-d numpy array with a fill level that grows by doubling."""

    __slots__ = ("_data", "_fill", "_soft_cap", "size")

    def __init__(
        self,
        dtype: type[np.generic],
        fill: int | float = 0,
        capacity: int = 64,
        soft_cap: int = 1 << 62,
    ) -> None:
        self._fill = fill
        self._data = np.full(capacity, fill, dtype=dtype)
        # Doubling stops here: past it, room grows only by what is asked for.
        self._soft_cap = soft_cap
        self.size = 0

    def reserve(self, size: int) -> None:
        """Make room for `size` elements in all; new room holds the fill value."""
        if size > len(self._data):
            capacity = max(size, min(2 * len(self._data), self._soft_cap))
            grown = np.full(capacity, self._fill, dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown

    def extend(self, values: np.ndarray) -> None:
        """Append values at the end."""
        self.reserve(self.size + len(values))
        self._data[self.size : self.size + len(values)] = values
        self.size += len(values)

    def grow_to(self, size: int) -> None:
        """Extend with the fill value up to `size` elements."""
        self.reserve(size)
        self.size = max(self.size, size)

    @property
    def view(self) -> np.ndarray:
        """The filled part (a view: valid until the next append)."""
        return self._data[: self.size]

    @property
    def nbytes(self) -> int:
        """Bytes held, including spare capacity."""
        return int(self._data.nbytes)

    def clear(self, capacity: int = 64) -> None:
        """Drop all elements and give the memory back."""
        self._data = np.full(capacity, self._fill, dtype=self._data.dtype)
        self.size = 0


class SampleColumns:
    """Unsorted (ref, timestamp, value) samples.

    `soft_cap`: the size at which the owner empties the columns (the head's freeze
    point); doubling past it would reserve up to twice that, never to be used.
    """

    __slots__ = ("refs", "timestamps", "values")

    def __init__(self, soft_cap: int = 1 << 62) -> None:
        self.refs = GrowableArray(np.uint32, soft_cap=soft_cap)
        self.timestamps = GrowableArray(np.int64, soft_cap=soft_cap)
        self.values = GrowableArray(np.float64, soft_cap=soft_cap)

    def __len__(self) -> int:
        return self.refs.size

    def extend(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Append samples (the three arrays have one length)."""
        self.refs.extend(refs)
        self.timestamps.extend(timestamps)
        self.values.extend(values)

    def sorted_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies sorted by (ref, timestamp)."""
        order = np.lexsort((self.timestamps.view, self.refs.view))
        return self.refs.view[order], self.timestamps.view[order], self.values.view[order]

    @property
    def nbytes(self) -> int:
        """Bytes held, including spare capacity."""
        return self.refs.nbytes + self.timestamps.nbytes + self.values.nbytes

    def clear(self) -> None:
        """Drop all samples."""
        for column in (self.refs, self.timestamps, self.values):
            column.clear()
