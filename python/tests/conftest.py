"""Helpers of the test suite: run a stream over queued batches and collect what an
operator makes of each batch."""

import pytest

from lockgate import SparkContext
from lockgate.streaming import StreamingContext

#: Batch interval of the tests' contexts, in seconds.
BATCH = 0.05


@pytest.fixture
def sc():
    """A SparkContext with two worker threads."""
    ctx = SparkContext("local[2]", "lockgate-tests")
    yield ctx
    ctx.stop()


def collect(sc, inputs, op, batches, sort=True, two=None):
    """Runs ``op`` (of one stream, or of two when ``two`` gives the second's batches)
    over queue streams of ``inputs`` and returns the first ``batches`` outputs, each
    sorted unless ``sort`` is false. Waits for the batches, not for a time."""
    ssc = StreamingContext(sc, BATCH)
    a = ssc.queueStream(inputs, default=[])
    if two is None:
        out_stream = op(a)
    else:
        out_stream = op(a, ssc.queueStream(two, default=[]))
    got = []
    out_stream.foreachRDD(lambda rdd: got.append(rdd.collect()))
    ssc.start()
    try:
        for _ in range(2000):
            if len(got) >= batches:
                break
            if ssc.awaitTerminationOrTimeout(BATCH):
                break
    finally:
        ssc.stop(stopSparkContext=False)
    assert len(got) >= batches, f"only {len(got)} batches: {got}"
    return [sorted(b, key=repr) if sort else b for b in got[:batches]]
