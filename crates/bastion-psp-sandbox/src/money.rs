//! Major-unit decimals and UTC dates for the daily report.

use bastion_types::UnixTime;

/// A report date could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecimalError {
    /// Not `YYYY-MM-DD` with a real calendar date from 1970-01-01 to 9999-12-31.
    #[error("date must be `YYYY-MM-DD`")]
    Date,
}

/// ISO 4217 zero-decimal currencies among Stripe's (Stripe docs, "Zero-decimal currencies").
const ZERO_DECIMAL: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// ISO 4217 three-decimal currencies among Stripe's (Stripe docs, "Three-decimal currencies").
const THREE_DECIMAL: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];

/// The number of minor-unit digits of an ISO 4217 code (upper or lower case): 0 for
/// zero-decimal currencies (JPY, KRW, …), 3 for BHD, JOD, KWD, OMR, TND, otherwise 2.
#[must_use]
pub fn minor_unit_exponent(currency: &str) -> u32 {
    let upper = currency.to_ascii_uppercase();
    if ZERO_DECIMAL.contains(&upper.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&upper.as_str()) {
        3
    } else {
        2
    }
}

/// `amount_minor` as a major-unit decimal string with exactly `exponent` fraction digits:
/// 1234 with exponent 2 → `"12.34"`, -5 → `"-0.05"`, 1234 with exponent 0 → `"1234"`.
#[must_use]
pub fn format_major(amount_minor: i64, exponent: u32) -> String {
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10_u64.pow(exponent);
    let width = usize::try_from(exponent).unwrap_or(2);
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, "chrono-compatible
/// low-level date algorithms", `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD` (strictly: four, two and two digits) into the Unix second of that
/// day's 00:00:00 UTC.
///
/// # Errors
/// [`DecimalError::Date`] for another shape, a date that does not exist (2026-02-29), or a
/// year before 1970.
pub fn parse_date_utc(s: &str) -> Result<UnixTime, DecimalError> {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return Err(DecimalError::Date);
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, DecimalError> {
        let part = s.get(r).ok_or(DecimalError::Date)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(DecimalError::Date);
        }
        part.parse::<i64>().map_err(|_| DecimalError::Date)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(DecimalError::Date),
    };
    if y < 1970 || d < 1 || d > days_in_month {
        return Err(DecimalError::Date);
    }
    Ok(days_from_civil(y, m, d) * 86_400)
}
