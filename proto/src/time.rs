//! Times and lifetimes as the wire carries them, checked before any arithmetic: a JWT
//! NumericDate (RFC 7519 §2) is whole seconds since the epoch from 1970 to the end of the year
//! 9999, and a lifetime in seconds is bounded by the longest grant the exchange can express.
//!
//! A value outside those bounds (`exp` of `1e300`, `-1`, `1.5`, `"soon"`) is refused with a
//! [`TimeError`] naming what is wrong, never clamped: an `exp` saturated to `i64::MAX` would
//! be a token that never expires.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z, in seconds since the epoch.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// The latest time accepted in milliseconds since the epoch (the end of the year 9999).
pub const MAX_EPOCH_MS: i64 = MAX_NUMERIC_DATE * 1000 + 999;

/// Longest lifetime the exchange's `ttl` parameter can express, in minutes (roles allow far
/// less); [`crate::exchange::MAX_TTL_MINUTES`] names it where requests are parsed.
pub const MAX_TTL_MINUTES: u32 = 100_000;

/// The longest lifetime (`expires_in`) accepted, in seconds: the longest `ttl` a request
/// can express.
pub const MAX_LIFETIME_SECS: i64 = MAX_TTL_MINUTES as i64 * 60;

/// Why a time or lifetime value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not a JSON number.
    #[error("is not a number")]
    NotNumber,
    /// A number with a fractional part.
    #[error("is not a whole number of seconds")]
    NotWhole,
    /// Below zero.
    #[error("is negative")]
    Negative,
    /// A date beyond the end of the year 9999.
    #[error("is beyond the year 9999 (at most {MAX_NUMERIC_DATE})")]
    BeyondYear9999,
    /// A lifetime longer than [`MAX_LIFETIME_SECS`].
    #[error("is longer than {MAX_LIFETIME_SECS} seconds")]
    TooLong,
}

/// Checks seconds since the epoch: `0..=`[`MAX_NUMERIC_DATE`].
pub fn check_numeric_date(secs: i64) -> Result<i64, TimeError> {
    match secs {
        s if s < 0 => Err(TimeError::Negative),
        s if s > MAX_NUMERIC_DATE => Err(TimeError::BeyondYear9999),
        s => Ok(s),
    }
}

/// Checks milliseconds since the epoch: `0..=`[`MAX_EPOCH_MS`].
pub fn check_epoch_ms(ms: i64) -> Result<i64, TimeError> {
    match ms {
        m if m < 0 => Err(TimeError::Negative),
        m if m > MAX_EPOCH_MS => Err(TimeError::BeyondYear9999),
        m => Ok(m),
    }
}

/// Checks a lifetime in seconds: `0..=`[`MAX_LIFETIME_SECS`].
pub fn check_lifetime_secs(secs: i64) -> Result<i64, TimeError> {
    match secs {
        s if s < 0 => Err(TimeError::Negative),
        s if s > MAX_LIFETIME_SECS => Err(TimeError::TooLong),
        s => Ok(s),
    }
}

/// A NumericDate claim of a JSON token (`exp`, `nbf`, `iat`, `auth_time`) as whole seconds.
///
/// Integers and whole-valued floats (`1.7e9`) in range are accepted; fractions, negatives,
/// dates beyond the year 9999 (`1e300`), huge integers and non-numbers are refused — before
/// the caller does any arithmetic with the value.
pub fn numeric_date(v: &serde_json::Value) -> Result<i64, TimeError> {
    let serde_json::Value::Number(n) = v else {
        return Err(TimeError::NotNumber);
    };
    if let Some(i) = n.as_i64() {
        return check_numeric_date(i);
    }
    if n.is_u64() {
        // Above i64::MAX: far beyond any date.
        return Err(TimeError::BeyondYear9999);
    }
    // serde_json numbers are finite; a float is checked before it is converted.
    let f = n.as_f64().ok_or(TimeError::NotNumber)?;
    if f.fract() != 0.0 {
        return Err(TimeError::NotWhole);
    }
    if f < 0.0 {
        return Err(TimeError::Negative);
    }
    if f > MAX_NUMERIC_DATE as f64 {
        return Err(TimeError::BeyondYear9999);
    }
    // In 0..=MAX_NUMERIC_DATE and whole: the conversion is exact.
    Ok(f as i64)
}

