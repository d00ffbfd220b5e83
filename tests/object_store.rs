//! The `lockgate` binary with its checkpoint on a real S3 server (moto, started by
//! scripts/s3.sh): a paused owner is fenced when it wakes after a standby took over, an
//! outage of the store is ridden through, a second process is refused naming the owner,
//! and `checkpoint inspect` reads the store. (The SIGKILL tortures on S3, with and
//! without a standby, are in tests/crash.rs.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lockgate_core::checkpoint::log::CheckpointLog;
use lockgate_object_store::testing::{S3Server, CREDENTIALS};

/// `lockgate ARGS...` reaching the test server (its settings after `args`).
fn lockgate(server: &S3Server, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockgate"));
    c.env("RUST_LOG", "info").envs(CREDENTIALS).args(args);
    for (k, v) in server.settings() {
        c.arg("--checkpoint-option").arg(format!("{k}={v}"));
    }
    c
}

/// `lockgate run log-errors` over `input`, one file per batch, checkpointing to `url`.
fn job(server: &S3Server, input: &Path, out: &Path, url: &str, extra: &[&str]) -> Command {
    let mut c = lockgate(
        server,
        &["run", "log-errors", "--once", "--quiet", "--no-ui"],
    );
    c.args(["--max-files-per-batch", "1", "--lease-timeout", "1s"])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--checkpoint", url])
        .args(extra);
    c
}

