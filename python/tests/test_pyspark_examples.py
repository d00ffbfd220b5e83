"""PySpark's own streaming examples, run on Lockgate unchanged but for their imports
(``pyspark`` → ``lockgate``), each checked against the output it should print.

The examples are not copied into this repository: they come from PySpark's source
distribution on PyPI (``pip download pyspark==3.5.3``, cached under
``~/.cache/lockgate``), where Spark ships them in ``deps/examples/streaming``.
"""

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

PYSPARK = "3.5.3"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lockgate"


@pytest.fixture(scope="module")
def examples():
    """The directory of PySpark's streaming examples (downloaded once)."""
    target = CACHE / f"pyspark-{PYSPARK}-examples"
    if not (target / "streaming" / "network_wordcount.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            got = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-binary", ":all:", "--disable-pip-version-check",
                 f"pyspark=={PYSPARK}", "-d", tmp],
                capture_output=True, text=True)
            assert got.returncode == 0, (
                f"cannot download PySpark {PYSPARK}'s source distribution from PyPI for "
                f"its examples: {got.stderr[-2000:]}")
            sdist = Path(tmp) / f"pyspark-{PYSPARK}.tar.gz"
            prefix = f"pyspark-{PYSPARK}/deps/examples/streaming/"
            out = Path(tmp) / "examples"
            with tarfile.open(sdist) as tar:
                for m in tar.getmembers():
                    if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".py"):
                        dest = out / "streaming" / m.name[len(prefix):]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tar.extractfile(m).read())
            os.replace(out, target)
    return target / "streaming"


def ported(examples, name, where):
    """Example ``name`` with its imports of ``pyspark`` changed to ``lockgate``, and
    nothing else, written into ``where``."""
    text = (examples / name).read_text()
    out = re.sub(r"^(\s*)(from|import) pyspark\b", r"\1\2 lockgate", text, flags=re.M)
    assert out != text and "pyspark" not in re.sub(r"#.*|\"\"\".*?\"\"\"", "", out, flags=re.S), \
        f"{name} names pyspark outside its imports"
    path = where / name
    path.write_text(out)
    return path


class Lines:
    """A TCP server the examples' socket streams connect to: sends lines to whoever is
    connected (one client at a time, a new one after the last went away)."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.conn = None

    def send(self, lines, timeout=60):
        if self.conn is None:
            self.server.settimeout(timeout)
            self.conn, _ = self.server.accept()
        self.conn.sendall("".join(line + "\n" for line in lines).encode())

    def reconnect(self):
        """Forgets the client (it was killed): the next send waits for a new one."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self):
        self.reconnect()
        self.server.close()


