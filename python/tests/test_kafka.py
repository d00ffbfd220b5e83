"""``KafkaUtils.createDirectStream`` against a real Kafka-protocol broker (tansu, started
by ``scripts/kafka.sh``): every record once with its batch's offset ranges, decoders and
a message handler, explicit starting offsets, and a bad configuration named."""

import os
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from lockgate import SparkConf, SparkContext, StreamingError
from lockgate.streaming import StreamingContext
from lockgate.streaming.kafka import KafkaUtils, OffsetRange, TopicAndPartition

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kafka.sh"


@pytest.fixture(scope="module")
def brokers(tmp_path_factory):
    env = dict(os.environ, LOCKGATE_KAFKA_DIR=str(tmp_path_factory.mktemp("kafka")))
    out = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True)


def topic_with(brokers, name, partitions, records):
    """Creates ``name`` and writes ``records`` (``(partition, key, value)``) in order."""
    admin = AdminClient({"bootstrap.servers": brokers})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(30)
    # One record per request: the test broker reports a wrong end offset after a
    # request of several.
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 0, "batch.num.messages": 1})
    for partition, key, value in records:
        p.produce(name, value=value, key=key, partition=partition)
        p.flush(30)


def run_until(ssc, stream, n, convert=lambda rdd: rdd.collect()):
    """Runs ``ssc`` until ``n`` elements came; every non-empty batch's (ranges, elements)."""
    got = []

    def keep(rdd):
        elements = convert(rdd)
        if elements:
            got.append((rdd.offsetRanges(), elements))

    stream.foreachRDD(keep)
    ssc.start()
    try:
        for _ in range(1200):
            if sum(len(e) for _, e in got) >= n or ssc.awaitTerminationOrTimeout(0.1):
                break
    finally:
        ssc.stop(stopSparkContext=False)
    return got


def test_every_record_once_with_its_batchs_offset_ranges(brokers):
    records = [(i % 2, f"k{i}".encode(), f"v{i}".encode()) for i in range(40)]
    topic_with(brokers, "py-direct", 2, records)
    conf = SparkConf().set("spark.streaming.kafka.maxRatePerPartition", "50")
    sc = SparkContext("local[2]", "kafka-rate", conf=conf)
    try:
        ssc = StreamingContext(sc, 0.2)
        stream = KafkaUtils.createDirectStream(
            ssc, ["py-direct"], {"metadata.broker.list": brokers, "auto.offset.reset": "smallest"})
        got = run_until(ssc, stream, 40)
    finally:
        sc.stop()
    elements = sorted(e for _, batch in got for e in batch)
    assert elements == sorted((f"k{i}", f"v{i}") for i in range(40))
    # 50 records per partition and second at 0.2 s batches: at most 10 per partition
    # per batch, in ranges that follow each other from offset 0.
    assert len(got) >= 2, got
    next_from = {0: 0, 1: 0}
    for ranges, batch in got:
        assert sum(r.untilOffset - r.fromOffset for r in ranges) == len(batch)
        for r in ranges:
            assert r.topic == "py-direct" and r.untilOffset - r.fromOffset <= 10, ranges
            if r.untilOffset > r.fromOffset:
                assert r.fromOffset >= next_from[r.partition], (r, next_from)
                next_from[r.partition] = r.untilOffset
    assert next_from == {0: 20, 1: 20}


def test_a_message_handler_and_explicit_starting_offsets(sc, brokers):
    records = [(0, None, f"m{i}".encode()) for i in range(10)]
    topic_with(brokers, "py-handler", 1, records)
    ssc = StreamingContext(sc, 0.2)
    stream = KafkaUtils.createDirectStream(
        ssc, "py-handler", {"bootstrap.servers": brokers},
        fromOffsets={TopicAndPartition("py-handler", 0): 6},
        valueDecoder=lambda b: b.decode().upper(),
        messageHandler=lambda m: (m.partition, m.offset, m.key, m.message))
    got = run_until(ssc, stream, 4)
    assert sorted(e for _, batch in got for e in batch) == [
        (0, o, None, f"M{o}") for o in range(6, 10)]
    assert got[0][0][0] == OffsetRange("py-handler", 0, 6, got[0][0][0].untilOffset)


def test_text_that_is_not_utf8_fails_the_batch_naming_the_record(sc, brokers):
    topic_with(brokers, "py-binary", 1, [(0, None, b"\xff\xfe")])
    ssc = StreamingContext(sc, 0.2)
    stream = KafkaUtils.createDirectStream(
        ssc, ["py-binary"], {"metadata.broker.list": brokers, "auto.offset.reset": "smallest"})
    stream.foreachRDD(lambda rdd: rdd.count())
    ssc.start()
    with pytest.raises(StreamingError, match="offset 0 of partition 0 of `py-binary` is not UTF-8"):
        ssc.awaitTermination(60)
    ssc.stop(stopSparkContext=False)


def test_bad_parameters_are_named(sc):
    ssc = StreamingContext(sc, 0.2)
    with pytest.raises(ValueError, match="metadata.broker.list or bootstrap.servers"):
        KafkaUtils.createDirectStream(ssc, ["t"], {})
    with pytest.raises(ValueError, match="auto.offset.reset must be largest or smallest"):
        KafkaUtils.createDirectStream(ssc, ["t"], {"bootstrap.servers": "x:1",
                                                   "auto.offset.reset": "newest"})
