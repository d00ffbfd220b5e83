//! Crash tests with real processes (files, a socket with its WAL, Kafka topics in and out on a real
//! broker started by scripts/kafka.sh, a real PostgreSQL server started by
//! scripts/postgres.sh): `lockgate torture` runs the CLI job, SIGKILLs it at
//! random (seeded, printed) moments, restarts it on the same checkpoint, and compares the
//! merged output with an uninterrupted run's, batch by batch.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn torture(pipeline: &str) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args([
            "torture",
            "--kills",
            "20",
            "--pipeline",
            pipeline,
            "--seed",
            &seed.to_string(),
        ])
        .arg("--dir")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "torture of {pipeline} failed (reproduce: lockgate torture --kills 20 --pipeline {pipeline} --seed {seed}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("torture passed: 20 kills"), "{stdout}");
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
