//! `/metrics`: Prometheus text exposition of the metrics registry.

use std::fmt::Write as _;

use lockgate_core::metrics::DELAY_BUCKETS_MS;
use lockgate_core::{DelayHistogram, SourceCounters};

use lockgate_core::StreamingContext;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(out: &mut String, name: &str, help: &str, h: &DelayHistogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, n) in DELAY_BUCKETS_MS.iter().zip(h.buckets.iter()) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {}",
        cumulative + h.overflow
    );
    let _ = writeln!(out, "{name}_sum {}", h.sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Bytes of each source's WAL segments under `wal`.
fn wal_sizes(wal: &std::path::Path) -> Vec<(String, f64)> {
    let Ok(sources) = std::fs::read_dir(wal) else {
        return Vec::new();
    };
    sources
        .filter_map(|e| e.ok())
        .map(|e| {
            let bytes: u64 = std::fs::read_dir(e.path())
                .map(|segs| {
                    segs.filter_map(|x| x.ok())
                        .filter_map(|x| x.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            let name = e.file_name().to_string_lossy().into_owned();
            (format!("{{source=\"{}\"}}", label(&name)), bytes as f64)
        })
        .collect()
}

/// Renders every metric.
pub(crate) fn render(ctx: &StreamingContext) -> String {
    let m = ctx.metrics().snapshot();
    let app = format!("{{app=\"{}\"}}", label(ctx.app_name()));
    let mut out = String::new();
    counter(
        &mut out,
        "lockgate_batches_completed_total",
        "Batches completed since start.",
        "counter",
        &[(app.clone(), m.total_completed as f64)],
    );
    let event_time = ctx.metrics().event_time_operators();
    let per_op = |f: &dyn Fn(&lockgate_core::EventTimeCounters) -> f64| -> Vec<(String, f64)> {
        event_time
            .iter()
            .map(|(op, c)| (format!("{{operator=\"{}\"}}", label(op)), f(c)))
            .collect()
    };
    let get =
        |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
    counter(
        &mut out,
        "lockgate_late_records_total",
        "Records dropped by an event-time operator because the watermark had passed them.",
        "counter",
        &per_op(&|c| get(&c.late_records)),
    );
    counter(
        &mut out,
        "lockgate_records_without_event_time_total",
        "Records dropped by an event-time operator because no event time could be read.",
        "counter",
        &per_op(&|c| get(&c.records_without_time)),
    );
    counter(
        &mut out,
        "lockgate_windows_closed_total",
        "Windows (or timers) an event-time operator closed because the watermark passed them.",
        "counter",
        &per_op(&|c| get(&c.closed)),
    );
    counter(
        &mut out,
        "lockgate_watermark_seconds",
        "The watermark of an event-time operator (epoch seconds).",
        "gauge",
        &event_time
            .iter()
            .filter_map(|(op, c)| {
                let ms = c.watermark_ms.load(std::sync::atomic::Ordering::Relaxed);
                (ms != i64::MIN).then(|| {
                    (
                        format!("{{operator=\"{}\"}}", label(op)),
                        ms as f64 / 1000.0,
                    )
                })
            })
            .collect::<Vec<_>>(),
    );
    counter(
        &mut out,
        "lockgate_batches_queued",
        "Batches planned and waiting to run.",
        "gauge",
        &[(app.clone(), m.queued.len() as f64)],
    );
    counter(
        &mut out,
        "lockgate_records_in_total",
        "Input records of completed batches.",
        "counter",
        &[(app.clone(), m.total_records as f64)],
    );
    counter(
        &mut out,
        "lockgate_records_out_total",
        "Elements written by output operations.",
        "counter",
        &[(app.clone(), m.total_records_out as f64)],
    );
    let interval_s = ctx.batch_interval().as_secs_f64().max(1e-3);
    let rate = m
        .completed
        .last()
        .map_or(0.0, |b| b.num_records() as f64 / interval_s);
    counter(
        &mut out,
        "lockgate_input_rate_records_per_second",
        "Input rate of the last completed batch.",
        "gauge",
        &[(app.clone(), rate)],
    );
    if let Some(d) = m
        .completed
        .iter()
        .rev()
        .find_map(|b| b.rate_decision.as_ref())
    {
        counter(
            &mut out,
            "lockgate_rate_limit_records_per_second",
            "The backpressure rate limit set by the last decision.",
            "gauge",
            &[(app.clone(), d.rate)],
        );
    }
    histogram(
        &mut out,
        "lockgate_scheduling_delay_seconds",
        "Time batches waited to run.",
        &m.histograms.scheduling,
    );
    histogram(
        &mut out,
        "lockgate_processing_time_seconds",
        "Time batches took to run.",
        &m.histograms.processing,
    );
    histogram(
        &mut out,
        "lockgate_total_delay_seconds",
        "Time from planning a batch to its end.",
        &m.histograms.total,
    );
    histogram(
        &mut out,
        "lockgate_checkpoint_write_seconds",
        "Time of each checkpoint write (state files, sync, commit).",
        &m.histograms.checkpoint_write,
    );
    if let Some(storage) = ctx.checkpoint_storage() {
        let st = storage.stats();
        let op = |o: &str, n: u64| (format!("{{op=\"{o}\"}}"), n as f64);
        counter(
            &mut out,
            "lockgate_checkpoint_requests_total",
            "Requests made to the checkpoint's store (object stores charge per request).",
            "counter",
            &[
                op("put", st.puts),
                op("get", st.gets),
                op("list", st.lists),
                op("delete", st.deletes),
            ],
        );
        counter(
            &mut out,
            "lockgate_checkpoint_request_retries_total",
            "Requests to the checkpoint's store retried after a failure.",
            "counter",
            &[(app.clone(), st.retries as f64)],
        );
        counter(
            &mut out,
            "lockgate_checkpoint_store_retrying",
            "1 while requests to the checkpoint's store fail and are retried.",
            "gauge",
            &[(app.clone(), f64::from(u8::from(st.retrying)))],
        );
        counter(
            &mut out,
            "lockgate_standby",
            "1 while this process waits as a standby for the checkpoint's owner.",
            "gauge",
            &[(app.clone(), f64::from(u8::from(st.standby)))],
        );
    }
    if let Some(dir) = ctx.checkpoint_dir() {
        counter(
            &mut out,
            "lockgate_wal_bytes",
            "Size of each receiver's write-ahead log.",
            "gauge",
            &wal_sizes(&dir.join("wal")),
        );
    }
    let mut state = Vec::new();
    for (op, parts) in ctx.state_sizes() {
        for (p, n) in parts.iter().enumerate() {
            state.push((
                format!("{{operator=\"{}\",partition=\"{p}\"}}", label(&op)),
                *n as f64,
            ));
        }
    }
    counter(
        &mut out,
        "lockgate_state_entries",
        "Entries of checkpointable state by operator and partition.",
        "gauge",
        &state,
    );
    let metrics = ctx.metrics();
    let per_source = |f: fn(&SourceCounters) -> u64| -> Vec<(String, f64)> {
        metrics
            .source_names()
            .iter()
            .map(|n| {
                (
                    format!("{{source=\"{}\"}}", label(n)),
                    f(&metrics.source(n)) as f64,
                )
            })
            .collect()
    };
    counter(
        &mut out,
        "lockgate_source_records_total",
        "Records read by each source.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.records)),
    );
    counter(
        &mut out,
        "lockgate_source_invalid_utf8_lines_total",
        "Lines with invalid UTF-8 (replaced).",
        "counter",
        &per_source(|c| SourceCounters::get(&c.invalid_utf8_lines)),
    );
    counter(
        &mut out,
        "lockgate_source_truncated_lines_total",
        "Lines cut at the length limit.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.truncated_lines)),
    );
    counter(
        &mut out,
        "lockgate_source_unreadable_files_total",
        "Files that could not be read.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.unreadable_files)),
    );
    counter(
        &mut out,
        "lockgate_source_changed_files_total",
        "Files that changed after they were planned or while they were read.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.changed_files)),
    );
    let skipped_values: Vec<(String, f64)> = metrics
        .source_names()
        .iter()
        .flat_map(|n| {
            metrics
                .source(n)
                .skips()
                .by_reason
                .into_iter()
                .map(move |(reason, count)| {
                    (
                        format!("{{source=\"{}\",reason=\"{}\"}}", label(n), label(&reason)),
                        count as f64,
                    )
                })
        })
        .collect();
    counter(
        &mut out,
        "lockgate_source_skipped_values_total",
        "Values that did not decode (--format json|csv with --schema) and were skipped, by \
         reason.",
        "counter",
        &skipped_values,
    );
    counter(
        &mut out,
        "lockgate_source_skipped_entries_total",
        "Directory entries a file source does not read: directories, dangling or \
         looping symlinks, FIFOs, sockets, devices.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.skipped_entries)),
    );
    counter(
        &mut out,
        "lockgate_source_lost_records_total",
        "Records skipped because their offsets expired before they were read.",
        "counter",
        &per_source(|c| SourceCounters::get(&c.lost_records)),
    );
    counter(
        &mut out,
        "lockgate_source_lag_records",
        "Records in a partitioned log (Kafka) not yet planned into a batch.",
        "gauge",
        &per_source(|c| SourceCounters::get(&c.lag_records)),
    );
    counter(
        &mut out,
        "lockgate_source_retrying",
        "1 while a source retries a passing error (a broker that does not answer).",
        "gauge",
        &per_source(|c| u64::from(c.status().retrying_since_ms.is_some())),
    );
    let per_sink = |f: fn(&lockgate_core::SinkCounters) -> u64| -> Vec<(String, f64)> {
        metrics
            .sink_names()
            .iter()
            .map(|n| {
                (
                    format!("{{sink=\"{}\"}}", label(n)),
                    f(&metrics.sink(n)) as f64,
                )
            })
            .collect()
    };
    counter(
        &mut out,
        "lockgate_sink_retries_total",
        "Sink commits retried after a passing failure (a lost connection).",
        "counter",
        &per_sink(|c| c.retries.load(std::sync::atomic::Ordering::Relaxed)),
    );
    counter(
        &mut out,
        "lockgate_sink_retrying",
        "1 while a sink retries a batch's commit.",
        "gauge",
        &per_sink(|c| u64::from(c.status().retrying_since_ms.is_some())),
    );
    with_app(&out, &label(ctx.app_name()))
}

/// The metrics of several contexts in one exposition: each context's series labelled
/// `task` (unless its task is `""`), samples of one metric grouped under one
/// `# HELP`/`# TYPE` header, as the text format requires.
pub(crate) fn render_all(apps: &[(String, StreamingContext)]) -> String {
    if let [(task, ctx)] = apps {
        if task.is_empty() {
            return render(ctx);
        }
    }
    // Families in first-seen order: their header lines and samples.
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for (task, ctx) in apps {
        let text = render(ctx);
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                let at = match families.iter().position(|(n, _, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        families.push((name, Vec::new(), Vec::new()));
                        families.len() - 1
                    }
                };
                current = Some(at);
                if families[at].2.is_empty() && families[at].1.is_empty() {
                    families[at].1.push(line.to_string());
                }
                continue;
            }
            let Some(at) = current else { continue };
            if line.starts_with("# TYPE ") {
                if families[at].1.len() < 2 {
                    families[at].1.push(line.to_string());
                }
            } else if !line.is_empty() {
                families[at].2.push(with_label(line, "task", &label(task)));
            }
        }
    }
    let mut out = String::new();
    for (_, header, samples) in families {
        for l in header.iter().chain(&samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// One sample line with `key="value"` added first among its labels.
fn with_label(line: &str, key: &str, value: &str) -> String {
    match line.split_once(' ') {
        Some((series, sample)) => match series.split_once('{') {
            Some((name, labels)) => format!("{name}{{{key}=\"{value}\",{labels} {sample}"),
            None => format!("{series}{{{key}=\"{value}\"}} {sample}"),
        },
        None => line.to_string(),
    }
}

/// `text` with the `app` label on every sample that lacks it (histograms, per-source
/// and per-sink series): a scraper of several jobs tells their series apart.
fn with_app(text: &str, app: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        match line.split_once(' ') {
            Some((series, value)) if !line.starts_with('#') && !series.contains("app=\"") => {
                match series.split_once('{') {
                    Some((name, labels)) => {
                        let _ = write!(out, "{name}{{app=\"{app}\",{labels} {value}");
                    }
                    None => {
                        let _ = write!(out, "{series}{{app=\"{app}\"}} {value}");
                    }
                }
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
