//! Event bodies: the few fields a later layer needs to deduplicate deliveries (by event id)
//! and order state changes (by event time). Parsed only after the signature was verified.

use bastion_types::UnixTime;
use serde::Deserialize;

use super::WebhookError;

/// Longest accepted event id or event type, bytes.
pub const EVENT_FIELD_BYTES_MAX: usize = 255;

/// The parts of a Stripe event object (Stripe API reference, "The Event object") that
/// Bastion uses.
///
/// Shape read from the body: `{"id": "evt_…", "object": "event", "type": "…",
/// "created": <unix seconds>, "livemode": bool?, "data": {"object": {"id"?, "object"?,
/// "status"?, "created"?}}}`. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripeEvent {
    /// The event id (`evt_…`): the same on every redelivery, so the deduplication key.
    pub id: String,
    /// The event type, e.g. `payment_intent.succeeded`.
    pub event_type: String,
    /// When Stripe created the event, Unix seconds: orders events about one object.
    pub created: UnixTime,
    /// `livemode`, when present: a test-mode event reaching a live endpoint is suspicious.
    pub livemode: Option<bool>,
    /// `data.object.id`, e.g. `pi_…`: which object changed (absent for a few objects such
    /// as `balance`).
    pub object_id: Option<String>,
    /// `data.object.object`, e.g. `payment_intent`.
    pub object_type: Option<String>,
    /// `data.object.status`, e.g. `succeeded`, when the object has one.
    pub object_status: Option<String>,
    /// `data.object.created`, Unix seconds, when the object has one.
    pub object_created: Option<UnixTime>,
}

#[derive(Deserialize)]
struct RawStripeEvent {
    id: String,
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    livemode: Option<bool>,
    data: RawStripeData,
}

#[derive(Deserialize)]
struct RawStripeData {
    object: RawStripeObject,
}

#[derive(Deserialize)]
struct RawStripeObject {
    id: Option<String>,
    object: Option<String>,
    status: Option<String>,
    created: Option<i64>,
}

impl StripeEvent {
    /// Parses a Stripe event from the raw (already verified) body.
    ///
    /// Requires `id` starting with `evt_`, a non-empty `type`, a non-negative integer
    /// `created`, `object` equal to `"event"` when present, and `data.object` to be an
    /// object; ids and types are at most [`EVENT_FIELD_BYTES_MAX`] bytes.
    ///
    /// # Errors
    /// [`WebhookError::InvalidEvent`] with a fixed phrase naming the first broken rule.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        let raw: RawStripeEvent = serde_json::from_slice(body).map_err(|_| {
            WebhookError::InvalidEvent(
                "stripe event must be a json object with id, type, created and data.object",
            )
        })?;
        if !raw.id.starts_with("evt_") || raw.id.len() > EVENT_FIELD_BYTES_MAX {
            return Err(WebhookError::InvalidEvent(
                "stripe event id must start with `evt_` and have at most 255 bytes",
            ));
        }
        check_type(&raw.event_type)?;
        if raw.object.as_deref().is_some_and(|o| o != "event") {
            return Err(WebhookError::InvalidEvent(
                "stripe event object must be `event`",
            ));
        }
        if raw.created < 0 {
            return Err(WebhookError::InvalidEvent(
                "stripe event created is negative",
            ));
        }
        Ok(Self {
            id: raw.id,
            event_type: raw.event_type,
            created: raw.created,
            livemode: raw.livemode,
            object_id: raw.data.object.id,
            object_type: raw.data.object.object,
            object_status: raw.data.object.status,
            object_created: raw.data.object.created,
        })
    }
}

fn check_type(event_type: &str) -> Result<(), WebhookError> {
    if event_type.is_empty() || event_type.len() > EVENT_FIELD_BYTES_MAX {
        return Err(WebhookError::InvalidEvent(
            "event type must have 1 to 255 bytes",
        ));
    }
    Ok(())
}

/// The parts of a Standard Webhooks payload (spec, "Payload structure") Bastion uses.
///
/// Shape read from the body: `{"type": "…", "timestamp": "<RFC 3339 date-time>",
/// "data": {…}}`. Unknown fields are ignored. The message id is the `webhook-id` header,
/// not part of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StandardEvent {
    /// The event type, e.g. `invoice.paid`.
    pub event_type: String,
    /// When the event occurred, Unix seconds (the payload's `timestamp`, fraction dropped).
    pub occurred_at: UnixTime,
}

#[derive(Deserialize)]
struct RawStandardEvent {
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
}

impl StandardEvent {
    /// Parses a Standard Webhooks payload from the raw (already verified) body.
    ///
    /// # Errors
    /// [`WebhookError::InvalidEvent`] when the body is not a JSON object with a string
    /// `type` (1 to 255 bytes) and a string `timestamp` in RFC 3339 `date-time` form.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        let raw: RawStandardEvent = serde_json::from_slice(body).map_err(|_| {
            WebhookError::InvalidEvent(
                "standard webhooks payload must be a json object with type and timestamp",
            )
        })?;
        check_type(&raw.event_type)?;
        let occurred_at = parse_rfc3339(&raw.timestamp).ok_or(WebhookError::InvalidEvent(
            "standard webhooks payload timestamp must be an rfc 3339 date-time",
        ))?;
        Ok(Self {
            event_type: raw.event_type,
            occurred_at,
        })
    }
}

/// Parses an RFC 3339 §5.6 `date-time` (`2022-11-03T20:26:10.344522Z`,
/// `2022-11-03T21:26:10+01:00`) into Unix seconds, dropping any fraction. Leap seconds
/// (`:60`) are refused.
#[must_use]
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from.checked_add(len)?)?;
        digits.iter().try_fold(0_i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2022-04-07T21:39:13Z"), Some(1_649_367_553));
        assert_eq!(
            parse_rfc3339("2022-04-07T21:39:13.999999Z"),
            Some(1_649_367_553)
        );
        assert_eq!(
            parse_rfc3339("2022-04-07T23:39:13+02:00"),
            Some(1_649_367_553)
        );
        assert_eq!(
            parse_rfc3339("2022-04-07T20:39:13-01:00"),
            Some(1_649_367_553)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2022-04-07",
            "2022-04-07T21:39:13",
            "2022-04-07T21:39:13.Z",
            "2022-13-07T21:39:13Z",
            "2022-02-29T00:00:00Z",
            "2022-04-07T24:00:00Z",
            "2022-04-07T21:39:60Z",
            "2022-04-07T21:39:13Zjunk",
            "2022-04-07T21:39:13+0200",
            "+022-04-07T21:39:13Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }
}
