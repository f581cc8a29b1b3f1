//! Money as integer minor units plus an ISO 4217 currency. Never a float.

use serde::{Deserialize, Serialize};

/// Money could not be built or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not three uppercase ASCII letters (ISO 4217 alphabetic code).
    #[error("`{0}` is not an ISO 4217 currency code")]
    Currency(String),
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch: {0} vs {1}")]
    Mismatch(Currency, Currency),
    /// The result does not fit in an `i64` of minor units.
    #[error("amount overflow")]
    Overflow,
}

/// An ISO 4217 alphabetic currency code such as `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter uppercase code.
    ///
    /// # Errors
    /// [`MoneyError::Currency`] for anything else.
    pub fn parse(s: &str) -> Result<Self, MoneyError> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(MoneyError::Currency(s.chars().take(8).collect())),
        }
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII uppercase bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, MoneyError> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in integer minor units (cents for EUR/USD) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units; negative for debits where a sign is meaningful.
    pub minor: i64,
    /// ISO 4217 currency.
    pub currency: Currency,
}

impl Money {
    /// Adds two amounts of the same currency.
    ///
    /// # Errors
    /// [`MoneyError::Mismatch`] for different currencies, [`MoneyError::Overflow`] on overflow.
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::Mismatch(self.currency, other.currency));
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self {
            minor,
            currency: self.currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_strict() {
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".to_owned())
        );
        for bad in ["eur", "EU", "EURO", "€", ""] {
            assert!(Currency::parse(bad).is_err());
        }
    }

    #[test]
    fn money_adds_only_same_currency_without_overflow() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let a = Money {
            minor: 10,
            currency: eur,
        };
        assert_eq!(
            a.checked_add(Money {
                minor: 20,
                currency: eur
            })
            .unwrap()
            .minor,
            30
        );
        assert!(
            a.checked_add(Money {
                minor: 1,
                currency: usd
            })
            .is_err()
        );
        assert_eq!(
            Money {
                minor: i64::MAX,
                currency: eur
            }
            .checked_add(a),
            Err(MoneyError::Overflow)
        );
    }
}
