//! [`Stream`]: a `DStream<Value>` for Python, one method per operator. The Python
//! package's `DStream` (PySpark's names and signatures) calls these when the context
//! starts and builds its graph.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lockgate_core::{Batch, DStream, InverseWindowOpts, Slide, Time, UpdateStateSpec};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::call::{Failure, Failures, PyFunc};
use crate::value::{py_list, Value};

/// A stream of Python values (see the module's documentation).
#[pyclass(module = "lockgate._lockgate", frozen)]
#[derive(Clone)]
pub struct Stream {
    pub(crate) s: DStream<Value>,
    pub(crate) failures: Failures,
    /// The context's parallelism: the default number of partitions of a shuffle.
    pub(crate) parallelism: usize,
}

impl Stream {
    pub(crate) fn new(s: DStream<Value>, failures: &Failures, parallelism: usize) -> Stream {
        Stream {
            s,
            failures: failures.clone(),
            parallelism,
        }
    }

    pub(crate) fn wrap(&self, s: DStream<Value>) -> Stream {
        Stream::new(s, &self.failures, self.parallelism)
    }

    /// The stream as `(key, value)` pairs; an element that is not a pair fails the batch.
    fn pairs(&self) -> DStream<(Value, Value)> {
        self.s.try_map_partitions(|part| {
            part.into_iter()
                .map(|v| {
                    v.into_pair()
                        .map_err(|m| Failure::value("a keyed operation", m).into_engine())
                })
                .collect()
        })
    }

    fn wrap_pairs(&self, s: DStream<(Value, Value)>) -> Stream {
        self.wrap(s.map(|(k, v)| Value::pair(k, v)))
    }

    /// `f` over each partition, the GIL held once per partition: `each` gets every
    /// element as a Python object and pushes what it makes.
    fn per_partition(
        &self,
        f: PyFunc,
        each: impl Fn(&PyFunc, Bound<'_, PyAny>, &mut Vec<Value>) -> Result<(), Failure>
            + Send
            + Sync
            + 'static,
    ) -> Stream {
        self.wrap(self.s.try_map_partitions(move |part| {
            if part.is_empty() {
                return Ok(part);
            }
            Python::attach(|py| {
                let mut out = Vec::with_capacity(part.len());
                for v in &part {
                    let x = v.to_py(py).map_err(f.err(py))?;
                    each(&f, x, &mut out)?;
                }
                Ok(out)
            })
            .map_err(Failure::into_engine)
        }))
    }

    /// A binary function of values (a reduce), failures kept for the outputs.
    fn binary(&self, f: PyFunc) -> impl Fn(Value, Value) -> Value + Send + Sync + 'static {
        let failures = self.failures.clone();
        move |a, b| {
            failures.guard(
                || Value::None,
                |py| {
                    let a = a.to_py(py).map_err(f.err(py))?;
                    let b = b.to_py(py).map_err(f.err(py))?;
                    let r = f.call(py, (a, b))?;
                    Value::from_py(&r).map_err(f.err(py))
                },
            )
        }
    }

    fn unary(&self, f: PyFunc) -> impl Fn(Value) -> Value + Send + Sync + 'static {
        let failures = self.failures.clone();
        move |a| {
            failures.guard(
                || Value::None,
                |py| {
                    let a = a.to_py(py).map_err(f.err(py))?;
                    let r = f.call(py, (a,))?;
                    Value::from_py(&r).map_err(f.err(py))
                },
            )
        }
    }
}

/// A partition's pairs grouped by key, keys in the order they first came.
fn group_locally(part: Vec<(Value, Value)>) -> Vec<(Value, Vec<Value>)> {
    let mut index: HashMap<Value, usize> = HashMap::with_capacity(part.len().min(1024));
    let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
    for (k, v) in part {
        match index.get(&k) {
            Some(&i) => groups[i].1.push(v),
            None => {
                index.insert(k.clone(), groups.len());
                groups.push((k, vec![v]));
            }
        }
    }
    groups
}

/// Each key's values reduced with `f`; the GIL is taken once, and only when some key has
/// more than one value.
fn reduce_groups(
    f: &PyFunc,
    groups: Vec<(Value, Vec<Value>)>,
) -> lockgate_core::Result<Vec<(Value, Value)>> {
    let single = |(k, mut vs): (Value, Vec<Value>)| vs.pop().map(|v| (k, v));
    if groups.iter().all(|(_, vs)| vs.len() <= 1) {
        return Ok(groups.into_iter().filter_map(single).collect());
    }
    Python::attach(|py| {
        groups
            .into_iter()
            .filter(|(_, vs)| !vs.is_empty())
            .map(|(k, vs)| Ok((k, f.reduce(py, &vs)?)))
            .collect::<Result<Vec<_>, Failure>>()
    })
    .map_err(Failure::into_engine)
}

