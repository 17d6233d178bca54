//! Accounts: sign-in addresses, password rules and the roles a user holds in a tenant.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Shortest accepted password, in characters (NIST SP 800-63B asks for at least 8; we ask
/// for 10). Longer is always allowed up to [`PASSWORD_MAX_CHARS`].
pub const PASSWORD_MIN_CHARS: usize = 10;
/// Longest accepted password, in characters (bounds the hashing work per attempt).
pub const PASSWORD_MAX_CHARS: usize = 1024;

/// A sign-in email address: trimmed, lower-cased, `local@domain.tld`, at most 254 characters
/// (RFC 5321's path limit). One account per address.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Why an email address or a password was refused. The message follows a field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Not `local@domain.tld`, or longer than 254 characters.
    #[error("must be an email address such as owner@example.com")]
    Email,
    /// Fewer than [`PASSWORD_MIN_CHARS`] characters.
    #[error("must be at least {PASSWORD_MIN_CHARS} characters")]
    PasswordTooShort,
    /// More than [`PASSWORD_MAX_CHARS`] characters.
    #[error("must be at most {PASSWORD_MAX_CHARS} characters")]
    PasswordTooLong,
}

impl Email {
    /// Parses an address typed by a person.
    ///
    /// # Errors
    /// [`AccountError::Email`] when it is not `local@domain.tld` or is too long.
    pub fn parse(input: &str) -> Result<Email, AccountError> {
        let email = input.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(email.split_once('@'), Some((local, domain))
                if !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.'));
        if valid {
            Ok(Email(email))
        } else {
            Err(AccountError::Email)
        }
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

/// A password that meets the length rules. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks the length rules ([`PASSWORD_MIN_CHARS`] to [`PASSWORD_MAX_CHARS`] characters).
    ///
    /// # Errors
    /// [`AccountError::PasswordTooShort`] / [`AccountError::PasswordTooLong`].
    pub fn parse(input: &str) -> Result<Password, AccountError> {
        let n = input.chars().count();
        if n < PASSWORD_MIN_CHARS {
            Err(AccountError::PasswordTooShort)
        } else if n > PASSWORD_MAX_CHARS {
            Err(AccountError::PasswordTooLong)
        } else {
            Ok(Password(input.to_string()))
        }
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(…)")
    }
}

/// What a user may do in one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "sea-orm",
    derive(sea_orm::EnumIter, sea_orm::DeriveActiveEnum)
)]
#[cfg_attr(
    feature = "sea-orm",
    sea_orm(
        rs_type = "String",
        db_type = "String(sea_orm::sea_query::StringLen::None)"
    )
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Created the business; everything an admin can, and the business itself.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "owner"))]
    Owner,
    /// Settings, members, billing, and the inbox.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "admin"))]
    Admin,
    /// The inbox only: no settings, billing or members.
    #[cfg_attr(feature = "sea-orm", sea_orm(string_value = "agent"))]
    Agent,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Agent];

    /// True for roles that may change settings, billing and members.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// `owner`, `admin` or `agent` (as stored, and as forms send it).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    /// The role named by [`Role::as_str`]'s text, if any.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(Role::parse("Owner"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            Email::parse("  Owner@Example.COM ").unwrap().as_str(),
            "owner@example.com"
        );
        for bad in [
            "",
            "owner",
            "owner@",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
            "a@com.",
        ] {
            assert_eq!(Email::parse(bad), Err(AccountError::Email), "{bad:?}");
        }
    }

    #[test]
    fn passwords_follow_the_length_rules_and_never_print() {
        assert_eq!(
            Password::parse("short").unwrap_err(),
            AccountError::PasswordTooShort
        );
        assert!(Password::parse("correct horse").is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(1025)).unwrap_err(),
            AccountError::PasswordTooLong
        );
        assert_eq!(
            format!("{:?}", Password::parse("correct horse").unwrap()),
            "Password(…)"
        );
    }

    #[test]
    fn only_owners_and_admins_manage() {
        assert!(Role::Owner.manages() && Role::Admin.manages() && !Role::Agent.manages());
    }
}
