//! A quick look for a broker before a long call: a broker address where nothing
//! listens is named in the log within seconds, not after the call's whole timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};

/// How long the quick look waits for a broker's metadata.
pub(crate) const PROBE: Duration = Duration::from_secs(3);

/// Asks the brokers for metadata for at most [`PROBE`] (or the call's `timeout`, if
/// shorter) unless `said`; when none answers, warns that `who` finds no broker at
/// `brokers`, with the error, and what it does meanwhile (`retrying`), and sets `said`
/// (the caller clears it when a broker answers again).
pub(crate) fn warn_if_unanswered<C: ClientContext>(
    client: &Client<C>,
    said: &AtomicBool,
    brokers: &str,
    who: &str,
    timeout: Duration,
    retrying: &str,
) {
    if said.load(Ordering::Acquire) {
        return;
    }
    let wait = PROBE.min(timeout);
    if let Err(e) = client.fetch_metadata(None, wait) {
        said.store(true, Ordering::Release);
        tracing::warn!(
            "{who}: no Kafka broker answers at {brokers} within {wait:?} ({e}); {retrying}"
        );
    }
}
