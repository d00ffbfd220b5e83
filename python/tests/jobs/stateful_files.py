"""A stateful word count over the files appearing in a directory, recoverable from its
checkpoint: the job the SIGKILL test kills and restarts.

Usage: stateful_files.py INPUT_DIR OUTPUT_DIR CHECKPOINT_DIR
"""

import sys

from lockgate import SparkContext
from lockgate.streaming import StreamingContext


def create(input_dir, output_dir):
    sc = SparkContext("local[2]", "python-sigkill")
    ssc = StreamingContext(sc, 0.2)
    counts = (
        ssc.textFileStream(input_dir)
        .flatMap(lambda line: line.split())
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
        .updateStateByKey(lambda values, total: sum(values) + (total or 0))
    )
    counts.saveAsTextFiles(output_dir + "/counts")
    return ssc


if __name__ == "__main__":
    input_dir, output_dir, checkpoint = sys.argv[1:4]
    ssc = StreamingContext.getOrCreate(checkpoint, lambda: create(input_dir, output_dir))
    ssc.start()
    ssc.awaitTermination()
