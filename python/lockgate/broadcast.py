"""PySpark's ``pyspark.broadcast``: :class:`Broadcast`, a read-only value shared with
the job's functions."""

from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Broadcast"]


class Broadcast(Generic[T]):
    """A read-only value shared with the job's functions (all run in this process)."""

    def __init__(self, value):
        """Wraps ``value``."""
        self._value = value

    @property
    def value(self):
        """The value broadcast."""
        return self._value

    def unpersist(self, blocking=False):
        """Kept for PySpark's API: there is nothing to release."""

    def destroy(self, blocking=False):
        """Kept for PySpark's API: there is nothing to release."""
