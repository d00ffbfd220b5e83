"""SQL over streams from Python: ``StreamingContext.sql`` runs a query over the streams
registered with ``DStream.createOrReplaceTempView``, incrementally, one batch at a time,
as Structured Streaming's unbounded tables (Lockgate's SQL layer: DataFusion in Spark
SQL's dialect; the query's state — groups, windows — checkpointed with the context)::

    words.createOrReplaceTempView("words", "word STRING")
    counts = ssc.sql("SELECT word, count(*) AS n FROM words GROUP BY word")
    counts.pprint()                                   # Row(word='a', n=3), ...
    counts.foreachBatch(lambda table, batch_id: ...)  # a pyarrow.Table per batch

The result is a :class:`SqlDStream` of :class:`lockgate.sql.Row`: in ``update`` mode the
groups a batch changed, with their values so far; in ``append`` mode (event-time windows
with a watermark) each window once, when the watermark passes its end.
"""

from lockgate.sql import _row_converter
from lockgate.streaming.dstream import DStream

__all__ = ["SqlDStream"]


class SqlDStream(DStream):
    """The rows of a query over streams (see the module's documentation)."""

    def __init__(self, ssc, query, name, outputMode, watermark):
        self._query = query
        self._sql_name = name
        self._append = outputMode == "append"
        self._watermark = watermark
        super().__init__(ssc, self._make_rows)

    def _built_query(self, graph, memo):
        key = ("sql", id(self))
        if key not in memo:
            tables = []
            for name, (stream, schema) in self._ssc._tables.items():
                tables.append((name, stream._build(graph, memo), schema))
            memo[key] = graph.sql(self._query, self._sql_name, tables, self._append,
                                  self._watermark)
        return memo[key]

    def _make_rows(self, graph, memo):
        q = self._built_query(graph, memo)
        return q.rows().map(_row_converter(q.columns))

    def foreachBatch(self, func):
        """Registers an output: ``func(table, batch_id)`` on every batch, ``table`` a
        ``pyarrow.Table`` of the batch's rows (from the engine's Arrow batches, no
        conversion row by row). Needs ``pyarrow``."""
        try:
            import pyarrow as pa
        except ImportError as e:
            raise ImportError("foreachBatch hands the batch over as a pyarrow.Table: "
                              "pip install pyarrow") from e

        def run(ms, batch_id, parts):
            tables = [pa.ipc.open_stream(b).read_all() for part in parts for b in part]
            func(pa.concat_tables(tables), batch_id)

        def register(graph, memo):
            self._build(graph, memo)
            self._built_query(graph, memo).arrow().foreach(run)

        self._ssc._add_output(register)
