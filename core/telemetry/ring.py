"""A bounded, thread-safe buffer of the newest items: one writer thread, any number of reader sessions.

collections.deque(maxlen=...) drops the oldest item on append; the lock makes reading a consistent
copy safe while the sampler appends (iterating a deque that another thread mutates raises).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Ring(Generic[T]):
    """The newest `capacity` items, oldest first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a ring needs room for at least one item, got {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._items.maxlen or 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: T) -> None:
        with self._lock:
            self._items.append(item)

    def items(self) -> tuple[T, ...]:
        """A copy, oldest first; later appends do not change it."""
        with self._lock:
            return tuple(self._items)

    def latest(self) -> T | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def since(self, start: float, key: Callable[[T], float]) -> tuple[T, ...]:
        """Items whose key (a time) is at or after `start`, oldest first."""
        with self._lock:
            newest_first = []
            for item in reversed(self._items):  # stop at the first old one: the window is usually short
                if key(item) < start:
                    break
                newest_first.append(item)
        return tuple(reversed(newest_first))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
