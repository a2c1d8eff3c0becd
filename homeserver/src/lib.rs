//! The client side of prr's homeserver sources: the Matrix Client-Server API calls that
//! `prr serve` makes to learn about rooms (`/sync` in bot mode, a room's `/state` for
//! catch-up, joins, account data), with the retry policy every such call follows.
//!
//! - [`Homeserver`] holds the base URL and the token. As an appservice it masquerades as a
//!   user ([`Homeserver::acting_as`], `?user_id=`); as a bot it is that account.
//! - Every call retries by itself what is worth retrying ([`Retry`]): `429` after the
//!   `retry_after_ms` the homeserver asks for, `5xx` and network errors with an exponential
//!   backoff. A `401` is [`Error::Unauthorized`] at once; other refusals are
//!   [`Error::Refused`] with the homeserver's `errcode` and message.
//! - [`SyncBatch`] is a `/sync` response reduced to what prr ingests: the state events,
//!   timeline state events and redactions of each room (with their `room_id`), and the
//!   account data.
//! - [`draupnir`] reads a Draupnir bot's account data (protected rooms, watched lists) into
//!   the rooms of an instance manifest.
//!
//! Tokens are never logged, printed or stored: [`AccessToken`]'s `Debug` hides it, and no
//! URL that is logged carries it (it goes in the `Authorization` header).
//!
//! ```
//! use prr_homeserver::{AccessToken, Homeserver};
//!
//! let hs = Homeserver::new("http://127.0.0.1:8008", AccessToken::new("secret")).unwrap();
//! let bot = hs.acting_as("@draupnir:example.org");
//! assert_eq!(bot.base_url().as_str(), "http://127.0.0.1:8008/");
//! assert!(!format!("{hs:?}").contains("secret"));
//! ```

mod client;
pub mod draupnir;
mod error;
mod retry;
mod sync;

pub use client::{AccessToken, Homeserver};
pub use error::Error;
pub use retry::Retry;
pub use sync::{RoomEvents, SyncBatch};
