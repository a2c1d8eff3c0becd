//! What identifies an intent for the effect handlers: its fingerprint, a hash of what the
//! handler would send. An outcome keeps the fingerprint of the intent it served: a `done`
//! server ACL serves only an intent with the same deny list, and a `failed` action is tried
//! again when its intent's fingerprint changes (a new reason, a new deny list).

use prr_engine::{Dictionary, Id};
use sha2::{Digest, Sha256};

/// The first 8 bytes of the SHA-256 of `parts`, each followed by a newline (no part holds
/// one: they are entities, room and event ids, reasons are escaped).
fn hash_parts<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.escape_debug().to_string().as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The fingerprint of a server ACL intent: its deny list (the entities in their order, which
/// `server_acl` keeps sorted).
pub(crate) fn acl_fingerprint(dict: &Dictionary, deny: &[Id]) -> u64 {
    let texts: Vec<String> = deny.iter().map(|id| dict.get(*id)).collect();
    acl_fingerprint_of(texts.iter().map(String::as_str))
}

/// [`acl_fingerprint`] of the deny list's entities as text.
pub(crate) fn acl_fingerprint_of<'a>(deny: impl IntoIterator<Item = &'a str>) -> u64 {
    hash_parts(deny)
}

/// The fingerprint of a ban intent: the rule it cites and the reason it gives.
pub(crate) fn ban_fingerprint_of(rule_room: &str, rule_event: &str, reason: &str) -> u64 {
    hash_parts([rule_room, rule_event, reason])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_with_what_is_sent_and_are_stable() {
        let d = Dictionary::new();
        let (a, b) = (d.intern("a.example"), d.intern("b.example"));
        assert_eq!(acl_fingerprint(&d, &[a, b]), acl_fingerprint(&d, &[a, b]));
        assert_ne!(acl_fingerprint(&d, &[a, b]), acl_fingerprint(&d, &[a]));
        assert_ne!(acl_fingerprint(&d, &[]), acl_fingerprint(&d, &[a]));
        // Stored in outcomes: the same on every run and every machine.
        assert_eq!(acl_fingerprint(&d, &[]), 0xe3b0c44298fc1c14);
        assert_ne!(
            ban_fingerprint_of("!l:x", "$1", "spam"),
            ban_fingerprint_of("!l:x", "$1", "<no reason supplied>")
        );
        assert_ne!(
            ban_fingerprint_of("!l:x", "$1\nx", ""),
            ban_fingerprint_of("!l:x", "$1", "x")
        );
    }
}
