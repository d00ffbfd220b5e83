//! Backpressure: Spark's PID rate estimator. After each batch it estimates how many
//! records per second the job can process and hands that rate to the receivers, which
//! then store no faster (their senders wait, TCP pushes back).

/// The terms behind one rate decision (shown on the batch page).
#[derive(Clone, Debug, PartialEq)]
pub struct RateDecision {
    /// The new rate limit, records per second.
    pub rate: f64,
    /// The rate the last batch was processed at, records per second.
    pub processing_rate: f64,
    /// Proportional term: the previous rate minus the processing rate.
    pub error: f64,
    /// Integral term: the backlog implied by the scheduling delay, as a rate.
    pub historical_error: f64,
    /// Derivative term: change of the error per second.
    pub d_error: f64,
}

/// Spark's `PIDRateEstimator`, with its defaults (proportional 1.0, integral 0.2,
/// derivative 0.0, minimum 100 records/s).
#[derive(Clone, Debug)]
pub struct PidRateEstimator {
    batch_interval_ms: f64,
    proportional: f64,
    integral: f64,
    derivative: f64,
    min_rate: f64,
    first_run: bool,
    latest_time: i64,
    latest_rate: f64,
    latest_error: f64,
}

impl PidRateEstimator {
    /// An estimator for batches of `batch_interval_ms`.
    pub fn new(batch_interval_ms: i64) -> Self {
        PidRateEstimator {
            batch_interval_ms: batch_interval_ms.max(1) as f64,
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
            first_run: true,
            latest_time: -1,
            latest_rate: -1.0,
            latest_error: -1.0,
        }
    }

    /// Feeds a completed batch (its time in ms, records, processing and scheduling delay
    /// in ms); returns the new rate and its terms, or `None` when there is nothing to
    /// learn from (empty batch, first batch).
    pub fn compute(
        &mut self,
        time_ms: i64,
        records: u64,
        processing_ms: i64,
        scheduling_ms: i64,
    ) -> Option<RateDecision> {
        if time_ms <= self.latest_time || records == 0 || processing_ms <= 0 {
            return None;
        }
        let since_update = (time_ms - self.latest_time) as f64 / 1000.0;
        let processing_rate = records as f64 / processing_ms as f64 * 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical_error = scheduling_ms as f64 * processing_rate / self.batch_interval_ms;
        let d_error = (error - self.latest_error) / since_update;
        let rate = (self.latest_rate
            - self.proportional * error
            - self.integral * historical_error
            - self.derivative * d_error)
            .max(self.min_rate);
        self.latest_time = time_ms;
        if self.first_run {
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            self.first_run = false;
            return None;
        }
        self.latest_rate = rate;
        self.latest_error = error;
        Some(RateDecision {
            rate,
            processing_rate,
            error,
            historical_error,
            d_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_sparks_pid_formula() {
        let mut e = PidRateEstimator::new(1000);
        // The first batch only sets the baseline (1000 records in 500 ms = 2000/s).
        assert_eq!(e.compute(1000, 1000, 500, 0), None);
        // Now 1000 records take 1000 ms (1000/s) and the batch waited 200 ms.
        let d = e.compute(2000, 1000, 1000, 200).unwrap();
        assert_eq!(d.processing_rate, 1000.0);
        assert_eq!(d.error, 1000.0);
        assert_eq!(d.historical_error, 200.0);
        // 2000 - 1.0 * 1000 - 0.2 * 200 - 0.0 * d = 960
        assert_eq!(d.rate, 960.0);
        // Nothing to learn from an empty batch.
        assert_eq!(e.compute(3000, 0, 0, 0), None);
        // The rate never drops below the minimum.
        let d = e.compute(4000, 10, 1000, 100_000).unwrap();
        assert_eq!(d.rate, 100.0);
    }
}
