"""The PySpark Streaming word count, run on PySpark or on Lockgate: the same code, only
the imports differ. Files moved into the watched directory after the start are
counted; the time is from the move until every word was counted.

Usage: wordcount.py pyspark|lockgate FILES_DIR WATCHED_DIR EXPECTED_WORDS

Prints one JSON line: engine, words, seconds, words per second, distinct words.
"""

import json
import os
import shutil
import sys
import threading
import time

engine, files_dir, watched, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if engine == "pyspark":
    from pyspark import SparkContext
    from pyspark.streaming import StreamingContext
else:
    from lockgate import SparkContext
    from lockgate.streaming import StreamingContext

sc = SparkContext("local[2]", "PythonStreamingWordCountBench")
sc.setLogLevel("ERROR")
ssc = StreamingContext(sc, 0.5)

totals = {}
counted = [0]
done = threading.Event()


def add(rdd):
    for word, n in rdd.collect():
        totals[word] = totals.get(word, 0) + n
        counted[0] += n
    if counted[0] >= expected:
        done.set()


lines = ssc.textFileStream(watched)
counts = lines.flatMap(lambda line: line.split(" ")) \
              .map(lambda word: (word, 1)) \
              .reduceByKey(lambda a, b: a + b)
counts.foreachRDD(add)
ssc.start()
time.sleep(2)  # a first batch or two, so the context is warm and the files are new
started = time.monotonic()
for name in sorted(os.listdir(files_dir)):
    src = os.path.join(files_dir, name)
    # Spark's file stream takes only files modified since its previous batch: a moved
    # file keeps its time, so give it the present one first.
    os.utime(src)
    shutil.move(src, os.path.join(watched, name))
if not done.wait(1800):
    sys.exit(f"{engine}: only {counted[0]} of {expected} words counted")
seconds = time.monotonic() - started
ssc.stop(stopSparkContext=True, stopGraceFully=False)
print(json.dumps({"engine": engine, "words": counted[0], "seconds": round(seconds, 3),
                  "words_per_s": round(counted[0] / seconds), "distinct": len(totals)}))
