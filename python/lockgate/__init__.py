"""Lockgate for Python: PySpark's streaming API on the Lockgate engine.

A PySpark DStream job ports by changing ``pyspark`` to ``lockgate`` in its imports::

    from lockgate import SparkContext
    from lockgate.streaming import StreamingContext

The whole job runs in one process: the engine (Rust) schedules the batches, shuffles,
windows and checkpoints, and calls the job's Python functions with the GIL held only
around the calls. Functions must be deterministic, as in Spark: after a crash the
unfinished batch is computed again from its logged plan.
"""

import glob
import os
import re
import threading

from lockgate import _lockgate
from lockgate.accumulators import Accumulator
from lockgate.broadcast import Broadcast
from lockgate.rdd import RDD

__all__ = ["SparkContext", "SparkConf", "RDD", "Broadcast", "Accumulator", "StreamingError"]

#: The error that stopped a streaming context (a batch's Python function raised, with
#: its traceback in the message; or the engine could not go on).
StreamingError = _lockgate.StreamingError


class SparkConf:
    """Spark's configuration object: settings by key. Lockgate reads ``spark.master``
    and ``spark.app.name``; other keys are kept and ignored."""

    def __init__(self, loadDefaults=True):
        """An empty configuration (``loadDefaults`` is accepted for PySpark's signature)."""
        self._settings = {}

    def set(self, key, value):
        """Sets ``key`` to ``value``; returns the configuration."""
        self._settings[key] = str(value)
        return self

    def setMaster(self, value):
        """Sets ``spark.master`` (``local[N]`` gives the engine N worker threads)."""
        return self.set("spark.master", value)

    def setAppName(self, value):
        """Sets ``spark.app.name``."""
        return self.set("spark.app.name", value)

    def setAll(self, pairs):
        """Sets every ``(key, value)`` of ``pairs``."""
        for k, v in pairs:
            self.set(k, v)
        return self

    def get(self, key, defaultValue=None):
        """The value of ``key``, or ``defaultValue``."""
        return self._settings.get(key, defaultValue)

    def getAll(self):
        """Every ``(key, value)`` set."""
        return list(self._settings.items())

    def contains(self, key):
        """Whether ``key`` is set."""
        return key in self._settings


def _threads(master):
    """The worker threads ``master`` asks for: ``local[N]`` → N, ``local[*]`` or
    anything else → every core."""
    m = re.fullmatch(r"local\[(\d+)\]", master or "")
    if m:
        return max(1, int(m.group(1)))
    if master == "local":
        return 1
    return os.cpu_count() or 1


class SparkContext:
    """A light stand-in for PySpark's ``SparkContext``: the application's name, its
    master (``local[N]`` sets the engine's worker threads), ``parallelize`` for queue
    streams, ``broadcast`` and ``accumulator`` for the job's functions, the log level.
    There is no cluster: the job runs in this process."""

    _active = None
    _lock = threading.Lock()

    def __init__(self, master=None, appName=None, sparkHome=None, pyFiles=None,
                 environment=None, batchSize=0, serializer=None, conf=None, **kwargs):
        """A context named ``appName`` (or ``spark.app.name`` of ``conf``) on ``master``
        (default ``local[*]``). Other arguments are accepted for PySpark's signature."""
        conf = conf or SparkConf()
        self._conf = conf
        self.master = master or conf.get("spark.master") or "local[*]"
        self.appName = appName or conf.get("spark.app.name") or "lockgate"
        self.defaultParallelism = _threads(self.master)
        self._stopped = False
        with SparkContext._lock:
            SparkContext._active = self

    @classmethod
    def getOrCreate(cls, conf=None):
        """The active context, or a new one from ``conf``."""
        with cls._lock:
            active = cls._active
        return active if active is not None and not active._stopped else cls(conf=conf)

    def getConf(self):
        """The configuration."""
        return self._conf

    def parallelize(self, c, numSlices=None):
        """An RDD of the elements of ``c`` in ``numSlices`` partitions (default: the
        parallelism)."""
        items = list(c)
        n = max(1, numSlices or self.defaultParallelism)
        n = min(n, max(1, len(items)))
        size, extra = divmod(len(items), n)
        parts, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            parts.append(items[start:end])
            start = end
        return RDD(parts, self)

    def textFile(self, name, minPartitions=None, use_unicode=True):
        """An RDD of the lines of the file ``name`` (or of every file, hidden ones
        excepted, of a directory or glob pattern), in at least ``minPartitions``
        partitions (default: the parallelism)."""
        path = str(name)
        if path.startswith("file://"):
            path = path[len("file://"):]
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if not f.startswith((".", "_")))
        else:
            files = sorted(glob.glob(path)) or [path]
        lines = []
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                lines.extend(line.rstrip("\r\n") for line in fh)
        return self.parallelize(lines, minPartitions)

    def emptyRDD(self):
        """An RDD without elements."""
        return RDD([], self)

    def broadcast(self, value):
        """``value`` shared with the job's functions."""
        return Broadcast(value)

    def accumulator(self, value, accum_param=None):
        """An accumulator starting at ``value``."""
        return Accumulator(value)

    def setLogLevel(self, logLevel):
        """The engine's log level on stderr from the next streaming context on: ``ALL``,
        ``DEBUG``, ``ERROR``, ``FATAL``, ``INFO``, ``OFF``, ``TRACE`` or ``WARN``
        (default ``WARN``; ``RUST_LOG`` overrides it)."""
        _lockgate.set_log_level(logLevel)

    def stop(self):
        """Stops the context (streaming contexts stop on their own ``stop``)."""
        self._stopped = True
        with SparkContext._lock:
            if SparkContext._active is self:
                SparkContext._active = None

    def __reduce__(self):
        # A context saved with a checkpoint (``StreamingContext.getOrCreate``) comes back
        # as the active one, or a new one of the same master, name and settings.
        return (_restore, (self.master, self.appName, self._conf))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _restore(master, appName, conf):
    """The active ``SparkContext``, or a new one: what a pickled context becomes."""
    with SparkContext._lock:
        active = SparkContext._active
    if active is not None and not active._stopped:
        return active
    return SparkContext(master, appName, conf=conf)
