"""A stateful word count over the files appearing in a directory, recoverable from its
checkpoint: the job the SIGKILL test kills and restarts. Its running counts go to text
files; each batch's own counts are also inserted into the SQLite table `batch_counts`
(one transaction per batch with its id), whose sums must end exact too.

Usage: stateful_files.py INPUT_DIR OUTPUT_DIR CHECKPOINT_DIR SQLITE_PATH
"""

import sys

from lockgate import SparkContext
from lockgate.streaming import StreamingContext


def create(input_dir, output_dir, db):
    sc = SparkContext("local[2]", "python-sigkill")
    ssc = StreamingContext(sc, 0.2)
    per_batch = (
        ssc.textFileStream(input_dir)
        .flatMap(lambda line: line.split())
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
    )
    per_batch.saveToDatabase("sqlite:" + db, "batch_counts", "word STRING, n BIGINT")
    counts = per_batch.updateStateByKey(lambda values, total: sum(values) + (total or 0))
    counts.saveAsTextFiles(output_dir + "/counts")
    return ssc


if __name__ == "__main__":
    input_dir, output_dir, checkpoint, db = sys.argv[1:5]
    ssc = StreamingContext.getOrCreate(checkpoint, lambda: create(input_dir, output_dir, db))
    ssc.start()
    ssc.awaitTermination()
