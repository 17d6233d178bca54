//! Typed identifiers. Every row id is a UUIDv7 (time-ordered, so inserts stay at the end of
//! B-tree indexes); the wrapper type says which table it belongs to, so a `ContactId` can never
//! be passed where a `ConversationId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "sea-orm", derive(sea_orm::DeriveValueType))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn uuid(self) -> Uuid {
                self.0
            }

            /// The smallest id made at or after `at` (a UUIDv7 starts with its creation time
            /// in milliseconds, and ids compare byte by byte on SQLite and Postgres alike), so
            /// `id >= first_at(t)` selects the rows made since `t` by a primary-key range.
            pub fn first_at(at: std::time::SystemTime) -> Self {
                let ms = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let mut bytes = [0u8; 16];
                bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                bytes[6] = 0x70; // version 7, the rest of the field zero
                bytes[8] = 0x80; // RFC 9562 variant, the rest zero
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        /// UUID keys are chosen by the application, never generated from an integer sequence.
        #[cfg(feature = "sea-orm")]
        impl sea_orm::TryFromU64 for $name {
            fn try_from_u64(_: u64) -> Result<Self, sea_orm::DbErr> {
                Err(sea_orm::DbErr::ConvertFromU64(stringify!($name)))
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

typed_id!(
    /// A business (tenant): the unit of data isolation.
    TenantId
);
typed_id!(
    /// One of a tenant's phone numbers (a Twilio number or a simulator number).
    PhoneNumberId
);
typed_id!(
    /// A customer of a tenant, unique per (tenant, E.164 phone).
    ContactId
);
typed_id!(
    /// The thread between one contact and one of the tenant's numbers.
    ConversationId
);
typed_id!(
    /// One inbound or outbound text.
    MessageId
);
typed_id!(
    /// A tenant API key (the secret itself is never stored).
    ApiKeyId
);
typed_id!(
    /// A person who signs in (a local account, later also OIDC).
    UserId
);
typed_id!(
    /// A user's role in one tenant.
    MembershipId
);
typed_id!(
    /// An agency: runs many tenants (its sub-accounts) from one login.
    AgencyId
);
typed_id!(
    /// An invitation to join a tenant, sent by email.
    InviteId
);
typed_id!(
    /// One mail the simulator mailbox holds.
    MailId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_serde() {
        let id = MessageId::new();
        let parsed: MessageId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<MessageId>(&json).unwrap(), id);
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = TenantId::new();
        let b = TenantId::new();
        assert!(a < b);
    }

    #[test]
    fn first_at_splits_ids_by_their_creation_time() {
        use std::time::{Duration, SystemTime};
        let before = MessageId::new();
        std::thread::sleep(Duration::from_millis(2));
        let now = SystemTime::now();
        let floor = MessageId::first_at(now);
        std::thread::sleep(Duration::from_millis(2));
        let after = MessageId::new();
        assert!(before < floor && floor <= after, "{before} {floor} {after}");
        // Byte order is the order both databases compare in.
        assert!(before.0.as_bytes() < floor.0.as_bytes());
        assert!(floor.0.as_bytes() <= after.0.as_bytes());
        assert_eq!(floor.0.get_version_num(), 7);
        assert!(MessageId::first_at(now - Duration::from_secs(3600)) < floor);
    }
}