/// `#[serde(deserialize_with = "…")]` for an `i64` NumericDate field (seconds).
pub fn de_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let secs = i64::deserialize(d)?;
    check_numeric_date(secs).map_err(|e| D::Error::custom(format_args!("time {secs} {e}")))
}

/// `#[serde(deserialize_with = "…")]` for an `i64` time field in milliseconds.
pub fn de_epoch_ms<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let ms = i64::deserialize(d)?;
    check_epoch_ms(ms).map_err(|e| D::Error::custom(format_args!("time {ms} ms {e}")))
}

/// `#[serde(deserialize_with = "…")]` for an `i64` lifetime field in seconds (`expires_in`).
pub fn de_lifetime_secs<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let secs = i64::deserialize(d)?;
    check_lifetime_secs(secs).map_err(|e| D::Error::custom(format_args!("lifetime {secs} {e}")))
}

/// `#[serde(default, deserialize_with = "…")]` for an optional NumericDate field.
pub fn de_opt_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<i64>::deserialize(d)?
        .map(|secs| {
            check_numeric_date(secs).map_err(|e| D::Error::custom(format_args!("time {secs} {e}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numeric_dates_in_range_are_whole_seconds() {
        assert_eq!(numeric_date(&json!(0)), Ok(0));
        assert_eq!(numeric_date(&json!(1_700_000_000)), Ok(1_700_000_000));
        assert_eq!(numeric_date(&json!(1.7e9)), Ok(1_700_000_000));
        assert_eq!(numeric_date(&json!(MAX_NUMERIC_DATE)), Ok(MAX_NUMERIC_DATE));
    }

    #[test]
    fn absurd_numeric_dates_are_refused_before_arithmetic() {
        let parse = |s: &str| numeric_date(&serde_json::from_str(s).expect("json"));
        assert_eq!(parse("1e300"), Err(TimeError::BeyondYear9999));
        assert_eq!(parse("-1e300"), Err(TimeError::Negative));
        assert_eq!(parse("253402300800"), Err(TimeError::BeyondYear9999));
        assert_eq!(parse("9223372036854775807"), Err(TimeError::BeyondYear9999));
        assert_eq!(
            parse("18446744073709551615"),
            Err(TimeError::BeyondYear9999)
        );
        assert_eq!(parse("-9223372036854775808"), Err(TimeError::Negative));
        assert_eq!(parse("-1"), Err(TimeError::Negative));
        assert_eq!(parse("1700000000.5"), Err(TimeError::NotWhole));
        assert_eq!(parse("0.5"), Err(TimeError::NotWhole));
        for not_number in [r#""1700000000""#, "null", "true", "[1]", "{}"] {
            assert_eq!(parse(not_number), Err(TimeError::NotNumber), "{not_number}");
        }
        assert_eq!(
            TimeError::BeyondYear9999.to_string(),
            "is beyond the year 9999 (at most 253402300799)"
        );
    }

    #[test]
    fn lifetimes_and_milliseconds_are_bounded() {
        assert_eq!(check_lifetime_secs(600), Ok(600));
        assert_eq!(
            check_lifetime_secs(MAX_LIFETIME_SECS),
            Ok(MAX_LIFETIME_SECS)
        );
        assert_eq!(
            check_lifetime_secs(MAX_LIFETIME_SECS + 1),
            Err(TimeError::TooLong)
        );
        assert_eq!(check_lifetime_secs(-1), Err(TimeError::Negative));
        assert_eq!(check_epoch_ms(MAX_EPOCH_MS), Ok(MAX_EPOCH_MS));
        assert_eq!(
            check_epoch_ms(MAX_EPOCH_MS + 1),
            Err(TimeError::BeyondYear9999)
        );
        assert_eq!(check_epoch_ms(-1), Err(TimeError::Negative));
    }
}
