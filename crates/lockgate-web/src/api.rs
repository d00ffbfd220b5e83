//! The JSON API under Spark's REST paths and field names (with a few `lockgate*` and
//! extra fields added, never renamed), and the route table.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lockgate_core::{BatchInfo, SourceStatus, StreamingContext};
use serde_json::{json, Value};

use crate::time::spark_date;

/// The contexts a server shows, by task (`""` for a job in one process), and whether
/// the process is ready (see [`crate::Instance`]).
#[derive(Clone)]
pub(crate) struct AppState {
    pub instance: crate::Instance,
    pub start_ms: i64,
    pub app_id: String,
}

impl AppState {
    pub fn new(instance: crate::Instance) -> Self {
        let start_ms = now_ms();
        AppState {
            app_id: format!("app-{start_ms}"),
            instance,
            start_ms,
        }
    }

    /// Every application shown: its id and context (one per task of a scale-out
    /// instance, `app-<start>-<task>`).
    fn apps(&self) -> Vec<(String, String, StreamingContext)> {
        (self.instance.contexts)()
            .into_iter()
            .map(|(task, ctx)| {
                let id = if task.is_empty() {
                    self.app_id.clone()
                } else {
                    format!("{}-{task}", self.app_id)
                };
                (id, task, ctx)
            })
            .collect()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/applications", get(applications))
        .route(
            "/api/v1/applications/{app}/streaming/statistics",
            get(statistics),
        )
        .route("/api/v1/applications/{app}/streaming/batches", get(batches))
        .route(
            "/api/v1/applications/{app}/streaming/receivers",
            get(receivers),
        )
        .route("/api/v1/applications/{app}/streaming/sinks", get(sinks))
        .route(
            "/api/v1/applications/{app}/streaming/batches/{batch}",
            get(batch),
        )
        .route("/metrics", get(prometheus_metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        // The streaming page and a batch's, at Spark's paths too.
        .route("/", get(streaming_page))
        .route("/streaming", get(streaming_page))
        .route("/streaming/", get(streaming_page))
        .route("/batch", get(batch_page))
        .route("/streaming/batch", get(batch_page))
        .route("/streaming/batch/", get(batch_page))
        .fallback(unknown_page)
        .with_state(state)
}

async fn streaming_page() -> Html<&'static str> {
    Html(include_str!("../assets/streaming.html"))
}

async fn batch_page() -> Html<&'static str> {
    Html(include_str!("../assets/batch.html"))
}

/// A path that is not served: a 404 naming the ones that are.
async fn unknown_page(uri: axum::http::Uri) -> Response {
    not_found(format!(
        "no page `{}`: this server has the streaming page (/ or /streaming/), a batch's \
         page (/streaming/batch/?id=<batch time in ms>), the REST API under \
         /api/v1/applications and Prometheus metrics at /metrics",
        uri.path()
    ))
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
}

/// The context of application `app`, or a 404 naming the ones there are.
fn context_of(s: &AppState, app: &str) -> Result<StreamingContext, Box<Response>> {
    let apps = s.apps();
    if let Some((_, _, ctx)) = apps.iter().find(|(id, _, _)| id == app) {
        return Ok(ctx.clone());
    }
    let ids: Vec<String> = apps
        .into_iter()
        .map(|(id, _, _)| format!("`{id}`"))
        .collect();
    Err(Box::new(not_found(if ids.is_empty() {
        format!("no application `{app}`: this process runs none now")
    } else {
        format!("no application `{app}`; there are {}", ids.join(", "))
    })))
}

/// `GET /health`: 200 while the process serves (a liveness probe).
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 once the process runs its job (every task of a scale-out
/// instance started), 503 before (a standby waiting, tasks recovering) and once it
/// stops; the body says which.
async fn ready(State(s): State<AppState>) -> Response {
    let (ready, why) = (s.instance.ready)();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "ready": ready, "status": why }))).into_response()
}

async fn applications(State(s): State<AppState>) -> Json<Value> {
    let now = now_ms();
    Json(Value::Array(
        s.apps()
            .into_iter()
            .map(|(id, task, ctx)| application_json(&s, now, &id, &task, &ctx))
            .collect(),
    ))
}

