//! # lockgate-nexmark
//!
//! The [Nexmark](https://github.com/nexmark/nexmark) benchmark on Lockgate: a replayable
//! event source built on the `nexmark` crate's generator, and queries q0–q8 and q12
//! written on the [`DStream`] API.
//!
//! The source is deterministic: event `n` is the same on every run (the generator seeds
//! each event from its number, and the base time is fixed, never "now"), so a batch is
//! described by its offset range and a replayed batch regenerates the same events —
//! it fits the checkpoint protocol like Kafka's offset ranges do.
//!
//! | query | what | operators |
//! |---|---|---|
//! | q0 | pass-through | map |
//! | q1 | bid prices in euros | map |
//! | q2 | bids on every 123rd auction | filter |
//! | q3 | local item suggestion: sellers in OR/ID/CA with auctions in category 10 | incremental join in `map_with_state` |
//! | q4 | average winning price per category | event-time timers (`flat_map_groups_with_state`), running average |
//! | q5 | hot items: auctions with the most bids per 10 s window sliding by 2 s | sliding event-time windows, append mode |
//! | q6 | average winning price of each seller's last 10 auctions | q4's closing, `map_with_state` |
//! | q7 | highest bid per 10 s tumbling window | tumbling window with a custom aggregate |
//! | q8 | new users: people who opened an auction in the 10 s window they registered | keyed tumbling windows |
//! | q12 | bids per bidder in 10 s processing-time windows | `reduce_by_key_and_window` over batch time |
//!
//! q2 over the first 10,000 events, 2,000 per batch, counted against the events the
//! generator makes directly:
//!
//! ```
//! use lockgate_core::testing::{collect_output, ManualRun};
//! use lockgate_nexmark::{events, nexmark_stream, q2, Event, EVENTS_PER_SECOND};
//!
//! let run = ManualRun::new(2)?;
//! let bids = q2(&nexmark_stream(&run.ctx, 10_000, 2_000, EVENTS_PER_SECOND));
//! let out = collect_output(&bids);
//! run.ctx.start()?;
//! run.run_batches(5)?;
//! run.ctx.stop(false)?;
//! let got: usize = out.lock().unwrap().iter().map(Vec::len).sum();
//! let want = events(0..10_000, EVENTS_PER_SECOND)
//!     .iter()
//!     .filter(|e| matches!(e, Event::Bid(b) if b.auction % 123 == 0))
//!     .count();
//! assert_eq!(got, want);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

use std::ops::Range;

use lockgate_core::{DStream, OutputMode, State, StateSpec, StreamingContext, Time, WindowSpec};
use nexmark::config::{NexmarkConfig, RateShape};
pub use nexmark::event::{Auction, Bid, Event, Person};
use nexmark::EventGenerator;

/// The generator's fixed base time: 2015-07-15T00:00:00Z in epoch ms.
pub const BASE_TIME_MS: u64 = 1_436_918_400_000;

/// Event-time rate of the generator: events per second of event time.
pub const EVENTS_PER_SECOND: usize = 10_000;

/// How far event time may go back before an event is late (the generator emits events
/// in order, so this only guards against surprises).
pub const WATERMARK_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The generator configuration: the crate's defaults with a fixed base time and a
/// constant rate of `events_per_second` (of event time).
pub fn config(events_per_second: usize) -> NexmarkConfig {
    NexmarkConfig {
        base_time: BASE_TIME_MS,
        rate_shape: RateShape::Square,
        first_rate: events_per_second.max(1),
        next_rate: events_per_second.max(1),
        ..NexmarkConfig::default()
    }
}

/// The events at offsets `range` at `events_per_second` (the same on every call).
pub fn events(range: Range<u64>, events_per_second: usize) -> Vec<Event> {
    let n = usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0);
    EventGenerator::new(config(events_per_second))
        .with_offset(range.start)
        .take(n)
        .collect()
}

/// A replayable stream of the first `total` Nexmark events, `per_batch` per batch, at
/// `events_per_second` of event time ([`EVENTS_PER_SECOND`] is the usual rate).
pub fn nexmark_stream(
    ctx: &StreamingContext,
    total: u64,
    per_batch: u64,
    events_per_second: usize,
) -> DStream<Event> {
    ctx.generated_stream(per_batch, Some(total), move |r| {
        events(r, events_per_second)
    })
}

/// An event's time.
pub fn event_time(e: &Event) -> Option<Time> {
    i64::try_from(e.timestamp()).ok().map(Time)
}