fn ms(d: i64) -> Duration {
    Duration::from_millis(d.max(0) as u64)
}

fn slide(slide_ms: Option<i64>) -> Slide {
    match slide_ms {
        Some(s) => Slide::from(ms(s)),
        None => Slide::Batch,
    }
}

/// The partitions of a batch as a Python list of lists.
pub(crate) fn batch_to_py<'py>(py: Python<'py>, b: &Batch<Value>) -> PyResult<Bound<'py, PyList>> {
    let parts = b
        .partitions()
        .iter()
        .map(|p| py_list(py, p))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, parts)
}

/// A batch from a Python list of partitions (each an iterable of elements).
pub(crate) fn batch_from_py(parts: &Bound<'_, PyAny>) -> PyResult<Batch<Value>> {
    let mut out = Vec::new();
    for part in parts.try_iter()? {
        let mut items = Vec::new();
        for x in part?.try_iter()? {
            items.push(Value::from_py(&x?)?);
        }
        out.push(items);
    }
    Ok(Batch::from_partitions(out))
}

#[pymethods]
impl Stream {
    /// `f` applied to every element.
    fn map(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        Ok(self.per_partition(PyFunc::new(f)?, |f, x, out| {
            let py = x.py();
            let r = f.call(py, (x,))?;
            out.push(Value::from_py(&r).map_err(f.err(py))?);
            Ok(())
        }))
    }

    /// The elements of the iterables `f` returns.
    fn flat_map(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        Ok(self.per_partition(PyFunc::new(f)?, |f, x, out| {
            let py = x.py();
            let r = f.call(py, (x,))?;
            let err = f.err(py);
            for y in r.try_iter().map_err(err)? {
                out.push(Value::from_py(&y.map_err(err)?).map_err(err)?);
            }
            Ok(())
        }))
    }

    /// The elements for which `f` is true.
    fn filter(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        Ok(self.per_partition(PyFunc::new(f)?, |f, x, out| {
            let py = x.py();
            let keep = f.call(py, (&x,))?;
            if keep.is_truthy().map_err(f.err(py))? {
                out.push(Value::from_py(&x).map_err(f.err(py))?);
            }
            Ok(())
        }))
    }

    /// `f(iterator)` over each partition, returning an iterable: one Python call per
    /// partition.
    fn map_partitions(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = PyFunc::new(f)?;
        Ok(self.wrap(self.s.try_map_partitions(move |part| {
            Python::attach(|py| {
                let err = f.err(py);
                let list = py_list(py, &part).map_err(err)?;
                let r = f.call(py, (list.try_iter().map_err(err)?,))?;
                let mut out = Vec::new();
                if !r.is_none() {
                    for y in r.try_iter().map_err(err)? {
                        out.push(Value::from_py(&y.map_err(err)?).map_err(err)?);
                    }
                }
                Ok(out)
            })
            .map_err(Failure::into_engine)
        })))
    }

    /// Each partition as one list.
    fn glom(&self) -> Stream {
        self.wrap(self.s.glom().map(|v| Value::List(Arc::from(v))))
    }

    /// The number of elements of each batch.
    fn count(&self) -> Stream {
        self.wrap(self.s.count().map(Value::Int))
    }

    /// Each distinct element with its count, as `(element, count)`.
    fn count_by_value(&self) -> Stream {
        self.wrap(
            self.s
                .count_by_value()
                .map(|(v, n)| Value::pair(v, Value::Int(n))),
        )
    }

    /// The elements of each batch combined with `f` (one element, none when empty).
    fn reduce(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = self.binary(PyFunc::new(f)?);
        Ok(self.wrap(self.s.reduce(f)))
    }

    /// Both streams' elements.
    fn union(&self, other: &Stream) -> Stream {
        self.wrap(self.s.union(&other.s))
    }

    /// The elements spread evenly over `n` partitions.
    fn repartition(&self, n: usize) -> Stream {
        self.wrap(self.s.repartition(n.max(1)))
    }

    /// `f` applied to every value of `(key, value)` pairs.
    fn map_values(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = self.unary(PyFunc::new(f)?);
        Ok(self.wrap_pairs(self.pairs().map_values(f)))
    }

