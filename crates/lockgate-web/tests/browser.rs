//! The streaming page in a real headless Chromium (Debian's package, installed by
//! `scripts/chromium.sh` if missing): its charts and batch table appear and update while
//! batches complete, the rendered charts have labelled axes whose labels do not overlap
//! (the boxes Chromium laid the SVG text out in), the batch page shows each source's
//! descriptor with units, and screenshots of both are saved to `test-artifacts/`.

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

/// One SVG label as Chromium laid it out (`#layout` on the streaming page).
#[derive(Debug)]
struct Label {
    svg: u64,
    chart: String,
    cls: String,
    text: String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// Checks the rendered charts: every chart has a labelled y axis (ticks and a title)
/// and x axis (ticks and a title; clock times on the timelines), the titles name the
/// units, and no two labels of one chart overlap.
fn check_layout(dom: &str) {
    let start = dom.find("data-layout=\"").expect("the page's layout") + "data-layout=\"".len();
    let end = start + dom[start..].find('"').unwrap();
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let boxes: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let labels: Vec<Label> = boxes
        .iter()
        .map(|b| Label {
            svg: b["svg"].as_u64().unwrap(),
            chart: b["chart"].as_str().unwrap().to_string(),
            cls: b["cls"].as_str().unwrap_or("").to_string(),
            text: b["text"].as_str().unwrap().to_string(),
            x: b["x"].as_f64().unwrap(),
            y: b["y"].as_f64().unwrap(),
            w: b["w"].as_f64().unwrap(),
            h: b["h"].as_f64().unwrap(),
        })
        .collect();
    let charts: std::collections::BTreeSet<u64> = labels.iter().map(|l| l.svg).collect();
    assert_eq!(
        charts.len(),
        8,
        "four timelines and four histograms: {labels:?}"
    );
    for svg in charts {
        let of: Vec<&Label> = labels.iter().filter(|l| l.svg == svg).collect();
        let name = &of[0].chart;
        let with = |cls: &str| of.iter().filter(|l| l.cls == cls).count();
        assert!(with("tick y") >= 2, "{name}: y ticks: {of:?}");
        assert!(with("tick x") >= 1, "{name}: x ticks: {of:?}");
        assert_eq!(with("axis-title y"), 1, "{name}: {of:?}");
        assert_eq!(with("axis-title x"), 1, "{name}: {of:?}");
        let titles: Vec<&str> = of
            .iter()
            .filter(|l| l.cls.starts_with("axis-title"))
            .map(|l| l.text.as_str())
            .collect();
        if name.ends_with("timeline") {
            assert!(titles.contains(&"batch time"), "{name}: {titles:?}");
            let unit = if name.starts_with("chart-rate") {
                "records/s"
            } else {
                "ms"
            };
            assert!(titles.contains(&unit), "{name}: {titles:?}");
            for t in of.iter().filter(|l| l.cls == "tick x") {
                let clock = t.text.len() == 8 && t.text.chars().filter(|c| *c == ':').count() == 2;
                assert!(clock, "{name}: a time label reads HH:MM:SS: {t:?}");
            }
        } else {
            assert!(titles.contains(&"batches"), "{name}: {titles:?}");
        }
        for (i, a) in of.iter().enumerate() {
            assert!(a.w > 0.0 && a.h > 0.0, "{name}: an empty label: {a:?}");
            for b in &of[i + 1..] {
                let apart =
                    a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
                assert!(apart, "{name}: labels overlap: {a:?} and {b:?}");
            }
        }
    }
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

    let url = format!("{}/streaming/", ui.url());
    let first = browse(&bin, profile.path(), &url, &["--dump-dom"]);
    assert!(
        first.contains("Streaming: <span id=\"app\">test</span>"),
        "{first}"
    );
    assert_eq!(count(&first, "<polyline"), 4, "four timelines: {first}");
    assert!(count(&first, "<rect") >= 4, "histograms: {first}");
    assert!(first.contains("<b id=\"completed\">3</b>"), "{first}");
    assert!(
        first.contains("/streaming/batch/?id=3000"),
        "batch table links at Spark's path: {first}"
    );
    assert!(
        first.contains("1 record</td>"),
        "units in the tables: {first}"
    );
    assert!(first.contains("batch interval 1000 ms"), "{first}");
    // Times are local and readable (`2026/12/07 03:10:22`), not the API's strings.
    let since = first.split("<b id=\"since\">").nth(1).unwrap();
    let since = &since[..since.find("</b>").unwrap()];
    assert!(
        !since.contains("GMT") && since.matches('/').count() == 2 && since.contains(':'),
        "{since}"
    );
    assert!(!first.contains("data-error"), "script error: {first}");
    assert!(
        first.contains("1 value(s) skipped (1 not JSON); last skipped: not JSON (expected value) at file `a.json` line 3"),
        "skipped input on the sources table: {first}"
    );

    run.run_batches(4).unwrap();
    let second = browse(&bin, profile.path(), &url, &["--dump-dom"]);
    assert!(second.contains("<b id=\"completed\">7</b>"), "{second}");
    assert!(second.contains("/streaming/batch/?id=7000"), "{second}");
    check_layout(&browse(
        &bin,
        profile.path(),
        &format!("{url}#layout"),
        &["--dump-dom", "--window-size=1280,1400"],
    ));
    assert!(
        count(&second, "<circle") > count(&first, "<circle"),
        "the timelines grew"
    );

    let batch = browse(
        &bin,
        profile.path(),
        &format!("{}/streaming/batch/?id=2000", ui.url()),
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
    assert!(
        batch.contains(" record") && batch.contains(" ms</td>"),
        "units: {batch}"
    );

    let artifacts = repo().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for (page, name) in [
        (url.clone(), "streaming.png"),
        (
            format!("{}/streaming/batch/?id=2000", ui.url()),
            "batch.png",
        ),
    ] {
        let shot = artifacts.join(name);
        let _ = std::fs::remove_file(&shot);
        browse(
            &bin,
            profile.path(),
            &page,
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
            "screenshot {name} missing"
        );
    }

    run.ctx.stop(false).unwrap();
    drop(ui);
}
