"""PySpark's ``pyspark.sql`` for streaming jobs' batches: ``SparkSession``, ``DataFrame``
and ``Row``, enough for the DStream idiom of PySpark's ``sql_network_wordcount``::

    def process(time, rdd):
        spark = SparkSession.builder.config(conf=rdd.context.getConf()).getOrCreate()
        df = spark.createDataFrame(rdd.map(lambda w: Row(word=w)))
        df.createOrReplaceTempView("words")
        spark.sql("select word, count(*) as total from words group by word").show()

Queries run on Lockgate's SQL layer (DataFusion, in Spark SQL's dialect) over the
temporary views, once per call: a batch query over a batch's rows. Columns hold
``str``, ``int``, ``float``, ``bool``, ``datetime``, ``date`` or ``None``; their types
are inferred from the values.
"""

import datetime
import threading

from lockgate import SparkConf, _lockgate

__all__ = ["Row", "SparkSession", "DataFrame"]

_EPOCH_ORDINAL = 719163


class Row(tuple):
    """PySpark's ``Row``: a tuple whose fields have names. ``Row(word="a", n=1)`` makes
    a row (fields in the order given); ``Row("word", "n")`` makes a row class, called
    with the values."""

    def __new__(cls, *args, **kwargs):
        if args and kwargs:
            raise ValueError("Can not use both args and kwargs to create Row")
        if kwargs:
            row = tuple.__new__(cls, kwargs.values())
            row.__fields__ = list(kwargs)
            return row
        return tuple.__new__(cls, args)

    def asDict(self, recursive=False):
        """The row as a ``dict`` of field → value."""
        if not hasattr(self, "__fields__"):
            raise TypeError("Cannot convert a Row class into dict")
        return dict(zip(self.__fields__, self))

    def __call__(self, *args):
        """A row of this row class's fields with ``args`` as values."""
        if len(args) > len(self):
            raise ValueError(f"Can not create Row with fields {self}, expected {len(self)} "
                             f"values but got {args}")
        return _row(list(self), args)

    def __getitem__(self, item):
        if isinstance(item, (int, slice)):
            return super().__getitem__(item)
        try:
            return super().__getitem__(self.__fields__.index(item))
        except (AttributeError, ValueError):
            raise ValueError(item) from None

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        try:
            return self[self.__fields__.index(item)]
        except (AttributeError, ValueError):
            raise AttributeError(item) from None

    def __setattr__(self, key, value):
        if key != "__fields__":
            raise RuntimeError("Row is read-only")
        self.__dict__[key] = value

    def __reduce__(self):
        if hasattr(self, "__fields__"):
            return (_row, (self.__fields__, tuple(self)))
        return (Row, tuple(self))

    def __repr__(self):
        if hasattr(self, "__fields__"):
            return "Row(%s)" % ", ".join(f"{k}={v!r}" for k, v in zip(self.__fields__, self))
        return "<Row(%s)>" % ", ".join(repr(f) for f in self)


def _converter(kind):
    """A function making the engine's value of a result column of ``kind`` (see
    ``_lockgate.SqlQuery.columns``) Python's, or ``None`` when it is already."""
    if kind == "timestamp":
        return lambda us: None if us is None else datetime.datetime.fromtimestamp(us / 1e6)
    if kind == "date":
        return lambda d: None if d is None else datetime.date.fromordinal(d + _EPOCH_ORDINAL)
    if kind.startswith("struct:"):
        fields = [f.split("=", 1) for f in kind[len("struct:"):].split(";") if f]
        names = [n for n, _ in fields]
        convs = [_converter(k) for _, k in fields]
        return lambda t: None if t is None else _row(
            names, tuple(v if c is None else c(v) for c, v in zip(convs, t)))
    return None


def _row_converter(columns):
    """A function making a result tuple's values Python's (``columns``: ``(name, kind)``)
    and the row a :class:`Row` of the columns' names."""
    names = [n for n, _ in columns]
    convs = [_converter(k) for _, k in columns]
    if not any(convs):
        return lambda t: _row(names, t)
    return lambda t: _row(names, tuple(v if c is None else c(v) for c, v in zip(convs, t)))


def _row(fields, values):
    """A row of ``fields`` with ``values``."""
    row = tuple.__new__(Row, values)
    row.__fields__ = list(fields)
    return row


