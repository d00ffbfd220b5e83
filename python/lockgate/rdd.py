"""``RDD``: one batch of a stream as PySpark's ``foreachRDD`` and ``transform`` functions
receive it, and what ``SparkContext.parallelize`` makes for queue streams.

It holds the batch's partitions in this process; transformations apply at once and
return a new RDD, actions return values. The common actions of PySpark's RDD are here
with its names.
"""

import itertools
from collections import defaultdict
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["RDD"]


def _portable_hash(x):
    """A hash stable between runs for the types partitioning sees most (``str`` hashes
    are salted per process in Python)."""
    if x is None:
        return 0
    if isinstance(x, tuple):
        h = 0x345678
        for i in x:
            h ^= _portable_hash(i)
            h *= 1000003
            h &= 0xFFFFFFFFFFFFFFFF
        return h
    if isinstance(x, str):
        h = 0
        for ch in x.encode("utf-8"):
            h = (h * 31 + ch) & 0xFFFFFFFF
        return h
    return hash(x)


class RDD(Generic[T]):
    """A batch of elements in partitions (see the module's documentation)."""

    def __init__(self, partitions, ctx=None):
        """An RDD of ``partitions`` (lists of elements)."""
        self._parts = [list(p) for p in partitions]
        self.ctx = ctx

    @property
    def context(self):
        """The ``SparkContext`` the RDD belongs to."""
        return self.ctx

    def _new(self, parts):
        return RDD(parts, self.ctx)

    # -- actions --------------------------------------------------------------------

    def collect(self):
        """Every element, partition by partition."""
        return [x for p in self._parts for x in p]

    def take(self, num):
        """The first ``num`` elements."""
        return list(itertools.islice(self.toLocalIterator(), num))

    def first(self):
        """The first element; ``ValueError`` when there is none."""
        for x in self.toLocalIterator():
            return x
        raise ValueError("RDD is empty")

    def count(self):
        """The number of elements."""
        return sum(len(p) for p in self._parts)

    def isEmpty(self):
        """Whether there are no elements."""
        return all(len(p) == 0 for p in self._parts)

    def foreach(self, f):
        """Calls ``f`` on every element."""
        for p in self._parts:
            for x in p:
                f(x)

    def foreachPartition(self, f):
        """Calls ``f`` with an iterator over each partition."""
        for p in self._parts:
            f(iter(p))

    def toLocalIterator(self, prefetchPartitions=False):
        """An iterator over the elements."""
        return (x for p in self._parts for x in p)

    def reduce(self, f):
        """The elements combined with ``f``; ``ValueError`` when there are none."""
        it = self.toLocalIterator()
        try:
            acc = next(it)
        except StopIteration:
            raise ValueError("Can not reduce() empty RDD") from None
        for x in it:
            acc = f(acc, x)
        return acc

    def fold(self, zeroValue, op):
        """The elements combined with ``op`` from ``zeroValue``."""
        acc = zeroValue
        for x in self.toLocalIterator():
            acc = op(acc, x)
        return acc

    def sum(self):
        """The sum of the elements."""
        return sum(self.toLocalIterator())

    def max(self, key=None):
        """The largest element."""
        return max(self.toLocalIterator(), key=key)

    def min(self, key=None):
        """The smallest element."""
        return min(self.toLocalIterator(), key=key)

    def countByValue(self):
        """A dict of each element's count."""
        out = defaultdict(int)
        for x in self.toLocalIterator():
            out[x] += 1
        return dict(out)

    def countByKey(self):
        """A dict of each key's number of pairs."""
        out = defaultdict(int)
        for k, _ in self.toLocalIterator():
            out[k] += 1
        return dict(out)

    def collectAsMap(self):
        """The ``(key, value)`` pairs as a dict."""
        return dict(self.collect())

    def getNumPartitions(self):
        """The number of partitions."""
        return len(self._parts)

    def glom(self):
        """An RDD of each partition as a list."""
        return self._new([[list(p)] for p in self._parts])

    # -- transformations ------------------------------------------------------------

    def map(self, f, preservesPartitioning=False):
        """``f`` applied to every element."""
        return self._new([[f(x) for x in p] for p in self._parts])

    def flatMap(self, f, preservesPartitioning=False):
        """The elements of the iterables ``f`` returns."""
        return self._new([[y for x in p for y in f(x)] for p in self._parts])

    def filter(self, f):
        """The elements for which ``f`` is true."""
        return self._new([[x for x in p if f(x)] for p in self._parts])

    def mapPartitions(self, f, preservesPartitioning=False):
        """``f(iterator)`` over each partition."""
        return self._new([list(f(iter(p)) or []) for p in self._parts])

    def mapPartitionsWithIndex(self, f, preservesPartitioning=False):
        """``f(index, iterator)`` over each partition."""
        return self._new([list(f(i, iter(p)) or []) for i, p in enumerate(self._parts)])

    def mapValues(self, f):
        """``f`` applied to every value of ``(key, value)`` pairs."""
        return self.map(lambda kv: (kv[0], f(kv[1])))

    def flatMapValues(self, f):
        """The values of the iterables ``f`` returns, each with its key."""
        return self.flatMap(lambda kv: ((kv[0], v) for v in f(kv[1])))

    def keys(self):
        """The keys of ``(key, value)`` pairs."""
        return self.map(lambda kv: kv[0])

    def values(self):
        """The values of ``(key, value)`` pairs."""
        return self.map(lambda kv: kv[1])

    def union(self, other):
        """The elements of both RDDs."""
        return self._new(self._parts + other._parts)

    def distinct(self, numPartitions=None):
        """Each element once."""
        seen = dict.fromkeys(self.toLocalIterator())
        return self._spread(list(seen), numPartitions)

    def _spread(self, items, numPartitions=None):
        n = max(1, numPartitions or len(self._parts) or 1)
        parts = [[] for _ in range(n)]
        for i, x in enumerate(items):
            parts[i % n].append(x)
        return self._new(parts)

    def _by_key(self, numPartitions):
        n = max(1, numPartitions or len(self._parts) or 1)
        groups = [dict() for _ in range(n)]
        for k, v in self.toLocalIterator():
            groups[_portable_hash(k) % n].setdefault(k, []).append(v)
        return groups

    def reduceByKey(self, func, numPartitions=None, partitionFunc=None):
        """The values of each key combined with ``func``."""
        out = []
        for g in self._by_key(numPartitions):
            part = []
            for k, vs in g.items():
                acc = vs[0]
                for v in vs[1:]:
                    acc = func(acc, v)
                part.append((k, acc))
            out.append(part)
        return self._new(out)

    def groupByKey(self, numPartitions=None, partitionFunc=None):
        """Each key with the list of its values."""
        return self._new([list(g.items()) for g in self._by_key(numPartitions)])

    def partitionBy(self, numPartitions, partitionFunc=_portable_hash):
        """The pairs in ``numPartitions`` partitions by ``partitionFunc(key)``."""
        parts = [[] for _ in range(max(1, numPartitions))]
        for kv in self.toLocalIterator():
            parts[partitionFunc(kv[0]) % len(parts)].append(kv)
        return self._new(parts)

    def repartition(self, numPartitions):
        """The elements spread evenly over ``numPartitions`` partitions."""
        return self._spread(self.collect(), numPartitions)

    def coalesce(self, numPartitions, shuffle=False):
        """The elements in at most ``numPartitions`` partitions."""
        return self.repartition(min(numPartitions, max(1, len(self._parts))))

    def sortBy(self, keyfunc, ascending=True, numPartitions=None):
        """The elements sorted by ``keyfunc``."""
        items = sorted(self.toLocalIterator(), key=keyfunc, reverse=not ascending)
        return self._new([items])

    def sortByKey(self, ascending=True, numPartitions=None, keyfunc=lambda x: x):
        """The pairs sorted by key."""
        return self.sortBy(lambda kv: keyfunc(kv[0]), ascending)

    def join(self, other, numPartitions=None):
        """Pairs of both RDDs with the same key: ``(k, (v, w))``."""
        right = defaultdict(list)
        for k, w in other.toLocalIterator():
            right[k].append(w)
        return self._new([[(k, (v, w)) for k, v in self.toLocalIterator() for w in right.get(k, ())]])

    def cache(self):
        """Returns the RDD (it is in memory already)."""
        return self

    persist = cache

    def unpersist(self, blocking=False):
        """Returns the RDD (nothing to release)."""
        return self

    def __repr__(self):
        return f"RDD({self.getNumPartitions()} partitions, {self.count()} elements)"
