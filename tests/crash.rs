//! Crash tests with real processes (files, SQL queries, a socket with its WAL, Kafka topics in and out on a real
//! broker started by scripts/kafka.sh, a real PostgreSQL server started by
//! scripts/postgres.sh): `lockgate-dev torture` runs the `lockgate` CLI's job, SIGKILLs
//! it at random (seeded, printed) moments, restarts it on the same checkpoint, and
//! compares the merged output with an uninterrupted run's, batch by batch; each again
//! with its checkpoint on a real S3 server (moto, started by scripts/s3.sh), and with an
//! owner and a standby on one S3 checkpoint, the owner killed again and again.

#![allow(clippy::unwrap_used)]

/// `lockgate-dev torture --pipeline PIPELINE --kills KILLS EXTRA...` with a fresh seed,
/// on this build's `lockgate` executable.
fn torture_with(pipeline: &str, kills: u32, extra: &[&str]) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let (kills, seed) = (kills.to_string(), seed.to_string());
    let mut args = vec![
        "--kills",
        &kills,
        "--pipeline",
        pipeline,
        "--seed",
        &seed,
        "--lockgate",
        env!("CARGO_BIN_EXE_lockgate"),
        "--dir",
        work.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if let Err(e) = lockgate_dev::torture::run_args(&args) {
        panic!(
            "torture of {pipeline} failed (reproduce: lockgate-dev torture --kills {kills} \
             --pipeline {pipeline} {} --seed {seed}): {e:#}",
            extra.join(" ")
        );
    }
}

fn torture(pipeline: &str) {
    torture_with(pipeline, 20, &[]);
}

#[test]
fn log_errors_files_to_files_survives_sigkill() {
    torture("files");
}

#[test]
fn word_count_files_to_files_survives_sigkill() {
    torture("word-count");
}

#[test]
fn word_count_kafka_to_files_survives_sigkill() {
    torture("kafka");
}

#[test]
fn word_count_socket_with_wal_survives_sigkill() {
    torture("socket");
}

#[test]
fn word_count_files_to_postgres_survives_sigkill() {
    torture("postgres");
}

#[test]
fn word_count_kafka_to_kafka_survives_sigkill() {
    torture("kafka-to-kafka");
}

#[test]
fn word_count_kafka_to_postgres_survives_sigkill() {
    torture("kafka-to-postgres");
}

/// A broker restart mid-run, as the job sees it (every connection cut, new ones refused
/// for 1-3 s; the test broker keeps its data in memory, so its process is not restarted),
/// five times, between SIGKILLs: the Kafka → Kafka job rides each out, exactly once.
#[test]
fn word_count_kafka_to_kafka_rides_out_broker_restarts() {
    torture_with("kafka-to-kafka", 5, &["--broker-outages", "5"]);
}

/// `lockgate sql`: word count and log-errors' two event-time windows written as SQL,
/// each query killed in turn; each must equal its uninterrupted run batch by batch and
/// the built-in job's final rows.
#[test]
fn the_built_in_jobs_as_sql_survive_sigkill() {
    torture_with("sql", 12, &[]);
}

/// Every pipeline again with its checkpoint (plans, commits, state, the socket's WAL) on
/// a real S3 server (moto, started by scripts/s3.sh): each restart after a kill first
/// waits the killed owner's lease out, then recovers from the store.
fn torture_on_s3(pipeline: &str) {
    torture_with(pipeline, 6, &["--checkpoint-url", "s3://lockgate/crash"]);
}

#[test]
fn log_errors_files_to_files_on_s3_survives_sigkill() {
    torture_on_s3("files");
}

#[test]
fn word_count_files_to_files_on_s3_survives_sigkill() {
    torture_on_s3("word-count");
}

#[test]
fn word_count_kafka_to_files_on_s3_survives_sigkill() {
    torture_on_s3("kafka");
}

#[test]
fn word_count_socket_with_wal_on_s3_survives_sigkill() {
    torture_on_s3("socket");
}

#[test]
fn word_count_files_to_postgres_on_s3_survives_sigkill() {
    torture_on_s3("postgres");
}

#[test]
fn word_count_kafka_to_kafka_on_s3_survives_sigkill() {
    torture_on_s3("kafka-to-kafka");
}

#[test]
fn word_count_kafka_to_postgres_on_s3_survives_sigkill() {
    torture_on_s3("kafka-to-postgres");
}

#[test]
fn the_built_in_jobs_as_sql_on_s3_survive_sigkill() {
    torture_on_s3("sql");
}

/// Failover: an owner and a standby on one S3 checkpoint; the owner is SIGKILLed 20 times
/// at random moments (after a random few commits), a new standby started each time; the
/// standby takes over, recovers the state from the store and the output is identical to
/// an uninterrupted run's.
#[test]
fn word_count_fails_over_to_a_standby_20_times() {
    torture_with(
        "word-count",
        20,
        &["--checkpoint-url", "s3://lockgate/failover", "--standby"],
    );
}
