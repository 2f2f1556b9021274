//! Duration syntax: an integer followed by `ms`, `s`, `m`, `h` or `d`.
//!
//! Whitespace around the value, and between the number and its unit, is allowed
//! (`" 30s "`, `"30 s"`). A missing unit, an unknown unit, a sign, a fraction or a value
//! that does not fit a [`Duration`] is an error. This module only parses text; the key
//! path of a bad value is added by the caller.

use std::time::Duration;

/// Why a duration string was refused. Messages say what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration; write a number and a unit, such as \"30s\"")]
    Empty,
    /// The text does not start with a digit.
    #[error(
        "{text:?} does not start with a number; write a whole number and a unit, such as \"30s\""
    )]
    NoNumber {
        /// The text as given.
        text: String,
    },
    /// A number with no unit after it.
    #[error("{text:?} has no unit; add one of ms, s, m, h, d (such as \"{text}s\")")]
    MissingUnit {
        /// The text as given.
        text: String,
    },
    /// A unit that is not one of `ms`, `s`, `m`, `h`, `d`.
    #[error("unknown unit {unit:?} in {text:?}; use one of ms, s, m, h, d")]
    UnknownUnit {
        /// The text as given.
        text: String,
        /// What stood where the unit should be.
        unit: String,
    },
    /// The number or the product with its unit does not fit.
    #[error("{text:?} is too large")]
    Overflow {
        /// The text as given.
        text: String,
    },
}

/// Splits `"<digits>[ ]<unit>"` (already trimmed) into its number and its unit.
/// `None` when it does not start with a digit; a number of `None` does not fit a u64.
pub(crate) fn split_quantity(trimmed: &str) -> Option<(Option<u64>, &str)> {
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return None;
    }
    let (digits, rest) = trimmed.split_at(digits_end);
    Some((digits.parse().ok(), rest.trim_start()))
}

/// Parses `"<integer><unit>"` where unit is `ms`, `s`, `m`, `h` or `d`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let Some((number, unit)) = split_quantity(trimmed) else {
        return Err(DurationError::NoNumber {
            text: trimmed.to_owned(),
        });
    };
    let number = number.ok_or_else(|| DurationError::Overflow {
        text: trimmed.to_owned(),
    })?;
    if unit.is_empty() {
        return Err(DurationError::MissingUnit {
            text: trimmed.to_owned(),
        });
    }
    let overflow = || DurationError::Overflow {
        text: trimmed.to_owned(),
    };
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => number
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(overflow),
        "h" => number
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(overflow),
        "d" => number
            .checked_mul(86_400)
            .map(Duration::from_secs)
            .ok_or_else(overflow),
        other => Err(DurationError::UnknownUnit {
            text: trimmed.to_owned(),
            unit: other.to_owned(),
        }),
    }
}

/// Writes `d` the way an operator would: the largest unit that divides it exactly.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    // Sub-second values are written in milliseconds (rounded down below 1 ms).
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs.checked_rem(size) == Some(0) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn whitespace_is_allowed() {
        assert_eq!(parse("  30s\t"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30 s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 1800s "), Ok(Duration::from_secs(1800)));
    }

    #[test]
    fn missing_unit_is_an_error() {
        let err = parse("30").unwrap_err();
        assert_eq!(err, DurationError::MissingUnit { text: "30".into() });
        assert!(err.to_string().contains("\"30s\""), "{err}");
    }

    #[test]
    fn unknown_unit_is_an_error() {
        assert_eq!(
            parse("30sec"),
            Err(DurationError::UnknownUnit {
                text: "30sec".into(),
                unit: "sec".into()
            })
        );
        assert!(matches!(
            parse("3w"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("3S"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("1.5s"),
            Err(DurationError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn no_number_is_an_error() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("   "), Err(DurationError::Empty));
        assert!(matches!(parse("s"), Err(DurationError::NoNumber { .. })));
        assert!(matches!(parse("-5s"), Err(DurationError::NoNumber { .. })));
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            parse("99999999999999999999s"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse("18446744073709551615d"),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse("18446744073709551615m"),
            Err(DurationError::Overflow { .. })
        ));
        assert_eq!(
            parse("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["30s", "5m", "2h", "1d", "250ms", "0s", "90s"] {
            let d = parse(text).unwrap();
            assert_eq!(format(d), text);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