fn generate(dir: &Path, files: u32) {
    let ok = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["generate", "logs", dir.to_str().unwrap()])
        .args([
            "--lines",
            &(files * 40).to_string(),
            "--files",
            &files.to_string(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn log_of(server: &S3Server, url: &str) -> CheckpointLog {
    let location = lockgate_object_store::open(url, &server.options(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    CheckpointLog::new(location.0)
}

fn last_commit(log: &CheckpointLog) -> Option<u64> {
    log.commit_ids().unwrap().last().copied()
}

/// Waits (up to 60 s) until `f` holds (`f` may check that a process still runs).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the test when the log of a process shows it failed.
fn alive(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!text.contains("error:"), "the process failed: {text}");
}

/// Starts `c` with its log in file `log` (a pipe nobody reads while it runs would fill).
fn spawn_logged(mut c: Command, log: &Path) -> Child {
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child`; its log, and whether it succeeded.
fn finish(mut child: Child, log: &Path) -> (bool, String) {
    let ok = child.wait().unwrap().success();
    (ok, std::fs::read_to_string(log).unwrap_or_default())
}

fn outputs(dir: &Path) -> Vec<(String, u64, Vec<String>)> {
    let mut all = Vec::new();
    for stream in std::fs::read_dir(dir).unwrap() {
        let stream = stream.unwrap();
        let name = stream.file_name().to_string_lossy().into_owned();
        for (id, rows) in lockgate_core::sink::read_json_lines(&stream.path()).unwrap() {
            all.push((name.clone(), id, rows));
        }
    }
    all.sort();
    all
}

/// The uninterrupted run's outputs, on a local checkpoint.
fn reference(input: &Path, work: &Path) -> Vec<(String, u64, Vec<String>)> {
    let out = work.join("ref-out");
    let ok = Command::new(env!("CARGO_BIN_EXE_lockgate"))
        .args(["run", "log-errors", "--once", "--quiet", "--no-ui"])
        .args(["--max-files-per-batch", "1", "--input"])
        .arg(input)
        .arg("--output")
        .arg(&out)
        .arg("--checkpoint")
        .arg(work.join("ref-cp"))
        .env("RUST_LOG", "warn")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    outputs(&out)
}

#[test]
fn a_frozen_owner_is_fenced_when_it_wakes_after_a_standby_took_over() {
    let server = S3Server::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("in"), work.path().join("out"));
    generate(&input, 1500);
    let url = server.url("fenced");
    let log = log_of(&server, &url);
    let (owner_log, standby_log) = (
        work.path().join("owner.log"),
        work.path().join("standby.log"),
    );
    let owner = spawn_logged(job(&server, &input, &out, &url, &[]), &owner_log);
    wait_until("the owner commits batches", || {
        alive(&owner_log);
        last_commit(&log).is_some_and(|c| c >= 20)
    });
    // A long stall: the owner stops (SIGSTOP) mid-run, its lease expires, a standby
    // takes over and commits batches of its own.
    let stop = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &owner.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    stop("-STOP");
    let frozen_at = last_commit(&log).unwrap();
    let standby = spawn_logged(
        job(&server, &input, &out, &url, &["--standby"]),
        &standby_log,
    );
    wait_until("the standby commits batches of its own", || {
        last_commit(&log).is_some_and(|c| c >= frozen_at + 20)
    });
    // The owner wakes: it must notice it was fenced and stop, writing nothing more.
    stop("-CONT");
    let (ok, err) = finish(owner, &owner_log);
    assert!(!ok, "the fenced owner must fail: {err}");
    assert!(
        err.contains("no longer owns it") && err.contains("took over as generation 2"),
        "the error names who took over: {err}"
    );
    let (ok, err) = finish(standby, &standby_log);
    assert!(ok, "the standby failed: {err}");
    assert!(err.contains("took over the checkpoint's lease"), "{err}");
    // Whatever the owner did around its stall, the output is the uninterrupted run's.
    assert_eq!(outputs(&out), reference(&input, work.path()));
}

#[test]
fn an_outage_of_the_store_is_ridden_through() {
    let server = S3Server::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("in"), work.path().join("out"));
    generate(&input, 600);
    let url = server.url("outage");
    let log = log_of(&server, &url);
    let log_file = work.path().join("job.log");
    let child = spawn_logged(job(&server, &input, &out, &url, &[]), &log_file);
    wait_until("the job commits batches", || {
        alive(&log_file);
        last_commit(&log).is_some_and(|c| c >= 10)
    });
    server.pause().unwrap();
    std::thread::sleep(Duration::from_secs(10));
    server.resume().unwrap();
    let (ok, err) = finish(child, &log_file);
    assert!(ok, "the job failed through the outage: {err}");
    assert!(
        err.contains("checkpoint store reachable again"),
        "the outage is logged: {err}"
    );
    assert_eq!(outputs(&out), reference(&input, work.path()));
}

#[test]
fn a_second_process_is_refused_and_inspect_reads_the_store() {
    let server = S3Server::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("in"), work.path().join("out"));
    generate(&input, 400);
    let url = server.url("refused");
    let log = log_of(&server, &url);
    let mut first = spawn_logged(
        job(&server, &input, &out, &url, &[]),
        &work.path().join("first.log"),
    );
    wait_until("the first job commits", || {
        alive(&work.path().join("first.log"));
        last_commit(&log).is_some()
    });
    let second = job(&server, &input, &work.path().join("out2"), &url, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains(&format!(":{}`", first.id())) && err.contains("--standby"),
        "names the owner and the way out: {err}"
    );
    first.kill().unwrap();
    let _ = first.wait();
    // A restart recovers (the test server checks no signature, so another secret
    // works): the secret appears nowhere in what it prints.
    let restarted = job(&server, &input, &out, &url, &[])
        .args(["--checkpoint-option", "secret_access_key=TOPSECRET123"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&restarted.stderr);
    assert!(restarted.status.success(), "{err}");
    assert!(err.contains("took over the checkpoint's lease"), "{err}");
    assert!(!err.contains("TOPSECRET123"), "{err}");
    let inspect = lockgate(&server, &["checkpoint", "inspect", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains(&format!("checkpoint {url}")) && text.contains("application   log-errors"),
        "{text}{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    // Settings never printed, a wrong one named.
    let bad = lockgate(
        &server,
        &[
            "checkpoint",
            "inspect",
            &url,
            "--checkpoint-option",
            "secret_acess_key=x",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown checkpoint option `secret_acess_key`"),
        "{err}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut r = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut r);
    }
    r
}

#[test]
fn a_standby_shows_itself_in_the_ui_and_metrics_until_it_takes_over() {
    let server = S3Server::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (input, out) = (work.path().join("in"), work.path().join("out"));
    generate(&input, 600);
    let url = server.url("standby-ui");
    let log = log_of(&server, &url);
    let owner_log = work.path().join("owner.log");
    let mut owner = spawn_logged(job(&server, &input, &out, &url, &[]), &owner_log);
    wait_until("the owner commits", || {
        alive(&owner_log);
        last_commit(&log).is_some()
    });
    // The standby with its UI (the job's flags say --no-ui; a later flag cannot undo
    // it, so this one is built by hand).
    let standby_log = work.path().join("standby.log");
    let mut c = lockgate(&server, &["run", "log-errors", "--once", "--quiet"]);
    c.args([
        "--max-files-per-batch",
        "1",
        "--lease-timeout",
        "1s",
        "--ui-port",
        "0",
    ])
    .arg("--input")
    .arg(&input)
    .arg("--output")
    .arg(&out)
    .args(["--checkpoint", &url, "--standby"]);
    let standby = spawn_logged(c, &standby_log);
    let mut addr = String::new();
    wait_until("the standby's UI is up", || {
        let text = std::fs::read_to_string(&standby_log).unwrap_or_default();
        if let Some(rest) = text.split("streaming UI and API at http://").nth(1) {
            addr = rest.lines().next().unwrap_or_default().trim().to_string();
        }
        !addr.is_empty()
    });
    wait_until("the standby says so in /metrics", || {
        http_get(&addr, "/metrics").contains("lockgate_standby{app=\"log-errors\"} 1")
    });
    let apps = http_get(&addr, "/api/v1/applications");
    let id = apps
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let stats = http_get(
        &addr,
        &format!("/api/v1/applications/{id}/streaming/statistics"),
    );
    assert!(stats.contains("\"role\":\"standby\""), "{stats}");
    assert!(
        stats.contains(&format!("\"location\":\"{url}\"")),
        "{stats}"
    );
    owner.kill().unwrap();
    let _ = owner.wait();
    let (ok, err) = finish(standby, &standby_log);
    assert!(ok, "the standby failed: {err}");
    assert!(err.contains("took over the checkpoint's lease"), "{err}");
    assert_eq!(outputs(&out), reference(&input, work.path()));
}
