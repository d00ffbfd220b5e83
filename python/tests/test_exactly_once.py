"""Exactly once from Python: a job with a checkpoint SIGKILLed at random moments and
restarted ends with exact counts, in its files and in SQLite; a Python exception fails
the batch with its traceback; a failed batch is not committed."""

import ast
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lockgate import StreamingError
from lockgate.streaming import StreamingContext

JOB = Path(__file__).parent / "jobs" / "stateful_files.py"


def _latest_counts(out_dir):
    """The counts of the latest complete output batch (``counts-<ms>`` directories)."""
    batches = sorted(
        (p for p in Path(out_dir).glob("counts-*") if p.is_dir()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    if not batches:
        return None
    counts = {}
    for part in sorted(batches[-1].glob("part-*")):
        for line in part.read_text().splitlines():
            word, n = ast.literal_eval(line)
            counts[word] = n
    return counts


def _start(tmp_path, n):
    log = open(tmp_path / f"job-{n}.log", "w")
    env = dict(os.environ, RUST_LOG="warn")
    return subprocess.Popen(
        [sys.executable, str(JOB), str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "cp"),
         str(tmp_path / "counts.db")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )


def _wait_for(cond, what, proc=None, limit=120.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_job_recovers_exactly(tmp_path):
    rng = random.Random(int(os.environ.get("LOCKGATE_TEST_SEED", "7")))
    (tmp_path / "in").mkdir()
    expected = Counter()
    starts = 1
    proc = _start(tmp_path, starts)
    # Files present at the first start are not read (Spark's textFileStream), and a
    # restart before the first batch committed is such a first start: begin once the
    # job has committed a batch.
    commits = tmp_path / "cp" / "commits"
    _wait_for(lambda: commits.is_dir() and any(commits.iterdir()), "the first commit", proc)
    kills = 0
    try:
        for i in range(40):
            words = [f"w{rng.randrange(12)}" for _ in range(rng.randrange(1, 30))]
            expected.update(words)
            tmp = tmp_path / "in" / f".f{i}.tmp"
            tmp.write_text(" ".join(words) + "\n")
            tmp.rename(tmp_path / "in" / f"f{i}.txt")
            time.sleep(rng.uniform(0.0, 0.3))
            if rng.random() < 0.25:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                starts += 1
                proc = _start(tmp_path, starts)
        _wait_for(lambda: _latest_counts(tmp_path / "out") == dict(expected),
                  f"exact counts after {kills} SIGKILLs", proc)
    except AssertionError:
        logs = "".join((tmp_path / f"job-{n}.log").read_text()[-3000:] for n in range(1, starts + 1))
        raise AssertionError(f"latest counts {_latest_counts(tmp_path / 'out')}, "
                             f"expected {dict(expected)}; logs:\n{logs}") from None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert kills > 0
    # Each batch's counts inserted once into SQLite, whatever batches ran again.
    with sqlite3.connect(tmp_path / "counts.db") as db:
        sums = dict(db.execute("SELECT word, sum(n) FROM batch_counts GROUP BY word"))
        batches = db.execute("SELECT count(*), count(DISTINCT batch_id) FROM lockgate_offsets "
                             "WHERE sink = 'batch_counts'").fetchone()
    assert sums == dict(expected), sums
    assert batches[0] == batches[1] > 0, batches


def _failing_job(sc, make):
    ssc = StreamingContext(sc, 0.05)
    make(ssc.queueStream([[1, 2, 3]], default=[])).foreachRDD(lambda rdd: rdd.count())
    ssc.start()
    with pytest.raises(StreamingError) as e:
        ssc.awaitTermination(60)
    ssc.stop(stopSparkContext=False)
    return str(e.value)


def test_an_exception_fails_the_batch_with_its_traceback(sc):
    def divide(x):
        return 1 // (x - 2)

    msg = _failing_job(sc, lambda s: s.map(divide))
    assert "ZeroDivisionError" in msg and "divide" in msg and "1 // (x - 2)" in msg, msg


def test_an_exception_in_a_reduce_fails_the_batch(sc):
    def add_badly(a, b):
        raise ValueError(f"cannot add {a} and {b}")

    msg = _failing_job(sc, lambda s: s.map(lambda x: ("k", x)).reduceByKey(add_badly))
    assert "ValueError: cannot add" in msg and "add_badly" in msg, msg


def test_an_exception_in_foreach_rdd_fails_the_batch(sc):
    ssc = StreamingContext(sc, 0.05)

    def output(rdd):
        if not rdd.isEmpty():
            raise KeyError("no such sink")

    ssc.queueStream([[1]], default=[]).foreachRDD(output)
    ssc.start()
    with pytest.raises(StreamingError, match="KeyError: 'no such sink'"):
        ssc.awaitTermination(60)


def test_keyed_operations_name_a_non_pair(sc):
    msg = _failing_job(sc, lambda s: s.reduceByKey(lambda a, b: a + b))
    assert "(key, value) pairs, got an int" in msg, msg
