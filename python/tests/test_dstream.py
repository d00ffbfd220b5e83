"""The DStream operators, each checked batch by batch against what PySpark gives for the
same input (the expectations of PySpark's own ``test_dstream.py`` where it has them)."""

import operator

import pytest
from conftest import collect

from lockgate.streaming import StreamingContext


def test_map_flatmap_filter(sc):
    inputs = [[1, 2, 3], [4, 5]]
    assert collect(sc, inputs, lambda s: s.map(lambda x: x * 10), 2) == [[10, 20, 30], [40, 50]]
    assert collect(sc, inputs, lambda s: s.flatMap(lambda x: [x, x]), 2) == [
        [1, 1, 2, 2, 3, 3], [4, 4, 5, 5]]
    assert collect(sc, inputs, lambda s: s.filter(lambda x: x % 2 == 0), 2) == [[2], [4]]


def test_values_keep_their_python_types(sc):
    weird = [(1, "a", 2.5, None, True, b"x", [1, 2], {"k": 1}, 10**30, frozenset([3]))]
    (out,) = collect(sc, [weird], lambda s: s.map(lambda x: x), 1, sort=False)
    assert out == weird
    assert type(out[0][4]) is bool and type(out[0][6]) is list


def test_map_partitions_calls_once_per_partition(sc):
    out = collect(sc, [[1, 2, 3, 4]], lambda s: s.mapPartitions(lambda it: [sum(it)]), 1)
    assert sum(out[0]) == 10 and len(out[0]) <= 2
    out = collect(sc, [[1, 2, 3, 4]],
                  lambda s: s.mapPartitionsWithIndex(lambda i, it: [(i, len(list(it)))]), 1)
    assert sum(n for _, n in out[0]) == 4


def test_count_count_by_value_reduce_glom(sc):
    inputs = [["a", "b", "a"], [], ["c"]]
    assert collect(sc, inputs, lambda s: s.count(), 3) == [[3], [0], [1]]
    assert collect(sc, inputs, lambda s: s.countByValue(), 3) == [
        [("a", 2), ("b", 1)], [], [("c", 1)]]
    assert collect(sc, [[1, 2, 3, 4]], lambda s: s.reduce(operator.add), 1) == [[10]]
    (parts,) = collect(sc, [[1, 2, 3, 4]], lambda s: s.glom(), 1, sort=False)
    assert sorted(x for p in parts for x in p) == [1, 2, 3, 4]


def test_union_and_repartition(sc):
    out = collect(sc, [[1], [2]], lambda a, b: a.union(b), 2, two=[[10], [20]])
    assert out == [[1, 10], [2, 20]]
    (parts,) = collect(sc, [list(range(10))], lambda s: s.repartition(5).glom(), 1, sort=False)
    assert len(parts) == 5 and sorted(x for p in parts for x in p) == list(range(10))


def test_keyed_operations(sc):
    inputs = [[("a", 1), ("b", 2), ("a", 3)], [("b", 4)]]
    assert collect(sc, inputs, lambda s: s.reduceByKey(operator.add), 2) == [
        [("a", 4), ("b", 2)], [("b", 4)]]
    assert collect(sc, inputs, lambda s: s.reduceByKey(operator.add, 3), 1) == [
        [("a", 4), ("b", 2)]]
    assert collect(sc, inputs, lambda s: s.mapValues(lambda v: v * 2), 1) == [
        [("a", 2), ("a", 6), ("b", 4)]]
    assert collect(sc, inputs, lambda s: s.flatMapValues(lambda v: range(v)), 2)[1] == [
        ("b", 0), ("b", 1), ("b", 2), ("b", 3)]
    grouped = collect(sc, inputs, lambda s: s.groupByKey(), 1)[0]
    assert sorted((k, sorted(v)) for k, v in grouped) == [("a", [1, 3]), ("b", [2])]
    combined = collect(sc, inputs, lambda s: s.combineByKey(
        lambda v: [v], lambda c, v: c + [v], lambda c1, c2: c1 + c2), 1)[0]
    assert sorted((k, sorted(c)) for k, c in combined) == [("a", [1, 3]), ("b", [2])]
    (parts,) = collect(sc, inputs, lambda s: s.partitionBy(2).glom(), 1, sort=False)
    keys_per_part = [set(k for k, _ in p) for p in parts]
    assert len(parts) == 2 and not (keys_per_part[0] & keys_per_part[1])


