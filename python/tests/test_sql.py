"""``lockgate.sql``: ``Row``, ``SparkSession.createDataFrame``, temporary views, ``sql``
and ``show`` as PySpark prints it."""

import pickle

import pytest

from lockgate import SparkContext
from lockgate.sql import Row, SparkSession


@pytest.fixture
def spark():
    s = SparkSession.builder.appName("sql-tests").getOrCreate()
    yield s
    s.stop()


def test_row_fields_items_and_pickling():
    r = Row(word="a", n=2)
    assert r.word == "a" and r["n"] == 2 and r[0] == "a" and tuple(r) == ("a", 2)
    assert r.asDict() == {"word": "a", "n": 2}
    assert repr(r) == "Row(word='a', n=2)"
    assert pickle.loads(pickle.dumps(r)).asDict() == r.asDict()
    Person = Row("name", "age")
    assert Person("x", 3).asDict() == {"name": "x", "age": 3}
    with pytest.raises(AttributeError):
        r.missing


def test_a_group_by_over_a_view_of_rows(spark):
    sc = SparkContext.getOrCreate()
    rdd = sc.parallelize(["a", "b", "a", "c", "a"])
    df = spark.createDataFrame(rdd.map(lambda w: Row(word=w)))
    df.createOrReplaceTempView("words")
    out = spark.sql("select word, count(*) as total from words group by word order by word")
    assert out.columns == ["word", "total"]
    assert [tuple(r) for r in out.collect()] == [("a", 3), ("b", 1), ("c", 1)]
    assert out.collect()[0].total == 3


def test_types_are_inferred_and_spark_functions_apply(spark):
    df = spark.createDataFrame([(1, 2.5, True, "x"), (2, None, False, None), (3, 1, None, "yz")],
                               ["i", "f", "b", "s"])
    df.createOrReplaceTempView("t")
    out = spark.sql("SELECT sum(i) AS si, sum(f) AS sf, count(b) AS nb, "
                    "upper(max(s)) AS ms FROM t")
    assert [tuple(r) for r in out.collect()] == [(6, 3.5, 2, "YZ")]


def test_show_prints_sparks_table(spark, capsys):
    df = spark.createDataFrame([("a", 10), ("a much longer word than twenty", None)],
                               "word string, total long")
    df.show()
    assert capsys.readouterr().out == (
        "+--------------------+-----+\n"
        "|                word|total|\n"
        "+--------------------+-----+\n"
        "|                   a|   10|\n"
        "|a much longer wor...| null|\n"
        "+--------------------+-----+\n"
        "\n")
    df.show(1, truncate=False)
    assert capsys.readouterr().out == (
        "+----+-----+\n"
        "|word|total|\n"
        "+----+-----+\n"
        "|a   |10   |\n"
        "+----+-----+\n"
        "only showing top 1 row\n"
        "\n")


def test_bad_input_is_named(spark):
    with pytest.raises(ValueError, match="empty dataset"):
        spark.createDataFrame([])
    spark.createDataFrame([(1, "x"), ("y", 2)], ["a", "b"]).createOrReplaceTempView("mixed")
    with pytest.raises(TypeError, match="column `a` mixes"):
        spark.sql("SELECT * FROM mixed")
    spark.createDataFrame([({"k": 1},)], ["d"]).createOrReplaceTempView("dicts")
    with pytest.raises(TypeError, match="column `d`: a value of type dict cannot be queried"):
        spark.sql("SELECT * FROM dicts")
    with pytest.raises(ValueError, match="nosuch"):
        spark.sql("SELECT * FROM nosuch")


def test_datetimes_and_dates_go_in_and_come_back(spark):
    import datetime

    t = datetime.datetime(2026, 3, 1, 12, 30, 15)
    d = datetime.date(2026, 3, 1)
    spark.createDataFrame([(t, d, 1)], ["t", "d", "n"]).createOrReplaceTempView("times")
    row = spark.sql("SELECT t, d, t + INTERVAL '1' HOUR AS later FROM times").first()
    assert (row.t, row.d, row.later) == (t, d, t + datetime.timedelta(hours=1))
