"""The transactional sinks from Python against real servers: PostgreSQL (started by
``scripts/postgres.sh``) upserting running counts, and Kafka (``scripts/kafka.sh``) with
one transaction per batch; a wrong element named."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from lockgate import StreamingError
from lockgate.streaming import StreamingContext

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def server(script, env_var, tmp_path_factory):
    # Not under pytest's directory: the server may run as another user (postgres),
    # which must reach its directory.
    env = dict(os.environ, **{env_var: tempfile.mkdtemp(prefix=f"lockgate-py-{script}-")})
    out = subprocess.run([str(SCRIPTS / f"{script}.sh"), "start"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1], env


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    url, env = server("postgres", "LOCKGATE_PG_DIR", tmp_path_factory)
    yield url
    subprocess.run([str(SCRIPTS / "postgres.sh"), "stop"], env=env, capture_output=True)


@pytest.fixture(scope="module")
def brokers(tmp_path_factory):
    b, env = server("kafka", "LOCKGATE_KAFKA_DIR", tmp_path_factory)
    yield b
    subprocess.run([str(SCRIPTS / "kafka.sh"), "stop"], env=env, capture_output=True)


def run(ssc, seconds):
    """Runs ``ssc`` for ``seconds``, then stops it gracefully."""
    ssc.start()
    try:
        ssc.awaitTerminationOrTimeout(seconds)
    finally:
        ssc.stop(stopSparkContext=False, stopGraceFully=True)


def psql(url, query):
    out = subprocess.run(["psql", url, "-At", "-F", ",", "-c", query], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return [tuple(line.split(",")) for line in out.stdout.splitlines()]


def test_running_counts_upserted_into_postgres(sc, postgres):
    ssc = StreamingContext(sc, 0.05)
    words = ssc.queueStream([["a", "b", "a"], ["b"], ["c"]], default=[])
    counts = words.map(lambda w: (w, 1)).updateStateByKey(
        lambda new, total: sum(new) + (total or 0))
    counts.saveToDatabase(postgres, "py_counts", "word STRING, n BIGINT", key="word")
    run(ssc, 3)
    assert psql(postgres, "SELECT word, n FROM py_counts ORDER BY word") == [
        ("a", "2"), ("b", "2"), ("c", "1")]
    # One row per batch in the offsets table, under the sink's name.
    n, distinct = psql(postgres, "SELECT count(*), count(DISTINCT batch_id) "
                                 "FROM lockgate_offsets WHERE sink = 'py_counts'")[0]
    assert n == distinct and int(n) >= 3


def test_records_written_to_kafka_in_transactions(sc, brokers):
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic("py-out", 1, 1)]).values():
        f.result(30)
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[("k1", "v1"), "v2"], [(None, b"v3")]], default=[]) \
        .saveToKafka(brokers, "py-out", {"linger.ms": 0, "batch.num.messages": 1})
    run(ssc, 3)
    c = Consumer({"bootstrap.servers": brokers, "group.id": "py-out-check",
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe(["py-out"])
    got = []
    for _ in range(100):
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append((m.key() or b"", m.value()))
        if len(got) >= 3:
            break
    c.close()
    assert sorted(got) == [(b"", b"v2"), (b"", b"v3"), (b"k1", b"v1")], got


def test_a_row_that_does_not_fit_fails_the_batch(sc, tmp_path):
    ssc = StreamingContext(sc, 0.05)
    ssc.queueStream([[("a", "two")]], default=[]).saveToDatabase(
        f"sqlite:{tmp_path / 'db.sqlite'}", "t", "word STRING, n BIGINT")
    ssc.start()
    with pytest.raises(StreamingError, match=r"database table `t`: column `n` \(BigInt\): got a str"):
        ssc.awaitTermination(60)
    ssc.stop(stopSparkContext=False)
