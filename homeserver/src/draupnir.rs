//! A Draupnir bot's configuration in its account data, as the rooms of an instance manifest.
//!
//! Draupnir (and Mjolnir before it) keeps the rooms it protects in the account data event
//! [`PROTECTED_ROOMS`] (`{"rooms": [ROOM, ...]}`) and the policy lists it watches in
//! [`WATCHED_LISTS`] (`{"references": [ROOM, ...]}`). A room is written as a room id, an
//! alias, or a `matrix.to` permalink (`https://matrix.to/#/!id:server?via=server`), which is
//! what matrix-protection-suite writes today.

use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::{Error, Homeserver};

/// The account data type listing the rooms a Draupnir bot protects.
pub const PROTECTED_ROOMS: &str = "org.matrix.mjolnir.protected_rooms";
/// The account data type listing the policy lists a Draupnir bot watches.
pub const WATCHED_LISTS: &str = "org.matrix.mjolnir.watched_lists";

/// A room as Draupnir's account data names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomRef {
    /// A room id (`!...`) and servers to join it through.
    Id {
        /// The room id.
        room_id: String,
        /// Servers to join through (a permalink's `via`).
        via: Vec<String>,
    },
    /// A room alias (`#name:server`), to resolve.
    Alias {
        /// The alias.
        alias: String,
        /// Servers to join through (a permalink's `via`).
        via: Vec<String>,
    },
}

/// Reads a room id, an alias or a `matrix.to` permalink.
pub fn parse_room_ref(s: &str) -> Result<RoomRef, String> {
    let s = s.trim();
    let (target, via) = match s
        .strip_prefix("https://matrix.to/#/")
        .or_else(|| s.strip_prefix("http://matrix.to/#/"))
    {
        Some(rest) => {
            let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
            // A permalink to an event: `#/!room/$event`.
            let target = target.split('/').next().unwrap_or("");
            let target = percent_decode_str(target)
                .decode_utf8()
                .map_err(|_| format!("{s:?}: not UTF-8 once decoded"))?
                .into_owned();
            let via = url::form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k == "via")
                .map(|(_, v)| v.into_owned())
                .collect();
            (target, via)
        }
        None => (s.to_string(), Vec::new()),
    };
    match target.chars().next() {
        Some('!') if target.len() > 1 => Ok(RoomRef::Id {
            room_id: target,
            via,
        }),
        Some('#') if target.contains(':') => Ok(RoomRef::Alias { alias: target, via }),
        _ => Err(format!(
            "{s:?} is not a room id, an alias or a matrix.to permalink to a room"
        )),
    }
}

/// The rooms listed under `field` (an array of strings) of an account data `content`.
pub fn room_refs(content: &Value, field: &str) -> Result<Vec<RoomRef>, String> {
    let list = content
        .get(field)
        .ok_or_else(|| format!("no `{field}`"))?
        .as_array()
        .ok_or_else(|| format!("`{field}` is not an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v
                .as_str()
                .ok_or_else(|| format!("`{field}`[{i}] is not a string"))?;
            parse_room_ref(s).map_err(|e| format!("`{field}`[{i}]: {e}"))
        })
        .collect()
}

/// The manifest of the instance `bot` (the account the token acts as), from its account data:
/// `{"instances": [{"id": bot, "watch": [...], "protect": [...]}]}` with every room resolved to
/// its id (aliases through the room directory). Missing account data is an empty list; account
/// data of the wrong shape is [`Error::BadResponse`] naming the type and the entry.
pub async fn instance_manifest(hs: &Homeserver, bot: &str) -> Result<Value, Error> {
    let mut lists = Vec::new();
    for (kind, field) in [(WATCHED_LISTS, "references"), (PROTECTED_ROOMS, "rooms")] {
        let refs = match hs.account_data(bot, kind).await? {
            None => Vec::new(),
            Some(content) => room_refs(&content, field).map_err(|reason| Error::BadResponse {
                what: format!("account data {kind} of {bot}"),
                reason,
            })?,
        };
        let mut ids = Vec::with_capacity(refs.len());
        for r in refs {
            ids.push(match r {
                RoomRef::Id { room_id, .. } => room_id,
                RoomRef::Alias { alias, .. } => hs.resolve_alias(&alias).await?.0,
            });
        }
        ids.sort();
        ids.dedup();
        lists.push(ids);
    }
    let protect = lists.pop().unwrap_or_default();
    let watch = lists.pop().unwrap_or_default();
    Ok(json!({"instances": [{"id": bot, "watch": watch, "protect": protect}]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_aliases_and_permalinks() {
        let id = |room_id: &str, via: &[&str]| RoomRef::Id {
            room_id: room_id.into(),
            via: via.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(parse_room_ref("!abc:x.org").unwrap(), id("!abc:x.org", &[]));
        assert_eq!(parse_room_ref("!v12roomid").unwrap(), id("!v12roomid", &[]));
        assert_eq!(
            parse_room_ref("https://matrix.to/#/!abc:x.org?via=x.org&via=y.org").unwrap(),
            id("!abc:x.org", &["x.org", "y.org"])
        );
        assert_eq!(
            parse_room_ref("https://matrix.to/#/%21abc%3Ax.org/%24event?via=x.org").unwrap(),
            id("!abc:x.org", &["x.org"])
        );
        assert_eq!(
            parse_room_ref("https://matrix.to/#/%23bans%3Ax.org").unwrap(),
            RoomRef::Alias {
                alias: "#bans:x.org".into(),
                via: vec![]
            }
        );
        for bad in [
            "",
            "!",
            "@user:x.org",
            "#noserver",
            "https://example.org/#/!a:x",
        ] {
            assert!(parse_room_ref(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn account_data_of_the_wrong_shape_names_the_entry() {
        let c = json!({"rooms": ["!a:x", 3]});
        assert!(room_refs(&c, "rooms").unwrap_err().contains("`rooms`[1]"));
        assert!(
            room_refs(&json!({}), "rooms")
                .unwrap_err()
                .contains("no `rooms`")
        );
        assert_eq!(
            room_refs(&json!({"references": ["#l:x"]}), "references").unwrap(),
            [RoomRef::Alias {
                alias: "#l:x".into(),
                via: vec![]
            }]
        );
    }
}