fn application_json(s: &AppState, now: i64, id: &str, task: &str, ctx: &StreamingContext) -> Value {
    let completed = ctx.is_stopping();
    let name = if task.is_empty() {
        ctx.app_name().to_string()
    } else {
        format!("{} (task {task})", ctx.app_name())
    };
    json!({
        "id": id,
        "name": name,
        "lockgateTask": (!task.is_empty()).then_some(task),
        "attempts": [{
            "startTime": spark_date(s.start_ms),
            "endTime": if completed { spark_date(now) } else { spark_date(-1) },
            "lastUpdated": spark_date(now),
            "duration": now - s.start_ms,
            "sparkUser": "",
            "completed": completed,
            "appSparkVersion": concat!("lockgate-", env!("CARGO_PKG_VERSION")),
            "startTimeEpoch": s.start_ms,
            "endTimeEpoch": if completed { now } else { -1 },
            "lastUpdatedEpoch": now,
        }],
    })
}

fn avg(values: impl Iterator<Item = i64>) -> Value {
    let v: Vec<i64> = values.collect();
    if v.is_empty() {
        Value::Null
    } else {
        json!(v.iter().sum::<i64>() as f64 / v.len() as f64)
    }
}

async fn statistics(State(s): State<AppState>, Path(app): Path<String>) -> Response {
    let ctx = match context_of(&s, &app) {
        Ok(ctx) => ctx,
        Err(r) => return *r,
    };
    let m = ctx.metrics().snapshot();
    let receivers: Vec<SourceStatus> = source_statuses(&ctx)
        .into_iter()
        .filter(|(_, st)| st.is_receiver)
        .map(|(_, st)| st)
        .collect();
    let active = receivers.iter().filter(|r| r.active).count();
    let interval_ms = ctx.batch_interval().as_millis() as f64;
    let rates = m
        .completed
        .iter()
        .map(|b| b.num_records() as f64 * 1000.0 / interval_ms.max(1.0));
    let n = m.completed.len();
    let avg_rate = if n == 0 {
        Value::Null
    } else {
        json!(rates.sum::<f64>() / n as f64)
    };
    Json(json!({
        "startTime": spark_date(s.start_ms),
        "batchDuration": ctx.batch_interval().as_millis() as u64,
        "numReceivers": receivers.len(),
        "numActiveReceivers": active,
        "numInactiveReceivers": receivers.len() - active,
        "numTotalCompletedBatches": m.total_completed,
        "numRetainedCompletedBatches": n,
        "numActiveBatches": m.queued.len() + usize::from(m.running.is_some()),
        "numProcessedRecords": m.total_records,
        "numReceivedRecords": m.total_records,
        "avgInputRate": avg_rate,
        "avgSchedulingDelay": avg(m.completed.iter().filter_map(BatchInfo::scheduling_delay_ms)),
        "avgProcessingTime": avg(m.completed.iter().filter_map(BatchInfo::processing_time_ms)),
        "avgTotalDelay": avg(m.completed.iter().filter_map(BatchInfo::total_delay_ms)),
        "checkpoint": checkpoint_json(&ctx, m.total_completed),
    }))
    .into_response()
}

/// The checkpoint's location, this process's role (owner or standby) and the requests
/// made to its store (Lockgate's addition to Spark's statistics).
fn checkpoint_json(ctx: &lockgate_core::StreamingContext, batches: u64) -> Value {
    let Some(storage) = ctx.checkpoint_storage() else {
        return Value::Null;
    };
    let st = storage.stats();
    let per_batch = |n: u64| {
        if batches == 0 {
            Value::Null
        } else {
            json!(n as f64 / batches as f64)
        }
    };
    json!({
        "location": storage.location(),
        "role": if st.standby { "standby" } else { "owner" },
        "requests": { "put": st.puts, "get": st.gets, "list": st.lists, "delete": st.deletes },
        "requestsPerBatch": {
            "put": per_batch(st.puts), "get": per_batch(st.gets),
            "list": per_batch(st.lists), "delete": per_batch(st.deletes),
        },
        "retries": st.retries,
        "retrying": st.retrying,
    })
}

