"""PySpark's ``pyspark.streaming.kafka`` (Spark 2's Kafka module):
``KafkaUtils.createDirectStream``, a direct stream over Kafka topics with an offset range
per partition and batch::

    from lockgate.streaming.kafka import KafkaUtils

    stream = KafkaUtils.createDirectStream(ssc, ["logs"], {"metadata.broker.list": brokers})
    stream.foreachRDD(lambda rdd: print(rdd.offsetRanges()))

Each batch reads the offset ranges its plan logged, so with a checkpoint a batch re-run
after a crash reads exactly the records it read first (exactly once end to end with the
file outputs). ``transform`` and ``foreachRDD`` of the stream itself receive a
:class:`KafkaRDD` whose ``offsetRanges()`` are the batch's.
"""

from lockgate.rdd import RDD
from lockgate.streaming.dstream import DStream

__all__ = ["Broker", "KafkaMessageAndMetadata", "KafkaRDD", "KafkaUtils", "OffsetRange",
           "TopicAndPartition", "utf8_decoder"]


def utf8_decoder(s):
    """UTF-8 bytes as text (``None`` stays ``None``): the default key and value decoder."""
    if s is None:
        return None
    return s.decode("utf-8")


class OffsetRange:
    """The records ``[fromOffset, untilOffset)`` of one topic partition in one batch."""

    def __init__(self, topic, partition, fromOffset, untilOffset):
        self.topic = topic
        self.partition = partition
        self.fromOffset = fromOffset
        self.untilOffset = untilOffset

    def __eq__(self, other):
        return isinstance(other, OffsetRange) and (
            self.topic, self.partition, self.fromOffset, self.untilOffset) == (
            other.topic, other.partition, other.fromOffset, other.untilOffset)

    def __hash__(self):
        return hash((self.topic, self.partition, self.fromOffset, self.untilOffset))

    def __repr__(self):
        return "OffsetRange(topic: %s, partition: %d, range: [%d -> %d])" % (
            self.topic, self.partition, self.fromOffset, self.untilOffset)


class TopicAndPartition:
    """A topic partition, the key of ``createDirectStream``'s ``fromOffsets``."""

    def __init__(self, topic, partition):
        self._topic = topic
        self._partition = partition

    def __eq__(self, other):
        return isinstance(other, TopicAndPartition) and (
            self._topic, self._partition) == (other._topic, other._partition)

    def __hash__(self):
        return hash((self._topic, self._partition))

    def __repr__(self):
        return f"TopicAndPartition({self._topic!r}, {self._partition})"


class Broker:
    """A broker's host and port (kept for PySpark's API)."""

    def __init__(self, host, port):
        self._host = host
        self._port = port


class KafkaMessageAndMetadata:
    """A record as ``messageHandler`` receives it: ``topic``, ``partition``, ``offset``,
    ``key`` and ``message`` (key and message decoded by the decoders)."""

    def __init__(self, topic, partition, offset, key, message):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.message = message

    def __repr__(self):
        return (f"KafkaMessageAndMetadata(topic={self.topic!r}, partition={self.partition}, "
                f"offset={self.offset}, key={self.key!r}, message={self.message!r})")


class KafkaRDD(RDD):
    """A batch of a Kafka direct stream: an RDD that knows the offset ranges it read."""

    def __init__(self, partitions, ctx, ranges):
        super().__init__(partitions, ctx)
        self._ranges = ranges

    def offsetRanges(self):
        """The batch's :class:`OffsetRange` per topic partition."""
        return list(self._ranges)


class KafkaDStream(DStream):
    """A Kafka direct stream: its own ``transform`` and ``foreachRDD`` functions receive
    a :class:`KafkaRDD`."""

    def __init__(self, ssc, make):
        super().__init__(ssc, make)
        self._log = None

    def _rdd(self, ms, parts, ctx):
        ranges = [OffsetRange(*r) for r in self._log.ranges(ms)] if self._log else []
        return KafkaRDD(parts, ctx, ranges)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_log"] = None
        return state


_LATEST = {"largest": True, "latest": True, "smallest": False, "earliest": False}


class KafkaUtils:
    """PySpark's ``KafkaUtils``."""

    @staticmethod
    def createDirectStream(ssc, topics, kafkaParams, fromOffsets=None,
                           keyDecoder=utf8_decoder, valueDecoder=utf8_decoder,
                           messageHandler=None):
        """A direct stream of ``topics``: ``(key, value)`` per record, decoded by
        ``keyDecoder`` and ``valueDecoder`` (UTF-8 by default, decoded by the engine), or
        ``messageHandler(KafkaMessageAndMetadata)``.

        ``kafkaParams``: ``metadata.broker.list`` or ``bootstrap.servers`` (required);
        ``auto.offset.reset`` ``largest`` (the default, as in Spark's module) or
        ``smallest``: where partitions start without a checkpointed position or a
        ``fromOffsets`` entry (a dict of :class:`TopicAndPartition` → offset);
        ``group.id`` commits completed offsets for lag tools; any other key is a
        librdkafka consumer setting. ``spark.streaming.kafka.maxRatePerPartition`` in
        the SparkConf limits the records per partition and second."""
        if isinstance(topics, str):
            topics = [topics]
        if not topics:
            raise ValueError("createDirectStream: give at least one topic")
        params = dict(kafkaParams or {})
        brokers = params.pop("metadata.broker.list", None) or params.pop("bootstrap.servers",
                                                                          None)
        params.pop("metadata.broker.list", None)
        if not brokers:
            raise ValueError("createDirectStream: kafkaParams must give the brokers "
                             "(metadata.broker.list or bootstrap.servers)")
        reset = str(params.pop("auto.offset.reset", "largest")).lower()
        if reset not in _LATEST:
            raise ValueError(f"createDirectStream: auto.offset.reset must be largest or "
                             f"smallest, got {reset!r}")
        group = params.pop("group.id", None)
        rate = ssc.sparkContext.getConf().get("spark.streaming.kafka.maxRatePerPartition")
        per_batch = None
        if rate is not None:
            per_batch = max(1, int(float(rate) * ssc._batch_ms / 1000))
        offsets = [(tp._topic, int(tp._partition), int(o))
                   for tp, o in (fromOffsets or {}).items()]
        properties = [(str(k), str(v)) for k, v in params.items()]
        raw = not (keyDecoder is utf8_decoder and valueDecoder is utf8_decoder
                   and messageHandler is None)

        def convert(record):
            topic, partition, offset, key, value = record
            key, value = keyDecoder(key), valueDecoder(value)
            if messageHandler is None:
                return (key, value)
            return messageHandler(KafkaMessageAndMetadata(topic, partition, offset, key, value))

        def make(graph, memo):
            s, log = graph.kafka_direct_stream(
                brokers, list(topics), properties, _LATEST[reset], offsets, per_batch, group,
                raw)
            stream._log = log
            return s.map(convert) if raw else s

        stream = KafkaDStream(ssc, make)
        ssc._require_not_started("a source")
        return stream
