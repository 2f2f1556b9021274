//! Byte-size syntax: a whole number with an optional unit, such as `"512MiB"`.
//!
//! `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024 (as in systemd's
//! `MemoryMax=`); `KB`, `MB`, `GB`, `TB` are powers of 1000; `B` or no unit is bytes.
//! Units are case-insensitive and may be separated from the number by whitespace. This
//! module only parses text; the key path of a bad value is added by the caller.

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text does not start with a digit.
    #[error(
        "{text:?} is not a size; write a whole number of bytes or a number and a unit, \
         such as \"512MiB\""
    )]
    NoNumber {
        /// The text as given.
        text: String,
    },
    /// A unit that is not one of the known ones.
    #[error(
        "unknown unit {unit:?} in {text:?}; use B, K, M, G, T, KiB, MiB, GiB, TiB, KB, \
         MB, GB or TB"
    )]
    UnknownUnit {
        /// The text as given.
        text: String,
        /// What stood where the unit should be.
        unit: String,
    },
    /// The value does not fit 64 bits.
    #[error("{text:?} is too large")]
    Overflow {
        /// The text as given.
        text: String,
    },
}

/// Parses a size such as `"64M"`, `"1GiB"`, `"1500 KB"` or `"4096"` into bytes.
pub fn parse(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let Some((number, unit)) = crate::duration::split_quantity(trimmed) else {
        return Err(SizeError::NoNumber {
            text: trimmed.to_owned(),
        });
    };
    let overflow = || SizeError::Overflow {
        text: trimmed.to_owned(),
    };
    let number = number.ok_or_else(overflow)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(SizeError::UnknownUnit {
                text: trimmed.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    number.checked_mul(multiplier).ok_or_else(overflow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("10B"), Ok(10));
        assert_eq!(parse("64M"), Ok(64 << 20));
        assert_eq!(parse("512MiB"), Ok(512 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("1 gib"), Ok(1 << 30));
        assert_eq!(parse("2KB"), Ok(2000));
        assert_eq!(parse(" 3 T "), Ok(3 << 40));
    }

    #[test]
    fn errors() {
        assert!(matches!(parse("MiB"), Err(SizeError::NoNumber { .. })));
        assert!(matches!(parse(""), Err(SizeError::NoNumber { .. })));
        assert!(matches!(parse("1.5G"), Err(SizeError::UnknownUnit { .. })));
        assert!(matches!(
            parse("5 parsecs"),
            Err(SizeError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("99999999999T"),
            Err(SizeError::Overflow { .. })
        ));
    }
}
