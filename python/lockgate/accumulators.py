"""PySpark's ``pyspark.accumulators``: :class:`Accumulator`, a value the job's functions
add to."""

import threading
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Accumulator"]


class Accumulator(Generic[T]):
    """A value the job's functions add to (``+=`` or :meth:`add`), read with
    :attr:`value`. Adds from the engine's threads are serialized."""

    def __init__(self, value):
        """Starts at ``value``."""
        self._value = value
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"_value": self._value}

    def __setstate__(self, state):
        self._value = state["_value"]
        self._lock = threading.Lock()

    def add(self, term):
        """Adds ``term``."""
        with self._lock:
            self._value = self._value + term

    def __iadd__(self, term):
        self.add(term)
        return self

    @property
    def value(self):
        """The current value."""
        return self._value

    @value.setter
    def value(self, value):
        with self._lock:
            self._value = value
