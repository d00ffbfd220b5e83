"""``DStream``: PySpark's discretized stream, declared lazily and built on the engine
when its ``StreamingContext`` starts.

Each method records an operator; nothing runs until an output (``foreachRDD``,
``pprint``, ``saveAsTextFiles``) is registered and the context started. Durations are
in seconds, as in PySpark. Keyed operations take ``(key, value)`` tuples.

Python calls per record, by operator: ``map``, ``flatMap``, ``filter``,
``mapValues``, ``flatMapValues``: one; ``mapPartitions``: one per partition;
``reduce``/``reduceByKey``/windowed reductions: one per element merged (fewer than one
per record after the per-partition combine); ``updateStateByKey``: one per key and
batch; ``foreachRDD``/``transform``: one per batch. Keys are hashed, compared, shuffled
and checkpointed by the engine without calling Python.
"""

import datetime
import inspect

from lockgate.rdd import RDD, _portable_hash

__all__ = ["DStream"]


def _ms(seconds):
    """Seconds (PySpark's durations) as milliseconds."""
    if seconds is None:
        return None
    if hasattr(seconds, "total_seconds"):
        seconds = seconds.total_seconds()
    return int(round(float(seconds) * 1000))


def _epoch_ms(t):
    """A point in time (a ``datetime``, naive ones in local time, or seconds since the
    epoch) as epoch milliseconds."""
    if isinstance(t, datetime.datetime):
        t = t.timestamp()
    return int(round(float(t) * 1000))


def _time(ms):
    """A batch time as PySpark gives it to functions: a local ``datetime``."""
    return datetime.datetime.fromtimestamp(ms / 1000.0)


def _arity(func):
    """The number of positional parameters ``func`` takes (PySpark's ``foreachRDD`` and
    ``transform`` accept ``f(rdd)`` and ``f(time, rdd)``)."""
    code = getattr(func, "__code__", None)
    if code is not None:
        n = code.co_argcount
        return n - 1 if inspect.ismethod(func) else n
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _with_time(func):
    """``func`` as ``f(time, rdd)``."""
    if _arity(func) == 1:
        return lambda t, rdd: func(rdd)
    return func