    /// The values of the iterables `f` returns, each paired with the key.
    fn flat_map_values(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = PyFunc::new(f)?;
        Ok(self.per_partition(f, |f, x, out| {
            let py = x.py();
            let err = f.err(py);
            let (k, v) = Value::from_py(&x)
                .map_err(err)?
                .into_pair()
                .map_err(|m| Failure::value(f.name(), m))?;
            let r = f.call(py, (v.to_py(py).map_err(err)?,))?;
            for y in r.try_iter().map_err(err)? {
                out.push(Value::pair(
                    k.clone(),
                    Value::from_py(&y.map_err(err)?).map_err(err)?,
                ));
            }
            Ok(())
        }))
    }

    /// The values of each key combined with `f`, in `n` partitions.
    #[pyo3(signature = (f, n = None))]
    fn reduce_by_key(&self, f: &Bound<'_, PyAny>, n: Option<usize>) -> PyResult<Stream> {
        // Each partition's values grouped by key in Rust, then reduced with the GIL taken
        // once for the partition (`functools.reduce` per key): before the shuffle, and
        // again after it.
        let f = PyFunc::new(f)?;
        let g = f.clone();
        let combined = self
            .pairs()
            .try_map_partitions(move |part| reduce_groups(&f, group_locally(part)));
        let combined = match n {
            Some(n) => combined.shuffle_partitions(n.max(1)),
            None => combined,
        };
        Ok(self.wrap_pairs(
            combined
                .group_by_key()
                .try_map_partitions(move |part| reduce_groups(&g, part)),
        ))
    }

    /// Each key with the list of its values, in `n` partitions.
    #[pyo3(signature = (n = None))]
    fn group_by_key(&self, n: Option<usize>) -> Stream {
        let pairs = self.pairs();
        let pairs = match n {
            Some(n) => pairs.shuffle_partitions(n.max(1)),
            None => pairs,
        };
        self.wrap_pairs(
            pairs
                .group_by_key()
                .map(|(k, vs)| (k, Value::List(Arc::from(vs)))),
        )
    }

    /// Spark's `combineByKey`.
    #[pyo3(signature = (create, merge_value, merge_combiners, n = None))]
    fn combine_by_key(
        &self,
        create: &Bound<'_, PyAny>,
        merge_value: &Bound<'_, PyAny>,
        merge_combiners: &Bound<'_, PyAny>,
        n: Option<usize>,
    ) -> PyResult<Stream> {
        let create = self.unary(PyFunc::new(create)?);
        let merge_value = self.binary(PyFunc::new(merge_value)?);
        let merge_combiners = self.binary(PyFunc::new(merge_combiners)?);
        let pairs = self.pairs();
        let n = n.unwrap_or(self.parallelism).max(1);
        Ok(self.wrap_pairs(pairs.combine_by_key(create, merge_value, merge_combiners, n)))
    }

    /// Per batch, each key with the lists of its values in both streams.
    fn cogroup(&self, other: &Stream) -> Stream {
        let list = |v: Vec<Value>| Value::List(Arc::from(v));
        self.wrap_pairs(
            self.pairs()
                .cogroup(&other.pairs())
                .map(move |(k, (a, b))| (k, Value::pair(list(a), list(b)))),
        )
    }

