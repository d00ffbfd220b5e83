"""``StreamingContext.sql``: queries over registered streams, batch by batch, with their
state kept across batches and restarts; ``foreachBatch`` with pyarrow tables; errors
named."""

import datetime

import pytest

from lockgate import StreamingError
from lockgate.sql import Row
from lockgate.streaming import StreamingContext


def run_batches(ssc, out, n):
    """Starts ``ssc`` and waits until ``out`` holds ``n`` batches."""
    ssc.start()
    try:
        for _ in range(2000):
            if len(out) >= n or ssc.awaitTerminationOrTimeout(0.05):
                break
    finally:
        ssc.stop(stopSparkContext=False)
    assert len(out) >= n, out


def test_a_running_count_gives_the_groups_each_batch_changed(sc):
    ssc = StreamingContext(sc, 0.05)
    lines = ssc.queueStream([["a b", "a"], ["b c"], []], default=[])
    lines.flatMap(lambda line: line.split(" ")).createOrReplaceTempView("words", "word STRING")
    counts = ssc.sql("SELECT word, count(*) AS n FROM words GROUP BY word")
    out = []
    counts.foreachRDD(lambda rdd: out.append(sorted(rdd.collect())))
    run_batches(ssc, out, 3)
    assert out[:3] == [
        [Row(word="a", n=2), Row(word="b", n=1)],
        [Row(word="b", n=2), Row(word="c", n=1)],
        [],
    ]
    assert out[0][0].word == "a" and out[0][0].n == 2


def test_event_time_windows_in_append_mode_with_a_watermark(sc):
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    at = lambda s: t0 + datetime.timedelta(seconds=s)  # noqa: E731
    batches = [
        [(at(1), "ERROR"), (at(2), "INFO"), (at(4), "ERROR")],
        [(at(12), "ERROR"), (at(3), "ERROR")],    # 3: late but within the watermark
        [(at(30), "ERROR"), (at(5), "ERROR")],    # 5: behind the watermark, dropped
    ]
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream(batches, default=[]).createOrReplaceTempView(
        "logs", "ts TIMESTAMP, level STRING")
    windows = ssc.sql(
        "SELECT window.start, window.end, count(*) AS n FROM logs WHERE level = 'ERROR' "
        "GROUP BY window(ts, '10 seconds')",
        outputMode="append", watermark=("ts", "5 seconds"))
    out = []
    windows.foreachRDD(lambda rdd: out.extend(rdd.collect()))
    run_batches(ssc, out, 2)
    # Each closed window once; 3 came late within the watermark, 5 behind it.
    assert sorted(out) == [
        Row(start=at(0), end=at(10), n=3),
        Row(start=at(10), end=at(20), n=1),
    ], out


def test_foreach_batch_hands_over_pyarrow_tables(sc):
    pa = pytest.importorskip("pyarrow")
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[("a", 1.5), ("b", 2.0), ("a", 0.5)]], default=[]) \
        .createOrReplaceTempView("t", "k STRING, x DOUBLE")
    tables = []
    ssc.sql("SELECT k, sum(x) AS total FROM t GROUP BY k") \
        .foreachBatch(lambda table, batch_id: tables.append((batch_id, table)))
    run_batches(ssc, tables, 2)
    batch_id, first = tables[0]
    assert isinstance(first, pa.Table) and first.column_names == ["k", "total"]
    assert sorted(zip(*first.to_pydict().values())) == [("a", 2.0), ("b", 2.0)]
    assert tables[1][1].num_rows == 0 and tables[1][1].column_names == ["k", "total"]
    assert tables[1][0] == batch_id + 1


def test_state_survives_a_restart_from_the_checkpoint(sc, tmp_path):
    watched = tmp_path / "in"
    watched.mkdir()

    def run(files):
        ssc = StreamingContext(sc, 0.1)
        ssc.checkpoint(str(tmp_path / "cp"))
        lines = ssc.textFileStream(str(watched))
        lines.flatMap(lambda line: line.split()).createOrReplaceTempView("words")
        out = []
        ssc.sql("SELECT value AS word, count(*) AS n FROM words GROUP BY value") \
            .foreachRDD(lambda rdd: out.extend(rdd.collect()))
        ssc.start()
        try:
            for _ in range(100):
                if ssc.awaitTerminationOrTimeout(0.05):
                    break
            for i, text in files:
                tmp = tmp_path / f"f{i}.tmp"
                tmp.write_text(text + "\n")
                tmp.rename(watched / f"f{i}.txt")
            for _ in range(2000):
                if sum(r.n for r in out if r.word == "x") >= 1 and any(
                        r.word == "y" for r in out) or ssc.awaitTerminationOrTimeout(0.05):
                    break
        finally:
            ssc.stop(stopSparkContext=False, stopGraceFully=True)
        return {r.word: r.n for r in out}

    assert run([(0, "x y x")]) == {"x": 2, "y": 1}
    # The same query declared again over the checkpoint: its counts go on.
    assert run([(1, "y z")]) == {"y": 2, "z": 1}


def test_bad_schemas_and_rows_are_named(sc):
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[("a", "not a number")]], default=[]) \
        .createOrReplaceTempView("t", "k STRING, n BIGINT")
    ssc.sql("SELECT k, sum(n) AS total FROM t GROUP BY k").foreachRDD(lambda rdd: rdd.count())
    ssc.start()
    with pytest.raises(StreamingError, match=r"SQL table `t`: column `n` \(Int64\): got a str"):
        ssc.awaitTermination(60)
    ssc.stop(stopSparkContext=False)

    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[1]], default=[]).createOrReplaceTempView("u", "n WHOLE")
    ssc.sql("SELECT n FROM u").foreachRDD(lambda rdd: rdd.count())
    with pytest.raises(ValueError, match="type WHOLE of `n`"):
        ssc.start()
    ssc.stop(stopSparkContext=False)
