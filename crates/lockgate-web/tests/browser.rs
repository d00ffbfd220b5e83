//! The streaming page in a real headless Chromium (Debian's package, installed by
//! `scripts/chromium.sh` if missing): its charts and batch table appear and update while
//! batches complete, the batch page shows each source's descriptor, and a screenshot is
//! saved to `test-artifacts/streaming.png`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use lockgate_core::testing::ManualRun;
use lockgate_web::{UiConfig, UiServer};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn chromium() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/chromium.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/chromium.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
fn browse(bin: &str, profile: &std::path::Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn streaming_page_renders_and_updates_in_chromium() {
    let bin = chromium();
    let profile = tempfile::tempdir().unwrap();
    let run = ManualRun::new(2).unwrap();
    run.ctx
        .seq_stream(
            (0..20)
                .map(|b| (0..(b * 10 + 5)).collect::<Vec<i64>>())
                .collect(),
        )
        .map(|x| x * 2)
        .name("doubled")
        .foreach_batch(|_, _| ());
    let ui = UiServer::start(
        &run.ctx,
        &UiConfig {
            port: 0,
            ..Default::default()
        },
    )
    .unwrap();
    run.ctx.start().unwrap();
    run.run_batches(3).unwrap();
    // What a source skipped is on the page: counts by reason and the last location.
    run.ctx.metrics().source("seq-0").skipped_value(
        "not JSON",
        "not JSON (expected value) at file `a.json` line 3".into(),
    );

    let url = format!("{}/", ui.url());
    let first = browse(&bin, profile.path(), &url, &["--dump-dom"]);
    assert!(
        first.contains("Streaming: <span id=\"app\">test</span>"),
        "{first}"
    );
    assert_eq!(count(&first, "<polyline"), 4, "four timelines: {first}");
    assert!(count(&first, "<rect") >= 4, "histograms: {first}");
    assert!(first.contains("<b id=\"completed\">3</b>"), "{first}");
    assert!(
        first.contains("batch?id=3000"),
        "batch table links: {first}"
    );
    assert!(!first.contains("data-error"), "script error: {first}");
    assert!(
        first.contains("1 value(s) skipped (1 not JSON); last skipped: not JSON (expected value) at file `a.json` line 3"),
        "skipped input on the sources table: {first}"
    );

    run.run_batches(4).unwrap();
    let second = browse(&bin, profile.path(), &url, &["--dump-dom"]);
    assert!(second.contains("<b id=\"completed\">7</b>"), "{second}");
    assert!(second.contains("batch?id=7000"), "{second}");
    assert!(
        count(&second, "<circle") > count(&first, "<circle"),
        "the timelines grew"
    );

    let batch = browse(
        &bin,
        profile.path(),
        &format!("{}/batch?id=2000", ui.url()),
        &["--dump-dom"],
    );
    assert!(batch.contains("data-loaded=\"1\""), "{batch}");
    assert!(
        batch.contains("seq-0") && batch.contains("batch #1"),
        "input descriptor: {batch}"
    );
    assert!(batch.contains("succeeded"), "{batch}");
    assert!(
        batch.contains("<td>doubled</td>"),
        "operator times: {batch}"
    );
    assert!(batch.contains("seq-0.position"), "state sizes: {batch}");

    let artifacts = repo().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("streaming.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &bin,
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
            "--hide-scrollbars",
        ],
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot missing"
    );

    run.ctx.stop(false).unwrap();
    drop(ui);
}