/// Whether a source or sink is retrying, since when, and its last error.
fn retry_json(retrying_since_ms: Option<i64>, last_error: Option<&(String, i64)>) -> Value {
    json!({
        "retrying": retrying_since_ms.is_some(),
        "retryingSince": retrying_since_ms.map(spark_date),
        "lastErrorTime": last_error.map(|(_, t)| spark_date(*t)),
        "lastErrorMessage": last_error.map(|(m, _)| m.clone()),
    })
}

/// Every source's status, by name.
fn source_statuses(ctx: &StreamingContext) -> Vec<(String, SourceStatus)> {
    let metrics = ctx.metrics();
    metrics
        .source_names()
        .into_iter()
        .map(|n| {
            let st = metrics.source(&n).status();
            (n, st)
        })
        .collect()
}

/// Spark's `/streaming/receivers`: each receiver with whether it is connected and its
/// last error; Lockgate adds its other sources (`isReceiver: false`), with the error
/// they are retrying, if any.
async fn receivers(State(s): State<AppState>, Path(app): Path<String>) -> Response {
    let ctx = match context_of(&s, &app) {
        Ok(ctx) => ctx,
        Err(r) => return *r,
    };
    let list: Vec<Value> = source_statuses(&ctx)
        .into_iter()
        .enumerate()
        .map(|(i, (name, st))| {
            let mut v = retry_json(st.retrying_since_ms, st.last_error.as_ref());
            v["streamId"] = json!(i);
            v["streamName"] = json!(name);
            v["isReceiver"] = json!(st.is_receiver);
            v["isActive"] = json!(if st.is_receiver {
                st.active
            } else {
                st.retrying_since_ms.is_none()
            });
            let counters = ctx.metrics().source(&name);
            // Records the source's log holds beyond what was planned (a direct
            // source; a scale-out task's partition).
            v["lagRecords"] = json!(lockgate_core::SourceCounters::get(&counters.lag_records));
            v["skipped"] = skipped_json(&counters);
            v
        })
        .collect();
    Json(list).into_response()
}

/// What a source did not read, read in part or changed: every counter of input handled
/// without failing the job, and the last skipped value's reason and location.
fn skipped_json(c: &lockgate_core::SourceCounters) -> Value {
    use lockgate_core::SourceCounters as C;
    let skips = c.skips();
    json!({
        "skippedValues": C::get(&c.skipped_values),
        "skippedValuesByReason": skips.by_reason,
        "lastSkipped": skips.last,
        "invalidUtf8Lines": C::get(&c.invalid_utf8_lines),
        "truncatedLines": C::get(&c.truncated_lines),
        "unreadableFiles": C::get(&c.unreadable_files),
        "changedFiles": C::get(&c.changed_files),
        "skippedEntries": C::get(&c.skipped_entries),
        "lostRecords": C::get(&c.lost_records),
    })
}

/// Lockgate's `/streaming/sinks`: each sink with its retries, whether it is retrying
/// now and its last error.
async fn sinks(State(s): State<AppState>, Path(app): Path<String>) -> Response {
    let ctx = match context_of(&s, &app) {
        Ok(ctx) => ctx,
        Err(r) => return *r,
    };
    let metrics = ctx.metrics();
    let list: Vec<Value> = metrics
        .sink_names()
        .into_iter()
        .map(|name| {
            let c = metrics.sink(&name);
            let st = c.status();
            let mut v = retry_json(st.retrying_since_ms, st.last_error.as_ref());
            v["sinkName"] = json!(name);
            v["retries"] = json!(c.retries.load(std::sync::atomic::Ordering::Relaxed));
            v
        })
        .collect();
    Json(list).into_response()
}

