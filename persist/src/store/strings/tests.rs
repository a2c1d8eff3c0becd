//! Unit tests of the dictionary's table: damage in a block, collection and revival.

use super::super::tests::{check_ok, poke, small_store, temp};
use super::super::*;
use super::STRINGS;

/// A dictionary block's sealed value from raw entries (`None`: a hole), as `strings` lays
/// it out, whatever the bytes.
fn raw_block(first: u64, entries: &[Option<&[u8]>]) -> Vec<u8> {
    let live = entries.iter().filter(|e| e.is_some()).count() as u32;
    let mut payload = (entries.len() as u32).to_le_bytes().to_vec();
    payload.extend_from_slice(&live.to_le_bytes());
    for e in entries {
        match e {
            None => payload.push(0),
            Some(b) => {
                payload.push(b.len() as u8 + 1);
                payload.extend_from_slice(b);
            }
        }
    }
    let mut c = sealed::Context::new("strings");
    c.u64(first);
    c.seal(&payload)
}

/// Problem 1: a dictionary string that is not UTF-8 (one byte set to 0xFF) made every command,
/// `check` included, panic in redb's `&str` decoding. Now it is an error naming the id.
#[test]
fn problem_1_a_string_that_is_not_utf8_is_damage_not_a_panic() {
    let (_d, path) = temp();
    let store = small_store(&path);
    assert!(check_ok(&store).is_empty());
    // Sealed correctly, but not UTF-8: the checksum passes, the UTF-8 check does not.
    let bad = raw_block(0, &[Some(b"x"), Some(b"@evil:spam.example\xff")]);
    poke(&store, STRINGS, 0, &bad);
    let e = store.strings().unwrap_err();
    assert!(e.to_string().contains("holds id 1, not UTF-8"), "{e}");
    let problems = check_ok(&store);
    assert!(
        problems.iter().any(|p| p.contains("holds id 1, not UTF-8")),
        "{problems:?}"
    );
    // The byte flipped in place: the checksum fails.
    let mut v = raw_block(0, &[Some(b"x"), Some(b"@evil:spam.example")]);
    *v.last_mut().unwrap() = 0xFF;
    poke(&store, STRINGS, 0, &v);
    let e = store.strings().unwrap_err();
    assert!(
        e.to_string()
            .contains("strings: block at id 0 fails its checksum"),
        "{e}"
    );
    // Entries that run past the block, or a header that miscounts them.
    for (bad, says) in [
        (
            raw_block(0, &[Some(b"x"), Some(b"y")])[..12].to_vec(),
            "fails its checksum",
        ),
        (
            {
                let mut payload = 2u32.to_le_bytes().to_vec();
                payload.extend_from_slice(&2u32.to_le_bytes());
                payload.extend_from_slice(&[2, b'x', 9, b'y']);
                let mut c = sealed::Context::new("strings");
                c.u64(0);
                c.seal(&payload)
            },
            "ends inside the string of id 1",
        ),
        (
            {
                let mut v = raw_block(0, &[Some(b"x"), None]);
                // Say 2 live strings where one is.
                let mut payload = v.split_off(4);
                payload[4] = 2;
                let mut c = sealed::Context::new("strings");
                c.u64(0);
                c.seal(&payload)
            },
            "holds 1 strings, its header says 2",
        ),
    ] {
        poke(&store, STRINGS, 0, &bad);
        let e = store.strings().unwrap_err();
        assert!(e.to_string().contains(says), "{says}: {e}");
        assert!(check_ok(&store).iter().any(|p| p.contains(says)), "{says}");
    }
}

/// Collected strings leave holes: their ids are never handed out again, the others keep
/// theirs, a collected string can be put back at its id, and blocks repack.
#[test]
fn collected_strings_leave_holes_and_can_be_put_back() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    let strings: Vec<String> = (0..5000).map(|i| format!("@user{i}:example.org")).collect();
    // Many small commits: the last block takes each until it is full.
    for (i, chunk) in strings.chunks(100).enumerate() {
        store.append(&[], (i * 100) as u64, chunk).unwrap();
    }
    let blocks = |store: &Store| {
        let txn = store.begin_read().unwrap();
        txn.open_table(STRINGS).unwrap().len().unwrap()
    };
    let before = blocks(&store);
    assert!(before > 1 && before < 50, "{before} blocks");
    let collected = store
        .collect_strings(&|id| id % 3 == 0 || id >= 4000)
        .unwrap();
    assert_eq!(collected.len(), (0..4000).filter(|i| i % 3 != 0).count());
    assert!(collected.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        store.string_count().unwrap(),
        5000,
        "ids are not handed out again"
    );
    assert_eq!(
        store.stats().unwrap().strings,
        5000 - collected.len() as u64
    );
    let mut seen = Vec::new();
    store
        .for_each_string(|id, s| seen.push((id, s.to_string())))
        .unwrap();
    let expected: Vec<(u64, String)> = (0..5000u64)
        .filter(|i| i % 3 == 0 || *i >= 4000)
        .map(|i| (i, strings[i as usize].clone()))
        .collect();
    assert_eq!(seen, expected);
    // A range read starting inside a block.
    let mut part = Vec::new();
    store
        .for_each_string_in(1000, 1010, |id, _| part.push(id))
        .unwrap();
    assert_eq!(part, vec![1002, 1005, 1008]);
    // Put back, with the next write: one inside a block, one after a run of holes.
    store.put_back_strings([(1001, strings[1001].clone()), (3999, strings[3999].clone())]);
    store.append(&[b"d".as_slice()], 5000, &["new"]).unwrap();
    assert_eq!(store.string_count().unwrap(), 5001);
    let mut got = Vec::new();
    store
        .for_each_string_in(1000, 1003, |id, s| got.push((id, s.to_string())))
        .unwrap();
    assert_eq!(
        got,
        vec![(1001, strings[1001].clone()), (1002, strings[1002].clone())]
    );
    assert_eq!(store.strings().unwrap().last().unwrap(), "new");
    assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
    // Everything collected: no block left, and the ids still count.
    assert_eq!(
        store.collect_strings(&|_| false).unwrap().len(),
        expected.len() + 2
    );
    assert_eq!(blocks(&store), 0);
    assert_eq!(store.string_count().unwrap(), 5001);
    assert!(store.strings().unwrap().is_empty());
    assert!(check_ok(&store).is_empty());
    drop(store);
    let store = Store::open(&path).unwrap();
    store.append(&[], 5001, &["again"]).unwrap();
    assert_eq!(
        {
            let mut v = Vec::new();
            store
                .for_each_string(|id, s| v.push((id, s.to_string())))
                .unwrap();
            v
        },
        vec![(5001, "again".to_string())]
    );
}
