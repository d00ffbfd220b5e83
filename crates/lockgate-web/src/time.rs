//! Dates in the format of Spark's REST API: `2015-12-18T00:00:00.000GMT`.

/// Formats epoch milliseconds as Spark does.
pub fn spark_date(ms: i64) -> String {
    let c = lockgate_core::civil_time(ms.div_euclid(1000));
    let (h, m, s) = c.hms;
    format!(
        "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{:03}GMT",
        c.year,
        c.month,
        c.day,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_spark() {
        assert_eq!(
            super::spark_date(1_450_396_800_123),
            "2015-12-18T00:00:00.123GMT"
        );
        assert_eq!(super::spark_date(0), "1970-01-01T00:00:00.000GMT");
    }
}
