//! Every query on a small bounded run, against its result computed directly from the
//! generated events in plain Rust (no engine).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use lockgate_core::testing::run_bounded;
use lockgate_core::{DStream, Time, WindowSpec};
use lockgate_nexmark::{events, nexmark_stream, Auction, Bid, Event};

/// 6,000 events at 100 per second: a minute of event time, many windows.
const N: u64 = 6_000;
const RATE: usize = 100;

fn all_events() -> Vec<Event> {
    events(0..N, RATE)
}

/// Runs `query` over the N events (bounded, 13 batches, 3 workers); the rows of every
/// batch in batch order.
fn run<U: lockgate_core::Data>(query: fn(&DStream<Event>) -> DStream<U>) -> Vec<Vec<U>> {
    let batches = run_bounded(3, |ctx| query(&nexmark_stream(ctx, N, 470, RATE))).unwrap();
    assert!(batches.len() > 10, "{} batches", batches.len());
    batches.into_values().collect()
}

fn sorted<U: Ord>(batches: Vec<Vec<U>>) -> Vec<U> {
    let mut all: Vec<U> = batches.into_iter().flatten().collect();
    all.sort();
    all
}

/// The last value emitted for each key.
fn finals<K: Ord + Clone + std::fmt::Debug, V>(batches: Vec<Vec<(K, V)>>) -> BTreeMap<K, V> {
    let mut m = BTreeMap::new();
    for b in batches {
        let mut seen = BTreeSet::new();
        for (k, v) in b {
            // One row per key and batch, so the order within a batch does not matter.
            assert!(seen.insert(k.clone()), "{k:?} twice in one batch");
            m.insert(k, v);
        }
    }
    m
}

fn bids(ev: &[Event]) -> Vec<&Bid> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn auctions(ev: &[Event]) -> Vec<&Auction> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some(a),
            _ => None,
        })
        .collect()
}

#[test]
fn the_source_is_deterministic_and_replayable_by_offset() {
    let ev = all_events();
    assert_eq!(ev.len() as u64, N);
    assert_eq!(events(1234..1300, RATE), ev[1234..1300].to_vec());
    // Event time follows the fixed base, never "now".
    assert_eq!(ev[0].timestamp(), lockgate_nexmark::BASE_TIME_MS);
    let counts = (
        ev.iter().filter(|e| matches!(e, Event::Person(_))).count(),
        auctions(&ev).len(),
        bids(&ev).len(),
    );
    assert_eq!(counts, (120, 360, 5_520));
}

#[test]
fn q0_passes_every_event_through() {
    // Events are not ordered: compare them as sorted debug strings (every field).
    let text = |events: Vec<Event>| {
        let mut v: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        v.sort();
        v
    };
    let got: Vec<Event> = run(lockgate_nexmark::q0).into_iter().flatten().collect();
    assert_eq!(got.len() as u64, N);
    assert_eq!(text(got), text(all_events()));
}

#[test]
fn q1_converts_bid_prices() {
    let ev = all_events();
    let mut want: Vec<(u64, u64, u64, u64)> = bids(&ev)
        .iter()
        .map(|b| {
            // 0.908 dollars per euro, in whole cents (rounded down).
            let euros = b.price as u64 * 908 / 1000;
            (b.auction as u64, b.bidder as u64, euros, b.date_time)
        })
        .collect();
    want.sort();
    assert_eq!(sorted(run(lockgate_nexmark::q1)), want);
}

#[test]
fn q2_selects_bids_on_every_123rd_auction() {
    let ev = all_events();
    let mut want: Vec<(u64, u64)> = bids(&ev)
        .iter()
        .filter(|b| b.auction % 123 == 0)
        .map(|b| (b.auction as u64, b.price as u64))
        .collect();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(sorted(run(lockgate_nexmark::q2)), want);
}

#[test]
fn q3_joins_local_sellers_with_their_category_10_auctions() {
    let ev = all_events();
    let mut want = Vec::new();
    for e in &ev {
        if let Event::Person(p) = e {
            if ["or", "id", "ca"].contains(&p.state.as_str()) {
                for a in auctions(&ev) {
                    if a.seller == p.id && a.category == 10 {
                        want.push((p.name.clone(), p.city.clone(), p.state.clone(), a.id as u64));
                    }
                }
            }
        }
    }
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(sorted(run(lockgate_nexmark::q3)), want);
}

/// Every auction with its winning price: the highest bid at or above the reserve placed
/// between the auction's start and expiry (the input is bounded: all auctions close).
fn winners(ev: &[Event]) -> Vec<(&Auction, u64)> {
    auctions(ev)
        .into_iter()
        .filter_map(|a| {
            bids(ev)
                .iter()
                .filter(|b| {
                    b.auction == a.id
                        && b.price >= a.reserve
                        && b.date_time >= a.date_time
                        && b.date_time <= a.expires
                })
                .map(|b| b.price as u64)
                .max()
                .map(|p| (a, p))
        })
        .collect()
}