class Job:
    """A running example: its stdout collected line by line."""

    def __init__(self, path, args, cwd):
        env = dict(os.environ, PYTHONUNBUFFERED="1", RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [sys.executable, str(path), *map(str, args)], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out = []
        self.err = []
        self.threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def batches(self):
        """What ``pprint`` printed: the elements of each batch, in order."""
        batches = []
        for line in list(self.out):
            if line.startswith("Time: "):
                batches.append([])
            elif batches and line and not line.startswith("---") and line != "...":
                batches[-1].append(ast.literal_eval(line))
        return batches

    def wait_for(self, cond, what, limit=90.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{what}: not seen (exit code {self.proc.poll()})\nstdout:\n"
            + "\n".join(self.out[-60:]) + "\nstderr:\n" + "\n".join(self.err[-60:]))

    def interrupt(self):
        """Ctrl-C: the context stops gracefully and the example exits."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        for t in self.threads:
            t.join(timeout=10)
        assert "panicked" not in "\n".join(self.err), "\n".join(self.err)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=60)


def summed(batches):
    """The per-batch ``(word, count)`` pairs added up over the batches."""
    total = Counter()
    for b in batches:
        for word, n in b:
            total[word] += n
    return dict(total)


#: Lines of words; at most ten distinct words, so pprint prints each batch whole.
TEXT = ["spark lockgate stream", "stream batch", "lockgate lockgate exactly once",
        "once batch stream"]


def test_network_wordcount(examples, tmp_path):
    lines = Lines()
    job = Job(ported(examples, "network_wordcount.py", tmp_path), ["127.0.0.1", lines.port],
              tmp_path)
    try:
        sent = TEXT * 5
        lines.send(sent)
        want = dict(Counter(w for line in sent for w in line.split(" ")))
        job.wait_for(lambda: summed(job.batches()) == want, f"the counts {want}")
    finally:
        job.interrupt()
        lines.close()


def test_stateful_network_wordcount(examples, tmp_path):
    lines = Lines()
    job = Job(ported(examples, "stateful_network_wordcount.py", tmp_path),
              ["127.0.0.1", lines.port], tmp_path)
    try:
        sent = TEXT * 3
        lines.send(sent)
        # Running counts, starting from the example's initial state hello: 1, world: 1.
        want = Counter(w for line in sent for w in line.split(" "))
        want.update(["hello", "world"])
        job.wait_for(lambda: any(dict(b) == dict(want) for b in job.batches()),
                     f"a batch with the running counts {dict(want)}")
        assert (tmp_path / "checkpoint").is_dir()
    finally:
        job.interrupt()
        lines.close()


def test_hdfs_wordcount(examples, tmp_path):
    watched = tmp_path / "in"
    watched.mkdir()
    job = Job(ported(examples, "hdfs_wordcount.py", tmp_path), [watched], tmp_path)
    try:
        # Files there at start are not read (as in Spark): write once it runs.
        job.wait_for(lambda: len(job.batches()) >= 1, "a first batch")
        for i, text in enumerate(["a b a", "b c\nc c"]):
            tmp = tmp_path / f"f{i}.tmp"
            tmp.write_text(text + "\n")
            tmp.rename(watched / f"f{i}.txt")
        job.wait_for(lambda: summed(job.batches()) == {"a": 2, "b": 2, "c": 3},
                     "the files' counts")
    finally:
        job.interrupt()


def test_queue_stream(examples, tmp_path):
    job = Job(ported(examples, "queue_stream.py", tmp_path), [], tmp_path)
    assert job.proc.wait(timeout=120) == 0, "\n".join(job.err)
    for t in job.threads:
        t.join(timeout=10)
    # Five RDDs of 1..1000, one per batch: each batch counts 100 of every x % 10.
    full = [b for b in job.batches() if b]
    assert len(full) == 5, job.out
    for b in full:
        assert sorted(b) == [(k, 100) for k in range(10)], b


def _file_counts(path):
    """The example's output file added up: ``Counts at time T [(word, n), ...]`` lines."""
    total = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            pairs = ast.literal_eval(line[line.index("["):])
            for word, n in pairs:
                total[word] += n
    return dict(total)


def test_recoverable_network_wordcount(examples, tmp_path):
    """Counts, a SIGKILL, a restart from the checkpoint (the context comes back from it:
    ``createContext`` is not called again), more counts; the output file holds every
    word once; a, b and c are dropped and counted by the accumulator."""
    lines = Lines()
    path = ported(examples, "recoverable_network_wordcount.py", tmp_path)
    cp, output = tmp_path / "checkpoint", tmp_path / "out.txt"
    args = ["127.0.0.1", lines.port, cp, output]
    first = ["a spark b", "lockgate c stream", "stream a"]
    second = ["once b stream", "lockgate lockgate"]

    def want(sent):
        words = Counter(w for line in sent for w in line.split(" "))
        return {w: n for w, n in words.items() if w not in ("a", "b", "c")}

    job = Job(path, args, tmp_path)
    try:
        job.wait_for(lambda: "Creating new context" in job.out, "Creating new context")
        lines.send(first)
        job.wait_for(lambda: _file_counts(output) == want(first), "the first counts")
        # Let the batches after it commit, so the restart does not run it again.
        printed = sum(line.startswith("Counts at time") for line in job.out)
        job.wait_for(lambda: sum(line.startswith("Counts at time") for line in job.out)
                     >= printed + 3, "three more batches")
        assert "Dropped 4 word(s) totally" in job.out, job.out
    finally:
        job.kill()
    lines.reconnect()
    job = Job(path, args, tmp_path)
    try:
        lines.send(second)
        job.wait_for(lambda: _file_counts(output) == want(first + second), "every count")
        assert "Creating new context" not in job.out, job.out
        job.wait_for(lambda: "Dropped 1 word(s) totally" in job.out,
                     "the accumulator's count since the restart")
    finally:
        job.interrupt()
        lines.close()


def test_sql_network_wordcount(examples, tmp_path):
    lines = Lines()
    job = Job(ported(examples, "sql_network_wordcount.py", tmp_path), ["127.0.0.1", lines.port],
              tmp_path)

    def tables():
        """The ``show()`` tables printed: word → total, added up over the batches."""
        total = Counter()
        for line in list(job.out):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("|") and cells != ["word", "total"]:
                total[cells[0]] += int(cells[1])
        return dict(total)

    try:
        sent = TEXT * 4
        lines.send(sent)
        want = dict(Counter(w for line in sent for w in line.split(" ")))
        job.wait_for(lambda: tables() == want, f"the tables' counts {want}")
        assert any(line == "+--------+-----+" for line in job.out), job.out
    finally:
        job.interrupt()
        lines.close()