    /// Inner (`how = "inner"`), `"left"`, `"right"` or `"full"` outer join per batch:
    /// `(key, (v, w))`, `None` where a side has no value.
    fn join(&self, other: &Stream, how: &str) -> PyResult<Stream> {
        let (a, b) = (self.pairs(), other.pairs());
        let opt = |v: Option<Value>| v.unwrap_or(Value::None);
        let joined = match how {
            "inner" => a.join(&b).map(|(k, (v, w))| (k, Value::pair(v, w))),
            "left" => a
                .left_outer_join(&b)
                .map(move |(k, (v, w))| (k, Value::pair(v, opt(w)))),
            "right" => a
                .right_outer_join(&b)
                .map(move |(k, (v, w))| (k, Value::pair(opt(v), w))),
            "full" => a
                .full_outer_join(&b)
                .map(move |(k, (v, w))| (k, Value::pair(opt(v), opt(w)))),
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown join `{other}`: inner, left, right or full"
                )))
            }
        };
        Ok(self.wrap_pairs(joined))
    }

    /// The elements of the last `length_ms`, every `slide_ms` (default: every batch).
    #[pyo3(signature = (length_ms, slide_ms = None))]
    fn window(&self, length_ms: i64, slide_ms: Option<i64>) -> Stream {
        self.wrap(self.s.window(ms(length_ms), slide(slide_ms)))
    }

    /// The number of elements in each window (incremental).
    #[pyo3(signature = (length_ms, slide_ms = None))]
    fn count_by_window(&self, length_ms: i64, slide_ms: Option<i64>) -> Stream {
        self.wrap(
            self.s
                .count_by_window(ms(length_ms), slide(slide_ms))
                .map(Value::Int),
        )
    }

    /// Each window's elements combined with `f`; incrementally with `inv` when given.
    #[pyo3(signature = (f, inv, length_ms, slide_ms = None))]
    fn reduce_by_window(
        &self,
        f: &Bound<'_, PyAny>,
        inv: Option<&Bound<'_, PyAny>>,
        length_ms: i64,
        slide_ms: Option<i64>,
    ) -> PyResult<Stream> {
        let f = self.binary(PyFunc::new(f)?);
        let (len, sl) = (ms(length_ms), slide(slide_ms));
        Ok(self.wrap(match inv {
            Some(inv) => {
                let inv = self.binary(PyFunc::new(inv)?);
                self.s.reduce_by_window_inv(f, inv, len, sl)
            }
            None => self.s.reduce_by_window(f, len, sl),
        }))
    }

    /// Each key's values over the window combined with `f`; incrementally with `inv`
    /// (keys for which `filter` is false are dropped from the window's state).
    #[pyo3(signature = (f, inv, length_ms, slide_ms = None, n = None, filter = None))]
    fn reduce_by_key_and_window(
        &self,
        f: &Bound<'_, PyAny>,
        inv: Option<&Bound<'_, PyAny>>,
        length_ms: i64,
        slide_ms: Option<i64>,
        n: Option<usize>,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Stream> {
        let f = self.binary(PyFunc::new(f)?);
        let (len, sl) = (ms(length_ms), slide(slide_ms));
        let pairs = self.pairs();
        Ok(self.wrap_pairs(match inv {
            Some(inv) => {
                let inv = self.binary(PyFunc::new(inv)?);
                let mut opts = InverseWindowOpts::default();
                if let Some(n) = n {
                    opts = opts.partitions(n);
                }
                if let Some(filter) = filter {
                    let filter = PyFunc::new(filter)?;
                    let failures = self.failures.clone();
                    opts = opts.filter(move |(k, v): &(Value, Value)| {
                        failures.guard(
                            || true,
                            |py| {
                                let err = filter.err(py);
                                let kv =
                                    Value::pair(k.clone(), v.clone()).to_py(py).map_err(err)?;
                                filter.call(py, (kv,))?.is_truthy().map_err(err)
                            },
                        )
                    });
                }
                pairs.reduce_by_key_and_window_inv(f, inv, len, sl, opts)
            }
            None => pairs.reduce_by_key_and_window(f, len, sl),
        }))
    }

    /// Each key with the list of its values in the window.
    #[pyo3(signature = (length_ms, slide_ms = None))]
    fn group_by_key_and_window(&self, length_ms: i64, slide_ms: Option<i64>) -> Stream {
        self.wrap_pairs(
            self.pairs()
                .group_by_key_and_window(ms(length_ms), slide(slide_ms))
                .map(|(k, vs)| (k, Value::List(Arc::from(vs)))),
        )
    }

    /// Each distinct element with its count in the window.
    #[pyo3(signature = (length_ms, slide_ms = None, n = None))]
    fn count_by_value_and_window(
        &self,
        length_ms: i64,
        slide_ms: Option<i64>,
        n: Option<usize>,
    ) -> Stream {
        self.wrap(
            self.s
                .count_by_value_and_window(ms(length_ms), slide(slide_ms), n)
                .map(|(v, c)| Value::pair(v, Value::Int(c))),
        )
    }

    /// Spark's `updateStateByKey`: `f(new_values, last_state)` per key, the new state
    /// (`None` removes the key), keys starting from the `(key, state)` pairs of
    /// `initial`; state checkpointed with the context.
    #[pyo3(signature = (f, initial = None))]
    fn update_state_by_key(
        &self,
        f: &Bound<'_, PyAny>,
        initial: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Stream> {
        let f = PyFunc::new(f)?;
        // The initial `(key, state)` pairs, as a keyed operation reads its elements.
        let mut pairs = Vec::new();
        if let Some(initial) = initial {
            for item in initial.try_iter()? {
                let pair = Value::from_py(&item?)?.into_pair().map_err(|m| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "updateStateByKey's initial state: {m}"
                    ))
                })?;
                pairs.push(pair);
            }
        }
        let failures = self.failures.clone();
        let spec = UpdateStateSpec::function(move |values: &[Value], state: Option<Value>| {
            failures.guard(
                || state.clone(),
                |py| {
                    let err = f.err(py);
                    let vs = py_list(py, values).map_err(err)?;
                    let st = match &state {
                        Some(s) => s.to_py(py).map_err(err)?,
                        None => py.None().into_bound(py),
                    };
                    let r = f.call(py, (vs, st))?;
                    if r.is_none() {
                        Ok(None)
                    } else {
                        Value::from_py(&r).map(Some).map_err(err)
                    }
                },
            )
        })
        .initial_state(pairs);
        Ok(self.wrap_pairs(self.pairs().update_state_by_key_with_spec(spec)))
    }

    /// The batches with times in `[from_ms, to_ms]` the stream still remembers, as
    /// `(time_ms, partitions)` (Spark's `slice`; times between batch times move back
    /// to the batch time before them).
    fn slice<'py>(
        &self,
        py: Python<'py>,
        from_ms: i64,
        to_ms: i64,
    ) -> PyResult<Vec<(i64, Bound<'py, PyList>)>> {
        let batches = py
            .detach(|| self.s.slice(Time(from_ms), Time(to_ms)))
            .map_err(|e| PyErr::from(crate::Error::Engine(e)))?;
        batches
            .iter()
            .map(|(t, b)| Ok((t.millis(), batch_to_py(py, b)?)))
            .collect()
    }

    /// `f(time_ms, partitions) -> partitions` on every batch (the Python side turns
    /// them into and from an RDD).
    fn transform(&self, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = PyFunc::new(f)?;
        let failures = self.failures.clone();
        Ok(self.wrap(self.s.transform(move |b, time| {
            failures.guard(Batch::empty, |py| {
                let err = f.err(py);
                let parts = batch_to_py(py, &b).map_err(err)?;
                let r = f.call(py, (time.millis(), parts))?;
                batch_from_py(&r).map_err(err)
            })
        })))
    }

    /// `f(time_ms, partitions, other_partitions) -> partitions` on the batches of both
    /// streams of the same time.
    fn transform_with(&self, other: &Stream, f: &Bound<'_, PyAny>) -> PyResult<Stream> {
        let f = PyFunc::new(f)?;
        let failures = self.failures.clone();
        Ok(
            self.wrap(self.s.transform_with(&other.s, move |a, b, time| {
                failures.guard(Batch::empty, |py| {
                    let err = f.err(py);
                    let a = batch_to_py(py, &a).map_err(err)?;
                    let b = batch_to_py(py, &b).map_err(err)?;
                    let r = f.call(py, (time.millis(), a, b))?;
                    batch_from_py(&r).map_err(err)
                })
            })),
        )
    }

    /// Registers an output: `f(time_ms, batch_id, partitions)` on every batch. A failure
    /// anywhere in the batch's Python functions, or in `f`, fails the batch.
    fn foreach(&self, f: &Bound<'_, PyAny>) -> PyResult<()> {
        let f = PyFunc::new(f)?;
        let failures = self.failures.clone();
        self.s
            .foreach_batch(move |b, at| -> lockgate_core::Result<()> {
                failures.check()?;
                Python::attach(|py| {
                    let parts = batch_to_py(py, b).map_err(f.err(py))?;
                    f.call(py, (at.time.millis(), at.id, parts)).map(|_| ())
                })
                .map_err(Failure::into_engine)
            });
        Ok(())
    }

    /// Registers an output: every batch as text files, `str()` of each element per line,
    /// in `<prefix>-<time ms>[.<suffix>]/part-NNNNN`, written atomically.
    #[pyo3(signature = (prefix, suffix = None))]
    fn save_as_text_files(&self, prefix: &str, suffix: Option<&str>) {
        let failures = self.failures.clone();
        let text = self.s.try_map_partitions(move |part| {
            failures.check()?;
            if part.is_empty() {
                return Ok(Vec::new());
            }
            Python::attach(|py| {
                part.iter()
                    .map(|v| {
                        v.to_py(py)
                            .and_then(|x| x.str().map(|s| s.to_string()))
                            .map_err(|e| Failure::from_py(py, "str", &e))
                    })
                    .collect::<Result<Vec<String>, Failure>>()
            })
            .map_err(Failure::into_engine)
        });
        text.save_as_text_files(prefix, suffix.unwrap_or(""));
    }
}