fn id(x: usize) -> u64 {
    x as u64
}

fn bids(events: &DStream<Event>) -> DStream<Bid> {
    events.flat_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// q0: every event, unchanged (the cost of the source and the engine alone).
pub fn q0(events: &DStream<Event>) -> DStream<Event> {
    events.map(|e| e).name("q0")
}

/// q1: every bid as (auction, bidder, price in euros (×0.908, in cents), time).
pub fn q1(events: &DStream<Event>) -> DStream<(u64, u64, u64, u64)> {
    bids(events)
        .map(|b| {
            let euros = b.price as u64 * 908 / 1000;
            (id(b.auction), id(b.bidder), euros, b.date_time)
        })
        .name("q1")
}

/// q2: (auction, price) of the bids on auctions whose id is a multiple of 123.
pub fn q2(events: &DStream<Event>) -> DStream<(u64, u64)> {
    bids(events)
        .flat_map(|b| (b.auction % 123 == 0).then(|| (id(b.auction), b.price as u64)))
        .name("q2")
}

/// A person's (name, city, state).
pub type PersonInfo = (String, String, String);

/// q3: (name, city, state, auction id) for every auction in category 10 by a seller
/// living in OR, ID or CA — an incremental join: each match is emitted once, when its
/// second side arrives (state per person: their details and auctions seen before them).
pub fn q3(events: &DStream<Event>) -> DStream<(String, String, String, u64)> {
    type Side = (Option<PersonInfo>, Option<u64>);
    let sides: DStream<(u64, Side)> = events.flat_map(|e| match e {
        Event::Person(p) if matches!(p.state.as_str(), "or" | "id" | "ca") => {
            Some((id(p.id), (Some((p.name, p.city, p.state)), None)))
        }
        Event::Auction(a) if a.category == 10 => Some((id(a.seller), (None, Some(id(a.id))))),
        _ => None,
    });
    sides
        .map_with_state(StateSpec::function(
            |_seller: &u64, side: Option<Side>, st: &mut State<(Option<PersonInfo>, Vec<u64>)>| {
                let (mut person, mut waiting) = st.get().cloned().unwrap_or_default();
                let mut out = Vec::new();
                match side {
                    Some((Some(p), _)) => {
                        for a in waiting.drain(..) {
                            out.push((p.0.clone(), p.1.clone(), p.2.clone(), a));
                        }
                        person = Some(p);
                    }
                    Some((None, Some(a))) => match &person {
                        Some(p) => out.push((p.0.clone(), p.1.clone(), p.2.clone(), a)),
                        None => waiting.push(a),
                    },
                    _ => {}
                }
                st.update((person, waiting));
                out
            },
        ))
        .name("q3_join")
        .stream()
        .flat_map(|rows| rows)
        .name("q3")
}

/// A closed auction: (auction, category, seller, expires, winning price).
pub type Closed = (u64, u64, u64, u64, u64);

/// What the closing of auctions keys by auction id.
#[derive(Clone, Debug)]
enum AuctionOrBid {
    /// (category, seller, reserve, start, expires).
    Auction((u64, u64), (u64, u64, u64)),
    /// (price, time).
    Bid(u64, u64),
}

/// How long bids for an auction never seen are kept (event time).
const ORPHAN_BIDS_MS: i64 = 10 * 60 * 1000;

/// The auctions as they close (when the watermark passes their expiry, or at the end of
/// a bounded run) with their winning bid: the highest bid at or above the reserve price
/// placed between the auction's start and expiry. Auctions without one are dropped.
pub fn closed_auctions(events: &DStream<Event>) -> DStream<Closed> {
    type Info = ((u64, u64), (u64, u64, u64));
    // State per auction: its details (once seen), the best valid price, bids seen
    // before the auction itself.
    type Open = (Option<Info>, Option<u64>, Vec<(u64, u64)>);
    let keyed: DStream<(u64, (u64, AuctionOrBid))> = events.flat_map(|e| match e {
        Event::Auction(a) => Some((
            id(a.id),
            (
                a.date_time,
                AuctionOrBid::Auction(
                    (id(a.category), id(a.seller)),
                    (a.reserve as u64, a.date_time, a.expires),
                ),
            ),
        )),
        Event::Bid(b) => Some((
            id(b.auction),
            (b.date_time, AuctionOrBid::Bid(b.price as u64, b.date_time)),
        )),
        Event::Person(_) => None,
    });
    keyed
        .with_watermark(
            |(_, (t, _))| i64::try_from(*t).ok().map(Time),
            WATERMARK_DELAY,
        )
        .flat_map_groups_with_state(|auction: &u64, values: Vec<(u64, AuctionOrBid)>, st| {
            let (mut info, mut best, mut early): Open = st.get().cloned().unwrap_or_default();
            let valid = |i: &Info, price: u64, t: u64| {
                let (reserve, start, expires) = i.1;
                price >= reserve && t >= start && t <= expires
            };
            if st.has_timed_out() {
                st.remove();
                return match (info, best) {
                    (Some(((category, seller), (_, _, expires))), Some(price)) => {
                        vec![(*auction, category, seller, expires, price)]
                    }
                    _ => Vec::new(),
                };
            }
            for (_, v) in values {
                match v {
                    AuctionOrBid::Auction(a, b) => {
                        let i = (a, b);
                        for (price, t) in early.drain(..) {
                            if valid(&i, price, t) {
                                best = best.max(Some(price));
                            }
                        }
                        info = Some(i);
                    }
                    AuctionOrBid::Bid(price, t) => match &info {
                        Some(i) if valid(i, price, t) => best = best.max(Some(price)),
                        Some(_) => {}
                        None => early.push((price, t)),
                    },
                }
            }
            let timer = match &info {
                Some((_, (_, _, expires))) => i64::try_from(*expires).unwrap_or(i64::MAX),
                // Bids of an auction never seen: dropped a while after the last one.
                None => {
                    let last = early.iter().map(|b| b.1).max().unwrap_or(0);
                    i64::try_from(last)
                        .unwrap_or(i64::MAX)
                        .saturating_add(ORPHAN_BIDS_MS)
                }
            };
            st.set_timeout_timestamp(Time(timer));
            st.update((info, best, early));
            Vec::new()
        })
        .name("closed_auctions")
}

/// q4: (category, average winning price) for every category whose average changed, as
/// auctions close.
pub fn q4(events: &DStream<Event>) -> DStream<(u64, u64)> {
    closed_auctions(events)
        .map(|(_, category, _, _, price)| (category, (price, 1u64)))
        .reduce_by_key(|a, b| (a.0 + b.0, a.1 + b.1))
        .map_with_state(StateSpec::function(
            |category: &u64, add: Option<(u64, u64)>, st: &mut State<(u64, u64)>| {
                let (sum, n) = st.get().copied().unwrap_or((0, 0));
                let (s, c) = add.unwrap_or((0, 0));
                let (sum, n) = (sum + s, n + c);
                st.update((sum, n));
                (*category, sum / n.max(1))
            },
        ))
        .name("q4_average")
        .stream()
        .name("q4")
}

/// q5: for each 10 s window sliding by 2 s, the auctions with the most bids:
/// (window start ms, auction, bids). Emitted when the window closes.
pub fn q5(events: &DStream<Event>) -> DStream<(i64, u64, i64)> {
    bids(events)
        .with_watermark(
            |b| i64::try_from(b.date_time).ok().map(Time),
            WATERMARK_DELAY,
        )
        .window(WindowSpec::sliding(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(2),
        ))
        .key_by(|b| id(b.auction))
        .output_mode(OutputMode::Append)
        .count()
        .name("q5_counts")
        // A window closes in one batch for all auctions: group the batch by window.
        .map(|w| (w.window.start.0, (w.key, w.value)))
        .group_by_key()
        .flat_map(|(start, mut counts)| {
            let max = counts.iter().map(|c| c.1).max().unwrap_or(0);
            counts.retain(|c| c.1 == max);
            counts.sort();
            counts
                .into_iter()
                .map(move |(auction, n)| (start, auction, n))
                .collect::<Vec<_>>()
        })
        .name("q5")
}

/// q6: (seller, average winning price of their last 10 closed auctions), whenever it
/// changes. Auctions closing in the same batch count in (expiry, id) order.
pub fn q6(events: &DStream<Event>) -> DStream<(u64, u64)> {
    closed_auctions(events)
        .map(|(auction, _, seller, expires, price)| (seller, (expires, auction, price)))
        .group_by_key()
        .map_with_state(StateSpec::function(
            |seller: &u64, closed: Option<Vec<(u64, u64, u64)>>, st: &mut State<Vec<u64>>| {
                let mut last = st.get().cloned().unwrap_or_default();
                let mut closed = closed.unwrap_or_default();
                closed.sort();
                last.extend(closed.into_iter().map(|c| c.2));
                let keep = last.len().saturating_sub(10);
                last.drain(..keep);
                let avg = last.iter().sum::<u64>() / (last.len() as u64).max(1);
                st.update(last);
                (*seller, avg)
            },
        ))
        .name("q6_last10")
        .stream()
        .name("q6")
}

/// q7: the highest bids of each 10 s tumbling window: (window end ms, auction, price,
/// bidder), emitted when the window closes.
pub fn q7(events: &DStream<Event>) -> DStream<(i64, u64, u64, u64)> {
    bids(events)
        .with_watermark(
            |b| i64::try_from(b.date_time).ok().map(Time),
            WATERMARK_DELAY,
        )
        .window(WindowSpec::tumbling(std::time::Duration::from_secs(10)))
        .output_mode(OutputMode::Append)
        .aggregate(
            || (0u64, Vec::<(u64, u64)>::new()),
            |acc, b| {
                let price = b.price as u64;
                if price > acc.0 || acc.1.is_empty() {
                    *acc = (price, Vec::new());
                }
                if price == acc.0 {
                    acc.1.push((id(b.auction), id(b.bidder)));
                }
            },
            |acc, other| {
                if other.0 > acc.0 || acc.1.is_empty() {
                    *acc = other.clone();
                } else if other.0 == acc.0 {
                    acc.1.extend(other.1.iter().copied());
                }
            },
        )
        .name("q7_max")
        .flat_map(|w| {
            let (price, mut winners) = w.value;
            winners.sort();
            let end = w.window.end.0;
            winners
                .into_iter()
                .map(move |(auction, bidder)| (end, auction, price, bidder))
                .collect::<Vec<_>>()
        })
        .name("q7")
}

/// q8: people who opened an auction in the same 10 s tumbling window they registered
/// in: (person id, name, window start ms), emitted when the window closes.
pub fn q8(events: &DStream<Event>) -> DStream<(u64, String, i64)> {
    events
        .flat_map(|e| match e {
            Event::Person(p) => Some((id(p.id), Some(p.name), p.date_time)),
            Event::Auction(a) => Some((id(a.seller), None, a.date_time)),
            Event::Bid(_) => None,
        })
        .with_watermark(|e| i64::try_from(e.2).ok().map(Time), WATERMARK_DELAY)
        .window(WindowSpec::tumbling(std::time::Duration::from_secs(10)))
        .key_by(|e| e.0)
        .output_mode(OutputMode::Append)
        .aggregate(
            || (None::<String>, false),
            |acc, e| match &e.1 {
                Some(name) => acc.0 = Some(name.clone()),
                None => acc.1 = true,
            },
            |acc, other| {
                if other.0.is_some() {
                    acc.0.clone_from(&other.0);
                }
                acc.1 |= other.1;
            },
        )
        .name("q8_window")
        .flat_map(|w| match w.value {
            (Some(name), true) => Some((w.key, name, w.window.start.0)),
            _ => None,
        })
        .name("q8")
}

/// q12: how many bids each bidder makes per processing-time window of `window` (10 s in
/// Nexmark), tumbling. Processing time is batch time: the window is rounded up to a
/// whole number of batch intervals, and a window's counts come out with its last batch.
pub fn q12(events: &DStream<Event>, window: std::time::Duration) -> DStream<(u64, i64)> {
    let interval = events
        .slide_duration()
        .max(std::time::Duration::from_millis(1));
    let batches = window.as_millis().div_ceil(interval.as_millis()).max(1);
    let window = interval * u32::try_from(batches).unwrap_or(u32::MAX);
    bids(events)
        .map(|b| (id(b.bidder), 1i64))
        .reduce_by_key_and_window(|a, b| a + b, window, window)
        .name("q12_window")
}

/// The queries by name, each reduced to the number of rows it emits per batch (for the
/// benchmark).
pub fn query_by_name(name: &str, events: &DStream<Event>) -> Option<DStream<i64>> {
    Some(match name {
        "q0" => q0(events).count(),
        "q1" => q1(events).count(),
        "q2" => q2(events).count(),
        "q3" => q3(events).count(),
        "q4" => q4(events).count(),
        "q5" => q5(events).count(),
        "q6" => q6(events).count(),
        "q7" => q7(events).count(),
        "q8" => q8(events).count(),
        "q12" => q12(events, std::time::Duration::from_secs(10)).count(),
        _ => return None,
    })
}

/// The names [`query_by_name`] knows.
pub const QUERIES: [&str; 10] = ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q12"];