/// One batch in Spark's `BatchInfo` form, plus Lockgate's id, inputs and output operations.
fn batch_json(b: &BatchInfo, status: &str, interval_ms: u64) -> Value {
    let failed = b.output_ops.iter().filter(|o| o.failure.is_some()).count();
    json!({
        "batchId": b.batch_time.millis(),
        "batchTime": spark_date(b.batch_time.millis()),
        "status": status,
        "batchDuration": interval_ms,
        "inputSize": b.num_records(),
        "schedulingDelay": b.scheduling_delay_ms(),
        "processingTime": b.processing_time_ms(),
        "totalDelay": b.total_delay_ms(),
        "numActiveOutputOps": 0,
        "numCompletedOutputOps": b.output_ops.len() - failed,
        "numFailedOutputOps": failed,
        "numTotalOutputOps": b.output_ops.len(),
        "firstFailureReason": b.failure,
        "lockgateBatchId": b.batch_id,
        "inputs": b.inputs.iter().map(|i| json!({
            "source": i.source,
            "records": i.records,
            "description": i.description,
        })).collect::<Vec<_>>(),
        "operators": b.operators.iter().map(|o| json!({
            "name": o.name,
            "timeUs": o.time_us,
            "records": o.records,
        })).collect::<Vec<_>>(),
        "rateController": b.rate_decision.as_ref().map(|d| json!({
            "rate": d.rate,
            "processingRate": d.processing_rate,
            "error": d.error,
            "historicalError": d.historical_error,
            "dError": d.d_error,
        })),
        "stateEntries": b.state_entries.iter().map(|(name, n)| json!({
            "operator": name,
            "entries": n,
        })).collect::<Vec<_>>(),
        "outputOperations": b.output_ops.iter().enumerate().map(|(i, o)| json!({
            "outputOpId": i,
            "name": o.name,
            "startTime": spark_date(o.start.millis()),
            "endTime": spark_date(o.end.millis()),
            "duration": o.end.since(o.start),
            "records": o.records,
            "retries": o.retries,
            "failureReason": o.failure,
        })).collect::<Vec<_>>(),
    })
}

/// Every batch the registry knows, newest first, with its status.
fn all_batches(ctx: &StreamingContext) -> Vec<Value> {
    let m = ctx.metrics().snapshot();
    let interval = ctx.batch_interval().as_millis() as u64;
    let mut out: Vec<Value> = Vec::new();
    for b in m.queued.iter().rev() {
        out.push(batch_json(b, "QUEUED", interval));
    }
    if let Some(b) = &m.running {
        out.push(batch_json(b, "PROCESSING", interval));
    }
    for b in m.completed.iter().rev() {
        out.push(batch_json(b, "COMPLETED", interval));
    }
    out
}

async fn batches(
    State(s): State<AppState>,
    Path(app): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let ctx = match context_of(&s, &app) {
        Ok(ctx) => ctx,
        Err(r) => return *r,
    };
    let mut out = all_batches(&ctx);
    if let Some(status) = q.get("status") {
        out.retain(|b| b["status"].as_str() == Some(status.as_str()));
    }
    Json(Value::Array(out)).into_response()
}

async fn batch(State(s): State<AppState>, Path((app, id)): Path<(String, String)>) -> Response {
    let ctx = match context_of(&s, &app) {
        Ok(ctx) => ctx,
        Err(r) => return *r,
    };
    let Ok(time) = id.parse::<i64>() else {
        return not_found(format!(
            "`{id}` is not a batch id (the batch time in ms, as in Spark)"
        ));
    };
    match all_batches(&ctx)
        .into_iter()
        .find(|b| b["batchId"].as_i64() == Some(time))
    {
        Some(b) => Json(b).into_response(),
        None => not_found(format!("no batch {time} (only the last 1000 are kept)")),
    }
}

/// `GET /metrics`: the Prometheus text format (a scale-out instance's tasks as series
/// labelled `task`).
async fn prometheus_metrics(State(s): State<AppState>) -> Response {
    let apps: Vec<(String, StreamingContext)> = s
        .apps()
        .into_iter()
        .map(|(_, task, ctx)| (task, ctx))
        .collect();
    text(crate::prometheus::render_all(&apps))
}

/// `text/plain` response for Prometheus.
pub(crate) fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