class DStream:
    """A discretized stream (see the module's documentation)."""

    def __init__(self, ssc, make):
        """A stream of ``ssc`` that ``make(graph, memo)`` builds on the engine."""
        self._ssc = ssc
        self._make = make

    def _build(self, graph, memo):
        key = id(self)
        if key not in memo:
            memo[key] = (self, self._make(graph, memo))
        return memo[key][1]

    def _rdd(self, ms, parts, ctx):
        """The RDD of this stream's batch of time ``ms`` that ``transform`` and
        ``foreachRDD`` functions receive (a Kafka stream's knows its offset ranges)."""
        return RDD(parts, ctx)

    def _derive(self, f):
        return DStream(self._ssc, lambda g, m: f(self._build(g, m)))

    def _derive2(self, other, f):
        return DStream(self._ssc, lambda g, m: f(self._build(g, m), other._build(g, m)))

    def _output(self, register):
        self._ssc._add_output(lambda g, m: register(self._build(g, m)))

    def context(self):
        """The ``StreamingContext`` of this stream."""
        return self._ssc

    # -- narrow transformations ------------------------------------------------------

    def map(self, f, preservesPartitioning=False):
        """``f`` applied to every element."""
        return self._derive(lambda s: s.map(f))

    def flatMap(self, f, preservesPartitioning=False):
        """The elements of the iterables ``f`` returns."""
        return self._derive(lambda s: s.flat_map(f))

    def filter(self, f):
        """The elements for which ``f`` is true."""
        return self._derive(lambda s: s.filter(f))

    def mapPartitions(self, f, preservesPartitioning=False):
        """``f(iterator)`` over each partition (one Python call per partition)."""
        return self._derive(lambda s: s.map_partitions(f))

    def mapPartitionsWithIndex(self, f, preservesPartitioning=False):
        """``f(index, iterator)`` over each partition."""
        return self.transform(lambda rdd: rdd.mapPartitionsWithIndex(f))

    def glom(self):
        """Each partition as one list."""
        return self._derive(lambda s: s.glom())

    def count(self):
        """The number of elements of each batch."""
        return self._derive(lambda s: s.count())

    def countByValue(self):
        """Each distinct element with its count: ``(element, count)``."""
        return self._derive(lambda s: s.count_by_value())

    def reduce(self, func):
        """The elements of each batch combined with ``func``."""
        return self._derive(lambda s: s.reduce(func))

    def union(self, other):
        """The elements of both streams (of the same slide)."""
        return self._derive2(other, lambda a, b: a.union(b))

    def repartition(self, numPartitions):
        """The elements spread evenly over ``numPartitions`` partitions."""
        return self._derive(lambda s: s.repartition(numPartitions))

    def cache(self):
        """Returns the stream (the engine keeps each batch while it is used)."""
        return self

    persist = cache

    def checkpoint(self, interval):
        """Returns the stream: state is checkpointed with every batch the context
        commits (see ``StreamingContext.checkpoint``)."""
        return self

    # -- keyed ------------------------------------------------------------------------

    def mapValues(self, f):
        """``f`` applied to every value of ``(key, value)`` pairs."""
        return self._derive(lambda s: s.map_values(f))

    def flatMapValues(self, f):
        """The values of the iterables ``f`` returns, each paired with its key."""
        return self._derive(lambda s: s.flat_map_values(f))

    def reduceByKey(self, func, numPartitions=None):
        """The values of each key combined with ``func``."""
        return self._derive(lambda s: s.reduce_by_key(func, numPartitions))

    def groupByKey(self, numPartitions=None):
        """Each key with the list of its values in the batch."""
        return self._derive(lambda s: s.group_by_key(numPartitions))

    def combineByKey(self, createCombiner, mergeValue, mergeCombiners, numPartitions=None):
        """Per key: ``createCombiner`` on the first value, ``mergeValue`` for the others,
        ``mergeCombiners`` across partitions."""
        return self._derive(
            lambda s: s.combine_by_key(createCombiner, mergeValue, mergeCombiners, numPartitions))

    def partitionBy(self, numPartitions, partitionFunc=_portable_hash):
        """The pairs in ``numPartitions`` partitions by ``partitionFunc(key)``."""
        return self.transform(lambda rdd: rdd.partitionBy(numPartitions, partitionFunc))

    def cogroup(self, other, numPartitions=None):
        """Per batch, each key with the lists of its values in both streams:
        ``(key, (values, other_values))``."""
        return self._derive2(other, lambda a, b: a.cogroup(b))

    def join(self, other, numPartitions=None):
        """Per batch, ``(key, (v, w))`` for every pair of values of a key in both."""
        return self._derive2(other, lambda a, b: a.join(b, "inner"))

    def leftOuterJoin(self, other, numPartitions=None):
        """As :meth:`join`, with ``(key, (v, None))`` for keys only in this stream."""
        return self._derive2(other, lambda a, b: a.join(b, "left"))

    def rightOuterJoin(self, other, numPartitions=None):
        """As :meth:`join`, with ``(key, (None, w))`` for keys only in ``other``."""
        return self._derive2(other, lambda a, b: a.join(b, "right"))

    def fullOuterJoin(self, other, numPartitions=None):
        """As :meth:`join`, with ``None`` on the side without values."""
        return self._derive2(other, lambda a, b: a.join(b, "full"))

    # -- windows ----------------------------------------------------------------------

    def window(self, windowDuration, slideDuration=None):
        """The elements of the last ``windowDuration`` seconds, every ``slideDuration``
        (default: every batch)."""
        return self._derive(lambda s: s.window(_ms(windowDuration), _ms(slideDuration)))

    def reduceByWindow(self, reduceFunc, invReduceFunc, windowDuration, slideDuration):
        """Each window's elements combined with ``reduceFunc``; incrementally with
        ``invReduceFunc`` when given (it undoes ``reduceFunc``)."""
        return self._derive(lambda s: s.reduce_by_window(
            reduceFunc, invReduceFunc, _ms(windowDuration), _ms(slideDuration)))

    def countByWindow(self, windowDuration, slideDuration):
        """The number of elements in each window."""
        return self._derive(lambda s: s.count_by_window(_ms(windowDuration), _ms(slideDuration)))

    def reduceByKeyAndWindow(self, func, invFunc, windowDuration, slideDuration=None,
                             numPartitions=None, filterFunc=None):
        """Each key's values over the window combined with ``func``; incrementally with
        ``invFunc`` when given (``filterFunc(pair)`` false drops a key from the window's
        state, e.g. once its count is back to zero)."""
        return self._derive(lambda s: s.reduce_by_key_and_window(
            func, invFunc, _ms(windowDuration), _ms(slideDuration), numPartitions, filterFunc))

    def groupByKeyAndWindow(self, windowDuration, slideDuration, numPartitions=None):
        """Each key with the list of its values in the window."""
        return self._derive(lambda s: s.group_by_key_and_window(
            _ms(windowDuration), _ms(slideDuration)))

    def countByValueAndWindow(self, windowDuration, slideDuration, numPartitions=None):
        """Each distinct element with its count in the window."""
        return self._derive(lambda s: s.count_by_value_and_window(
            _ms(windowDuration), _ms(slideDuration), numPartitions))

    # -- state ------------------------------------------------------------------------

    def updateStateByKey(self, updateFunc, numPartitions=None, initialRDD=None):
        """Per key and batch, ``updateFunc(new_values, last_state)`` gives the new state
        (``None`` removes the key); the stream of ``(key, state)``. Keys start from the
        ``(key, state)`` pairs of ``initialRDD`` (an RDD or a list). The state is
        checkpointed with the context (set ``StreamingContext.checkpoint``)."""
        initial = None
        if initialRDD is not None:
            initial = initialRDD.collect() if hasattr(initialRDD, "collect") else list(initialRDD)
        return self._derive(lambda s: s.update_state_by_key(updateFunc, initial))

    # -- per batch --------------------------------------------------------------------

    def transform(self, func):
        """``func(rdd)`` or ``func(time, rdd)`` on every batch; it returns an RDD (or a
        list of elements)."""
        func = _with_time(func)
        ctx = self._ssc._sc

        def run(ms, parts):
            return _partitions(func(_time(ms), self._rdd(ms, parts, ctx)))

        return self._derive(lambda s: s.transform(run))

    def transformWith(self, func, other, keepSerializer=False):
        """``func(rdd, other_rdd)`` or ``func(time, rdd, other_rdd)`` on the batches of
        both streams of the same time."""
        ctx = self._ssc._sc
        if _arity(func) == 2:
            call = lambda t, a, b: func(a, b)  # noqa: E731
        else:
            call = func

        def run(ms, a, b):
            return _partitions(call(_time(ms), self._rdd(ms, a, ctx), other._rdd(ms, b, ctx)))

        return self._derive2(other, lambda a, b: a.transform_with(b, run))

    def foreachRDD(self, func):
        """Registers an output: ``func(rdd)`` or ``func(time, rdd)`` on every batch. An
        exception fails the batch (and stops the context with its traceback)."""
        func = _with_time(func)
        ctx = self._ssc._sc

        def run(ms, batch_id, parts):
            func(_time(ms), self._rdd(ms, parts, ctx))

        self._output(lambda s: s.foreach(run))

    def saveToDatabase(self, url, table, columns, key=None, name=None):
        """Registers an output (Lockgate's, not PySpark's): every batch written to
        ``table`` of the database at ``url`` (``sqlite:PATH`` or
        ``postgres://USER:PASSWORD@HOST:PORT/DB``) in ONE transaction with a row of
        ``lockgate_offsets`` naming the batch, so a batch re-run after a crash is not
        written twice. ``columns``: ``"word STRING, n BIGINT"`` (``STRING``, ``BIGINT``,
        ``DOUBLE``; the table is created if missing); elements are tuples of the
        columns' values. With ``key`` (a column or a list of them) rows are upserted by
        it, else inserted. ``name`` (default: the table's) identifies the sink in
        ``lockgate_offsets``: keep it when the code changes."""
        keys = [key] if isinstance(key, str) else list(key or [])
        sink = name or table
        self._ssc._add_output(lambda g, m: g.save_to_database(
            self._build(g, m), url, table, columns, keys, sink))

    def saveToKafka(self, brokers, topic, properties=None, name=None):
        """Registers an output (Lockgate's, not PySpark's): every batch written to the
        Kafka ``topic`` in one transaction that also commits the batch id, so a batch
        re-run after a crash is not written twice (``read_committed`` consumers see each
        record once). A ``(key, value)`` tuple is a keyed record, anything else a
        record's value; keys and values are ``str`` (as UTF-8) or ``bytes``.
        ``properties``: librdkafka producer settings. The transactional id is
        ``lockgate-<app name>-<name>`` (default name ``kafka-<topic>``): a second
        instance of the job fences the first."""
        props = [(str(k), str(v)) for k, v in dict(properties or {}).items()]
        sink = name or f"kafka-{topic}"
        self._ssc._add_output(lambda g, m: g.save_to_kafka(
            self._build(g, m), brokers, topic, props, sink))

    def createOrReplaceTempView(self, name, schema=None):
        """Names this stream ``name`` for ``StreamingContext.sql``: an unbounded table
        of ``schema`` (``"ts TIMESTAMP, level STRING, n BIGINT"``; types ``STRING``,
        ``BIGINT``, ``DOUBLE``, ``BOOLEAN``, ``TIMESTAMP`` — a ``datetime`` or seconds
        since the epoch — and ``DATE``). Elements are tuples, lists or ``Row``s of the
        columns' values; without a schema the table is ``value STRING`` of ``str``
        elements."""
        self._ssc._require_not_started("a table")
        self._ssc._tables[name.lower()] = (self, schema or "value STRING")

    def slice(self, begin, end):
        """The RDDs of this stream's batches from ``begin`` to ``end`` (both included;
        ``datetime``s or seconds since the epoch) that it still remembers, oldest first:
        a stream keeps its batches for the duration given to
        ``StreamingContext.remember``. Call it after ``start``, from outside the job."""
        built = self._ssc._built
        if built is None:
            raise RuntimeError("slice: the StreamingContext has not started, so the stream "
                               "has no batches yet; call slice after start()")
        entry = built.get(id(self))
        if entry is None:
            raise ValueError("slice: this stream feeds no output operation, so it computes "
                             "no batches; give it one (e.g. foreachRDD) before start()")
        sc = self._ssc._sc
        return [RDD(parts, sc) for _, parts in entry[1].slice(_epoch_ms(begin), _epoch_ms(end))]

    def pprint(self, num=10):
        """Registers an output: prints the first ``num`` elements of every batch."""

        def take_and_print(time, rdd):
            taken = rdd.take(num + 1)
            print("-------------------------------------------")
            print("Time: %s" % time)
            print("-------------------------------------------")
            for record in taken[:num]:
                print(record)
            if len(taken) > num:
                print("...")
            print("", flush=True)

        self.foreachRDD(take_and_print)

    def saveAsTextFiles(self, prefix, suffix=None):
        """Registers an output: every batch as text files (``str`` of each element per
        line) in ``<prefix>-<time ms>[.<suffix>]``, written atomically: a batch run
        again after a crash replaces its directory with the same content."""
        self._output(lambda s: s.save_as_text_files(prefix, suffix))


def _partitions(result):
    """What a ``transform`` function returned, as partitions."""
    if isinstance(result, RDD):
        return result._parts
    return [list(result)]