#[test]
fn q4_averages_winning_prices_per_category() {
    let ev = all_events();
    let mut sums: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (a, price) in winners(&ev) {
        let s = sums.entry(a.category as u64).or_default();
        s.0 += price;
        s.1 += 1;
    }
    let want: BTreeMap<u64, u64> = sums.into_iter().map(|(c, (s, n))| (c, s / n)).collect();
    assert!(want.len() > 1);
    assert_eq!(finals(run(lockgate_nexmark::q4)), want);
}

#[test]
fn q5_finds_the_hottest_auctions_per_sliding_window() {
    let ev = all_events();
    let spec = WindowSpec::sliding(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(2),
    );
    let mut counts: BTreeMap<i64, BTreeMap<u64, i64>> = BTreeMap::new();
    for b in bids(&ev) {
        for w in spec.windows_of(Time(b.date_time as i64)) {
            *counts
                .entry(w.start.0)
                .or_default()
                .entry(b.auction as u64)
                .or_default() += 1;
        }
    }
    let mut want = Vec::new();
    for (start, per_auction) in counts {
        let max = per_auction.values().copied().max().unwrap();
        for (auction, n) in per_auction {
            if n == max {
                want.push((start, auction, n));
            }
        }
    }
    want.sort();
    assert!(want.len() > 20);
    assert_eq!(sorted(run(lockgate_nexmark::q5)), want);
}

#[test]
fn q6_averages_each_sellers_last_ten_closed_auctions() {
    let ev = all_events();
    let mut per_seller: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for (a, price) in winners(&ev) {
        per_seller
            .entry(a.seller as u64)
            .or_default()
            .push((a.expires, a.id as u64, price));
    }
    let want: BTreeMap<u64, u64> = per_seller
        .into_iter()
        .map(|(seller, mut closed)| {
            closed.sort();
            let last: Vec<u64> = closed.iter().rev().take(10).map(|c| c.2).collect();
            (seller, last.iter().sum::<u64>() / last.len() as u64)
        })
        .collect();
    assert!(want.len() > 5);
    assert_eq!(finals(run(lockgate_nexmark::q6)), want);
}

#[test]
fn q7_reports_the_highest_bids_per_tumbling_window() {
    let ev = all_events();
    let mut per_window: BTreeMap<i64, Vec<&Bid>> = BTreeMap::new();
    for b in bids(&ev) {
        let start = b.date_time as i64 / 10_000 * 10_000;
        per_window.entry(start + 10_000).or_default().push(b);
    }
    let mut want = Vec::new();
    for (end, bs) in per_window {
        let max = bs.iter().map(|b| b.price).max().unwrap();
        for b in bs.iter().filter(|b| b.price == max) {
            want.push((end, b.auction as u64, max as u64, b.bidder as u64));
        }
    }
    want.sort();
    assert!(want.len() >= 6);
    assert_eq!(sorted(run(lockgate_nexmark::q7)), want);
}

#[test]
fn q8_finds_people_who_sell_in_the_window_they_joined() {
    let ev = all_events();
    let window = |t: u64| t as i64 / 10_000 * 10_000;
    let mut want = Vec::new();
    for e in &ev {
        if let Event::Person(p) = e {
            let w = window(p.date_time);
            if auctions(&ev)
                .iter()
                .any(|a| a.seller == p.id && window(a.date_time) == w)
            {
                want.push((p.id as u64, p.name.clone(), w));
            }
        }
    }
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(sorted(run(lockgate_nexmark::q8)), want);
}

#[test]
fn q12_counts_bids_per_bidder_in_processing_time_windows() {
    // Windows of 3 batches (1 s each in the test harness): counts come out with batches
    // 2, 5, 8 and 11, each over the events of its three batches.
    let per_batch = 470u64;
    let out = run_bounded(3, |ctx| {
        lockgate_nexmark::q12(
            &nexmark_stream(ctx, N, per_batch, RATE),
            std::time::Duration::from_secs(3),
        )
    })
    .unwrap();
    let ev = all_events();
    let mut want: BTreeMap<u64, Vec<(u64, i64)>> = BTreeMap::new();
    for last in [2u64, 5, 8, 11] {
        let from = usize::try_from((last - 2) * per_batch).unwrap();
        let until = usize::try_from((last + 1) * per_batch).unwrap();
        let mut counts: BTreeMap<u64, i64> = BTreeMap::new();
        for b in bids(&ev[from..until]) {
            *counts.entry(b.bidder as u64).or_insert(0) += 1;
        }
        want.insert(last, counts.into_iter().collect());
    }
    let got: BTreeMap<u64, Vec<(u64, i64)>> = out
        .into_iter()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(id, mut rows)| {
            rows.sort();
            (id, rows)
        })
        .collect();
    assert!(want.values().all(|w| w.len() > 10));
    assert_eq!(got, want);
}
