//! Identifier newtypes. Each parses instead of validating, so a value of the type is valid.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An identifier could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not a UUID in its canonical hyphenated form.
    #[error("`{0}` is not a valid id")]
    Uuid(String),
    /// A slug must be 1–63 characters of `a-z`, `0-9` and `-`, starting with a letter.
    #[error("`{0}` is not a valid name: use 1-63 of a-z, 0-9 and -, starting with a letter")]
    Slug(String),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            #[must_use]
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses the canonical hyphenated form.
            ///
            /// # Errors
            /// [`IdError::Uuid`] when `s` is not a UUID.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::try_parse(s).map(Self).map_err(|_| IdError::Uuid(truncate(s)))
            }

            /// The underlying UUID.
            #[must_use]
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Wraps a UUID read from trusted storage.
            #[must_use]
            pub fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

uuid_id!(
    /// A tenant: the unit of isolation. Every tenant-owned row carries one.
    TenantId
);
uuid_id!(
    /// A user account, unique across tenants.
    UserId
);
uuid_id!(
    /// A record of a manifest entity (a quote, a proposal).
    RecordId
);

/// Cuts user input for error messages so an attacker cannot make errors arbitrarily large.
fn truncate(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    s.chars().take(MAX_CHARS).collect()
}

/// A short lowercase name: tenant slugs, usernames, role and tool names.
///
/// 1–63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Longest accepted slug, in characters.
    pub const LEN_MAX: usize = 63;

    /// Parses a slug.
    ///
    /// # Errors
    /// [`IdError::Slug`] when `s` is empty, too long, or has other characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::LEN_MAX
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Slug(truncate(s)))
        }
    }

    /// The slug as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_parse_strictly() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("finance-2").is_ok());
        for bad in ["", "Acme", "1abc", "a b", "a/b", "ä", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let t = TenantId::new_random();
        assert_eq!(TenantId::parse(&t.to_string()), Ok(t));
        assert!(TenantId::parse("' OR 1=1 --").is_err());
    }
}
