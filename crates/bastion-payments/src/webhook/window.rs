//! Parts both schemes share: canonical timestamps and the two-sided tolerance window.

use bastion_types::UnixTime;

use super::WebhookError;

/// Most digits accepted in a signed timestamp: 18 always fit an `i64` (Unix seconds have
/// 10 digits until the year 2286).
pub(crate) const TIMESTAMP_DIGITS_MAX: usize = 18;

/// Parses a signed timestamp in canonical form: ASCII digits only, no sign, no leading zero
/// (so the string that was signed is exactly the decimal form of the number), 1 to 18 digits.
pub(crate) fn parse_timestamp(s: &str) -> Result<UnixTime, WebhookError> {
    if s.is_empty() || s.len() > TIMESTAMP_DIGITS_MAX {
        return Err(WebhookError::Malformed(
            "timestamp must have 1 to 18 digits",
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::Malformed("timestamp must be decimal digits"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(WebhookError::Malformed("timestamp has a leading zero"));
    }
    s.parse::<UnixTime>()
        .map_err(|_| WebhookError::Malformed("timestamp must have 1 to 18 digits"))
}

/// Accepts `timestamp` when `|now - timestamp| <= tolerance_secs`: late (replayed) and early
/// (future-dated) deliveries are both refused.
pub(crate) fn check_window(
    timestamp: UnixTime,
    now: UnixTime,
    tolerance_secs: u64,
) -> Result<(), WebhookError> {
    // i128 cannot overflow for any pair of i64 values.
    let skew = (i128::from(now) - i128::from(timestamp)).unsigned_abs();
    if skew > u128::from(tolerance_secs) {
        return Err(WebhookError::TimestampOutsideTolerance {
            timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_timestamps_only() {
        assert_eq!(parse_timestamp("0"), Ok(0));
        assert_eq!(parse_timestamp("1492774577"), Ok(1_492_774_577));
        for bad in [
            "",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "1234567890123456789",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn window_is_two_sided_and_inclusive() {
        assert!(check_window(1000, 1300, 300).is_ok());
        assert!(check_window(1000, 700, 300).is_ok());
        assert!(check_window(1000, 1301, 300).is_err());
        assert!(check_window(1000, 699, 300).is_err());
        assert!(check_window(i64::MIN, i64::MAX, u64::MAX).is_ok());
        assert!(check_window(i64::MAX, i64::MIN, 300).is_err());
    }
}