class DataFrame:
    """Rows with named columns: what ``createDataFrame`` and ``sql`` return."""

    def __init__(self, session, columns, rows):
        self.sparkSession = session
        self.columns = list(columns)
        self._rows = [tuple(r) for r in rows]

    def createOrReplaceTempView(self, name):
        """Names the rows ``name`` for this session's queries (replacing a view of that
        name)."""
        self.sparkSession._views[name.lower()] = self

    def createTempView(self, name):
        """As :meth:`createOrReplaceTempView`; an error when the name is taken."""
        if name.lower() in self.sparkSession._views:
            raise ValueError(f"Temporary view '{name}' already exists")
        self.createOrReplaceTempView(name)

    def collect(self):
        """Every row, as :class:`Row`."""
        return [_row(self.columns, r) for r in self._rows]

    def count(self):
        """The number of rows."""
        return len(self._rows)

    def take(self, num):
        """The first ``num`` rows."""
        return self.collect()[:num]

    def first(self):
        """The first row, or ``None``."""
        rows = self.take(1)
        return rows[0] if rows else None

    def isEmpty(self):
        """Whether there are no rows."""
        return not self._rows

    def show(self, n=20, truncate=True, vertical=False):
        """Prints the first ``n`` rows as Spark's ``show`` does: a table, values right
        aligned, text longer than 20 characters (or ``truncate`` when it is a number)
        cut."""
        print(self._show_string(n, truncate), end="")

    def _show_string(self, n, truncate):
        width = 20 if truncate is True else int(truncate or 0)

        def cell(v):
            s = "null" if v is None else ("true" if v is True else "false" if v is False
                                          else str(v))
            if width and len(s) > width:
                s = s[:width - 3] + "..." if width > 3 else s[:width]
            return s

        rows = [[cell(v) for v in r] for r in self._rows[:n]]
        widths = [max([3, len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(self.columns)]
        line = "+" + "+".join("-" * w for w in widths) + "+\n"

        def fmt(cells):
            if width:
                return "|" + "|".join(c.rjust(w) for c, w in zip(cells, widths)) + "|\n"
            return "|" + "|".join(c.ljust(w) for c, w in zip(cells, widths)) + "|\n"

        out = line + fmt(self.columns) + line + "".join(fmt(r) for r in rows) + line
        if len(self._rows) > n:
            out += f"only showing top {n} row{'s' if n != 1 else ''}\n"
        return out + "\n"

    def __repr__(self):
        return f"DataFrame[{', '.join(self.columns)}]"


class _Builder:
    """``SparkSession.builder``: settings, then :meth:`getOrCreate`."""

    def __init__(self):
        self._conf = SparkConf()

    def config(self, key=None, value=None, conf=None):
        """Sets ``key`` to ``value``, or every setting of ``conf``."""
        if conf is not None:
            self._conf.setAll(conf.getAll())
        if key is not None:
            self._conf.set(key, value)
        return self

    def appName(self, name):
        """The application's name."""
        return self.config("spark.app.name", name)

    def master(self, master):
        """The master (``local[N]``)."""
        return self.config("spark.master", master)

    def enableHiveSupport(self):
        """Accepted for PySpark's API; there is no Hive."""
        return self

    def getOrCreate(self):
        """The session there is, or a new one."""
        with SparkSession._lock:
            if SparkSession._active is None:
                SparkSession._active = SparkSession(self._conf)
            return SparkSession._active


class _BuilderDescriptor:
    def __get__(self, instance, owner):
        return _Builder()


class SparkSession:
    """PySpark's ``SparkSession`` for batch queries over temporary views (see the
    module's documentation)."""

    builder = _BuilderDescriptor()
    _active = None
    _lock = threading.Lock()

    def __init__(self, conf=None):
        self._conf = conf or SparkConf()
        self._views = {}

    @classmethod
    def getActiveSession(cls):
        """The session there is, or ``None``."""
        return cls._active

    @property
    def conf(self):
        """The session's settings."""
        return self._conf

    def createDataFrame(self, data, schema=None):
        """A DataFrame of ``data`` (an RDD or a list) of :class:`Row`, tuples or dicts;
        ``schema``: the column names (a list, or ``"a string, b int"``), or taken from
        the first row's fields. An empty ``data`` without a schema cannot be typed:
        ``ValueError``, as in PySpark."""
        rows = data.collect() if hasattr(data, "collect") else list(data)
        if isinstance(schema, str):
            schema = [part.strip().split()[0] for part in schema.split(",") if part.strip()]
        if schema is None:
            if not rows:
                raise ValueError("can not infer schema from empty dataset")
            first = rows[0]
            if isinstance(first, dict):
                schema = list(first)
            elif hasattr(first, "__fields__"):
                schema = list(first.__fields__)
            elif isinstance(first, (tuple, list)):
                schema = [f"_{i + 1}" for i in range(len(first))]
            else:
                raise TypeError(f"can not infer schema for type: {type(first).__name__}")
        values = []
        for r in rows:
            if isinstance(r, dict):
                values.append(tuple(r.get(c) for c in schema))
            elif isinstance(r, (tuple, list)):
                values.append(tuple(r))
            else:
                values.append((r,))
        return DataFrame(self, schema, values)

    def sql(self, sqlQuery):
        """The rows of ``sqlQuery`` over this session's temporary views."""
        tables = [(name, df.columns, df._rows) for name, df in self._views.items()]
        columns, rows = _lockgate.run_sql(sqlQuery, tables)
        convert = _row_converter(columns)
        return DataFrame(self, [n for n, _ in columns], [tuple(convert(r)) for r in rows])

    def table(self, tableName):
        """The temporary view ``tableName``."""
        try:
            return self._views[tableName.lower()]
        except KeyError:
            raise ValueError(f"Table or view not found: {tableName}") from None

    def stop(self):
        """Forgets the session and its views."""
        with SparkSession._lock:
            if SparkSession._active is self:
                SparkSession._active = None
        self._views.clear()
