"""PySpark's ``pyspark.streaming`` on Lockgate: ``StreamingContext`` and ``DStream``.

A context declares its sources and operators, then ``start`` builds the whole graph
on the engine (recovering from the checkpoint when there is one) and runs a batch per
``batchDuration`` seconds until ``stop``.
"""

import os
import pickle
import threading
import warnings

from lockgate import SparkContext, _lockgate
from lockgate.streaming.dstream import DStream, _ms

__all__ = ["StreamingContext", "DStream"]


class StreamingContext:
    """PySpark's ``StreamingContext`` (see the module's documentation)."""

    _active = None
    _lock = threading.Lock()

    def __init__(self, sparkContext=None, batchDuration=None):
        """A context of ``sparkContext`` (or the active one, or a new one) with a batch
        every ``batchDuration`` seconds (default 1)."""
        self._sc = sparkContext or SparkContext.getOrCreate()
        self._batch_ms = _ms(batchDuration if batchDuration is not None else 1)
        if self._batch_ms <= 0:
            raise ValueError(f"batchDuration must be positive, got {batchDuration!r}")
        self._checkpoint = None
        self._remember_ms = None
        self._outputs = []
        self._ctx = None
        self._stopped = False
        # Set by getOrCreate: save the context into the checkpoint at start.
        self._save = False
        # id(DStream) -> (DStream, the engine's stream), once started.
        self._built = None
        # Tables for sql(): name -> (DStream, schema).
        self._tables = {}
        self._queries = 0

    @property
    def sparkContext(self):
        """The ``SparkContext``."""
        return self._sc

    @classmethod
    def getOrCreate(cls, checkpointPath, setupFunc):
        """As in PySpark: when ``checkpointPath`` holds a checkpoint with its context
        saved in it, the context comes back from it (``setupFunc`` is not called) and
        recovers when it starts (state restored, unfinished batches re-run from their
        logged plans). Otherwise ``setupFunc()`` declares the context, which is saved
        into the checkpoint when it starts (its functions pickled with cloudpickle).

        A context that cannot be pickled is not saved (a warning says why):
        ``setupFunc`` then runs again at the next start. To run changed code over an
        existing checkpoint, declare the context yourself and call
        :meth:`checkpoint`: state and unfinished batches recover by the operators'
        names, whatever code declared them."""
        saved = _saved_context(checkpointPath)
        if os.path.exists(saved):
            try:
                with open(saved, "rb") as f:
                    ssc = pickle.load(f)
            except Exception as e:
                raise RuntimeError(
                    f"the context saved in {saved} cannot be loaded ({type(e).__name__}: "
                    f"{e}); remove that file to declare it again with setupFunc (the "
                    "checkpoint's state still recovers), or use a new checkpoint") from e
            ssc._checkpoint = str(checkpointPath)
            return ssc
        ssc = setupFunc()
        if not isinstance(ssc, StreamingContext):
            raise TypeError(f"setupFunc must return a StreamingContext, got {type(ssc).__name__}")
        ssc.checkpoint(checkpointPath)
        ssc._save = True
        return ssc

    def __getstate__(self):
        # What the job declared; not the engine's context of a run.
        run = ("_ctx", "_stopped", "_save", "_built")
        return {k: v for k, v in self.__dict__.items() if k not in run}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ctx = None
        self._stopped = False
        self._save = False
        self._built = None

    def _save_context(self):
        """Saves the context into its checkpoint for :meth:`getOrCreate` (once)."""
        saved = _saved_context(self._checkpoint)
        if os.path.exists(saved):
            return
        try:
            import cloudpickle

            data = cloudpickle.dumps(self)
        except Exception as e:
            warnings.warn(
                f"the StreamingContext cannot be saved with its checkpoint ({type(e).__name__}: "
                f"{e}); StreamingContext.getOrCreate will call setupFunc again at the next "
                "start", RuntimeWarning, stacklevel=3)
            return
        os.makedirs(os.path.dirname(saved), exist_ok=True)
        tmp = f"{saved}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, saved)

    @classmethod
    def getActive(cls):
        """The context started and not stopped, or ``None``."""
        with cls._lock:
            return cls._active

    @classmethod
    def getActiveOrCreate(cls, checkpointPath, setupFunc):
        """The active context, or :meth:`getOrCreate`."""
        return cls.getActive() or cls.getOrCreate(checkpointPath, setupFunc)

    def checkpoint(self, directory):
        """Checkpoints into ``directory`` (a local path or ``file://`` URL; object
        stores are not reachable from Python yet): batch plans, state and commits, so a
        restart recovers exactly once."""
        self._require_not_started("checkpoint")
        self._checkpoint = str(directory)

    def remember(self, duration):
        """Keeps each stream's batches for at least ``duration`` seconds."""
        self._remember_ms = _ms(duration)

    def _require_not_started(self, what):
        if self._ctx is not None:
            raise RuntimeError(f"{what}: the context has started; declare before start()")

    def _add_output(self, register):
        self._require_not_started("an output operation")
        self._outputs.append(register)

    def _source(self, make):
        self._require_not_started("a source")
        return DStream(self, lambda g, memo: make(g))

    def socketTextStream(self, hostname, port, storageLevel=None):
        """The text lines a TCP server at ``hostname:port`` sends; with a checkpoint
        they are logged ahead before they are processed, so none is lost or doubled."""
        return self._source(lambda g: g.socket_text_stream(hostname, int(port)))

    def textFileStream(self, directory):
        """The lines of the files that appear in ``directory``, each file read once."""
        return self._source(lambda g: g.text_file_stream(str(directory)))

    def queueStream(self, rdds, oneAtATime=True, default=None):
        """A stream of the RDDs (or lists) of ``rdds``: one per batch with
        ``oneAtATime``, all in the first batch otherwise; then ``default`` (or nothing)."""
        batches = [_elements(r) for r in rdds]
        dflt = _elements(default) if default is not None else None
        return self._source(lambda g: g.queue_stream(batches, oneAtATime, dflt))

    def union(self, *dstreams):
        """The elements of all ``dstreams`` (of one slide)."""
        if not dstreams:
            raise ValueError("should have at least one DStream to union")
        if len(dstreams) == 1 and isinstance(dstreams[0], (list, tuple)):
            dstreams = tuple(dstreams[0])
        return DStream(self, lambda g, m: g.union([d._build(g, m) for d in dstreams]))

    def transform(self, dstreams, transformFunc):
        """``transformFunc(rdds)`` or ``transformFunc(time, rdds)`` over the batches of
        every stream of ``dstreams`` (same slide) of the same time."""
        from lockgate.rdd import RDD
        from lockgate.streaming.dstream import _arity, _partitions, _time

        if not dstreams:
            raise ValueError("transform of no streams")
        first, rest = dstreams[0], list(dstreams[1:])
        with_time = _arity(transformFunc) != 1
        sc = self._sc

        def tagged(i, d):
            return d.map(lambda x, i=i: (i, x))

        merged = tagged(0, first)
        for i, d in enumerate(rest, start=1):
            merged = merged.union(tagged(i, d))

        def run(time, rdd):
            by = [[] for _ in dstreams]
            for i, x in rdd.collect():
                by[i].append(x)
            rdds = [RDD([b], sc) for b in by]
            return transformFunc(time, rdds) if with_time else transformFunc(rdds)

        return merged.transform(run)

    def sql(self, sqlQuery, outputMode="update", watermark=None, name=None):
        """The rows of ``sqlQuery`` over the streams registered with
        ``DStream.createOrReplaceTempView`` (and their state kept across batches), as a
        :class:`~lockgate.streaming.sql.SqlDStream` of ``Row``: ``outputMode``
        ``update`` (each batch, the groups it changed) or ``append`` (a window once,
        when the watermark passes its end); ``watermark``: ``(column, delay)``, e.g.
        ``("ts", "10 seconds")``, Spark's ``withWatermark``. The query's state is
        checkpointed under ``name`` (default ``sql``, ``sql_2``, ... in the order the
        queries are declared): keep it when the code changes."""
        from lockgate.streaming.sql import SqlDStream

        self._require_not_started("a query")
        if outputMode not in ("update", "append"):
            raise ValueError(f"outputMode must be update or append, got {outputMode!r}")
        self._queries += 1
        if name is None:
            name = "sql" if self._queries == 1 else f"sql_{self._queries}"
        return SqlDStream(self, sqlQuery, name, outputMode, watermark)

    def start(self):
        """Builds the graph on the engine (recovering from the checkpoint when there is
        one) and starts the batches."""
        if self._stopped:
            raise RuntimeError("the StreamingContext was stopped; create a new one")
        if self._ctx is not None:
            raise RuntimeError("the StreamingContext has started already")
        if not self._outputs:
            raise ValueError("No output operations registered, so nothing to execute")

        if self._save and self._checkpoint is not None:
            self._save_context()

        def build(graph):
            memo = {}
            for register in self._outputs:
                register(graph, memo)
            # The engine's stream of each DStream, for DStream.slice.
            self._built = memo

        self._ctx = _lockgate.Context(
            self._sc.appName,
            self._batch_ms,
            build,
            parallelism=self._sc.defaultParallelism,
            checkpoint=self._checkpoint,
            remember_ms=self._remember_ms,
        )
        self._ctx.start()
        with StreamingContext._lock:
            StreamingContext._active = self

    def awaitTermination(self, timeout=None):
        """Waits until the context stops (or ``timeout`` seconds passed); raises the
        error that stopped it. Ctrl-C stops the context gracefully, then raises
        ``KeyboardInterrupt``."""
        self._require_started()
        self._ctx.await_termination(_ms(timeout))

    def awaitTerminationOrTimeout(self, timeout):
        """As :meth:`awaitTermination`; ``True`` when the context stopped, ``False``
        when ``timeout`` seconds passed first."""
        self._require_started()
        return self._ctx.await_termination(_ms(timeout))

    def _require_started(self):
        if self._ctx is None:
            raise RuntimeError("the StreamingContext has not started")

    def stop(self, stopSparkContext=True, stopGraceFully=False):
        """Stops the batches: gracefully (the batches planned complete) or at once (the
        one in flight completes; later ones stay logged and run at the next start). Also
        stops the ``SparkContext`` unless ``stopSparkContext`` is false."""
        if self._ctx is not None and not self._stopped:
            self._ctx.stop(bool(stopGraceFully))
        self._stopped = True
        with StreamingContext._lock:
            if StreamingContext._active is self:
                StreamingContext._active = None
        if stopSparkContext:
            self._sc.stop()


def _elements(batch):
    """The elements of an RDD or an iterable."""
    parts = getattr(batch, "_parts", None)
    if parts is not None:
        return [x for p in parts for x in p]
    return list(batch)


def _saved_context(checkpoint):
    """Where :meth:`StreamingContext.getOrCreate` saves the context in ``checkpoint``."""
    path = str(checkpoint)
    if path.startswith("file://"):
        path = path[len("file://"):]
    return os.path.join(path, "python", "context.pickle")