def test_joins_and_cogroup(sc):
    left = [[("a", 1), ("b", 2)]]
    right = [[("a", "x"), ("c", "y")]]
    assert collect(sc, left, lambda a, b: a.join(b), 1, two=right) == [[("a", (1, "x"))]]
    assert collect(sc, left, lambda a, b: a.leftOuterJoin(b), 1, two=right) == [
        [("a", (1, "x")), ("b", (2, None))]]
    assert collect(sc, left, lambda a, b: a.rightOuterJoin(b), 1, two=right) == [
        [("a", (1, "x")), ("c", (None, "y"))]]
    assert collect(sc, left, lambda a, b: a.fullOuterJoin(b), 1, two=right) == [
        [("a", (1, "x")), ("b", (2, None)), ("c", (None, "y"))]]
    assert collect(sc, left, lambda a, b: a.cogroup(b), 1, two=right) == [
        [("a", ([1], ["x"])), ("b", ([2], [])), ("c", ([], ["y"]))]]


def test_transform_and_transform_with(sc):
    inputs = [[3, 1, 2]]
    out = collect(sc, inputs, lambda s: s.transform(lambda rdd: rdd.map(lambda x: x + 1)), 1)
    assert out == [[2, 3, 4]]
    out = collect(sc, inputs, lambda s: s.transform(lambda t, rdd: [(type(t).__name__, rdd.count())]), 1)
    assert out == [[("datetime", 3)]]
    out = collect(sc, [[1, 2]], lambda a, b: a.transformWith(lambda x, y: x.union(y), b), 1,
                  two=[[3]])
    assert out == [[1, 2, 3]]


def test_windows(sc):
    from conftest import BATCH

    inputs = [[1], [2], [3], [4]]
    w = 2 * BATCH
    assert collect(sc, inputs, lambda s: s.window(w, BATCH), 4) == [[1], [1, 2], [2, 3], [3, 4]]
    assert collect(sc, inputs, lambda s: s.countByWindow(w, BATCH), 4) == [[1], [2], [2], [2]]
    for inv in (None, operator.sub):
        assert collect(sc, inputs, lambda s: s.reduceByWindow(operator.add, inv, w, BATCH), 4) == [
            [1], [3], [5], [7]]
    pairs = [[("a", 1)], [("a", 2), ("b", 1)], [("b", 1)], []]
    for inv in (None, operator.sub):
        out = collect(sc, pairs, lambda s: s.reduceByKeyAndWindow(
            operator.add, inv, w, BATCH, filterFunc=lambda kv: kv[1] != 0), 4)
        assert out == [[("a", 1)], [("a", 3), ("b", 1)], [("a", 2), ("b", 2)], [("b", 1)]], inv
    grouped = collect(sc, pairs, lambda s: s.groupByKeyAndWindow(w, BATCH), 3)
    assert [sorted((k, sorted(v)) for k, v in b) for b in grouped] == [
        [("a", [1])], [("a", [1, 2]), ("b", [1])], [("a", [2]), ("b", [1, 1])]]
    counted = collect(sc, [["x"], ["x", "y"], []], lambda s: s.countByValueAndWindow(w, BATCH), 3)
    assert counted == [[("x", 1)], [("x", 2), ("y", 1)], [("x", 1), ("y", 1)]]


def test_update_state_by_key(sc):
    inputs = [[("a", 1)], [("a", 2), ("b", 5)], [("b", 1)], []]

    def update(values, state):
        total = sum(values) + (state or 0)
        return None if total > 5 else total

    out = collect(sc, inputs, lambda s: s.updateStateByKey(update), 4)
    assert out == [[("a", 1)], [("a", 3), ("b", 5)], [("a", 3)], [("a", 3)]]


def test_pprint_prints_pyspark_format(sc, capsys):
    from lockgate.streaming import StreamingContext

    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([list(range(12))], default=[]).pprint()
    ssc.start()
    ssc.awaitTerminationOrTimeout(0.3)
    ssc.stop(stopSparkContext=False)
    out = capsys.readouterr().out
    assert "-------------------------------------------\nTime: " in out
    assert "\n0\n1\n" in out and "\n9\n...\n" in out and "\n10\n" not in out


def test_slice_returns_the_remembered_batches(sc):
    ssc = StreamingContext(sc, 0.05)
    ssc.remember(60)
    doubled = ssc.queueStream([[1], [2], [3]], default=[]).map(lambda x: x * 2)
    seen = []
    doubled.foreachRDD(lambda t, rdd: seen.append((t, rdd.collect())))
    with pytest.raises(RuntimeError, match="has not started"):
        doubled.slice(0, 1)
    unused = doubled.map(lambda x: x)
    ssc.start()
    try:
        for _ in range(2000):
            if len(seen) >= 4 or ssc.awaitTerminationOrTimeout(0.05):
                break
        first, last = seen[0][0], seen[2][0]
        got = [rdd.collect() for rdd in doubled.slice(first, last)]
        assert got == [[2], [4], [6]], got
        # Seconds since the epoch work too, and a time between batches moves back.
        assert [r.collect() for r in doubled.slice(last.timestamp() + 0.01, last)] == [[6]]
        with pytest.raises(ValueError, match="feeds no output"):
            unused.slice(first, last)
    finally:
        ssc.stop(stopSparkContext=False)
