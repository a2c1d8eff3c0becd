//! Reading the records of older store formats: the Matrix replicas' [`LegacyRecords`], which
//! `Matrix::start` hands to the store, so that a store of format 5 or older is upgraded when
//! opened.
//!
//! Format 6 gave every `room_state` record its facts (see [`Facts`]): an older record is read
//! without them, and its facts are parsed from its content as the ingest parses them, the
//! strings they need interned. Every other record is encoded as it was.

use std::sync::Arc;

use prr_engine::{Id, LegacyRecords, RecordUpgrade, UpgradeStrings, read_encoded, record_upgrade};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::facts::facts_of;
use crate::record::{Facts, Rec, RoomState};

/// A `room_state` record as formats 1 to 5 encoded it: without its facts.
#[derive(Deserialize)]
struct RoomStateV5 {
    room: Id,
    event_type: Id,
    state_key: Id,
    event_id: Id,
    sender: Id,
    ts: Option<i64>,
    content: Id,
    redacted: bool,
}

/// How an upgrade reports its progress: `(done, total)` chunks and log entries.
type Progress = Box<dyn Fn(u64, u64) + Send + Sync>;

/// The Matrix replicas' records of formats 1 to 5.
struct MatrixLegacy {
    progress: Option<Progress>,
}

/// The tag of [`Rec::RoomState`], `Rec`'s first variant, as the store encodes it (`u32 LE`).
const ROOM_STATE_TAG: [u8; 4] = 0u32.to_le_bytes();

impl LegacyRecords<Rec> for MatrixLegacy {
    fn read(
        &self,
        from: u32,
        bytes: &mut &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Rec, String> {
        if from >= 6 || bytes.get(..4) != Some(ROOM_STATE_TAG.as_slice()) {
            return read_encoded(bytes);
        }
        *bytes = &bytes[4..];
        let old: RoomStateV5 = read_encoded(bytes)?;
        let text = |id: Id, what: &str| {
            (strings.get(id).map(str::to_string)).ok_or_else(|| {
                format!("a `room_state` record's {what} (id {id}) is not in the dictionary")
            })
        };
        let event_type = text(old.event_type, "type")?;
        let content: Map<String, Value> = serde_json::from_str(&text(old.content, "content")?)
            .map_err(|e| format!("a `room_state` record's content is not a JSON object: {e}"))?;
        let mut state = RoomState {
            room: old.room,
            event_type: old.event_type,
            state_key: old.state_key,
            event_id: old.event_id,
            sender: old.sender,
            ts: old.ts,
            content: old.content,
            redacted: old.redacted,
            facts: Facts::Other,
        };
        state.facts = facts_of(&state, &event_type, &content, &mut |s| strings.intern(s));
        Ok(Rec::RoomState(Arc::new(state)))
    }

    fn progress(&self, done: u64, total: u64) {
        if let Some(report) = &self.progress {
            report(done, total);
        }
    }
}

/// The store's record upgrade for the Matrix replicas (see the module documentation).
pub fn matrix_records() -> Arc<dyn RecordUpgrade + Send + Sync> {
    record_upgrade(MatrixLegacy { progress: None })
}

/// Like [`matrix_records`], calling `progress(done, total)` as the upgrade rewrites each chunk
/// and log entry (an upgrade of a large store takes seconds): for a progress line.
pub fn matrix_records_reporting(
    progress: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Arc<dyn RecordUpgrade + Send + Sync> {
    record_upgrade(MatrixLegacy {
        progress: Some(Box::new(progress)),
    })
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::record::{Membership, Relation};

    /// Format 5's `Rec`, in part: its first two variants, encoded as format 5 encoded them.
    #[derive(Serialize)]
    enum RecV5 {
        RoomState(RoomStateV5Out),
        Instance {
            instance: Id,
            relation: Relation,
            room: Id,
        },
    }

    #[derive(Serialize)]
    struct RoomStateV5Out(Id, Id, Id, Id, Id, Option<i64>, Id, bool);

    #[test]
    fn older_room_state_records_get_their_facts_and_others_stay() {
        let mut strings = UpgradeStrings::of(
            [
                "!r",
                "m.room.member",
                "@u",
                "$e",
                r#"{"membership":"join","displayname":"U"}"#,
            ]
            .into_iter()
            .map(|s| Some(s.to_string()))
            .collect(),
        );
        let rows = vec![
            (
                RecV5::RoomState(RoomStateV5Out(0, 1, 2, 3, 2, Some(7), 4, false)),
                1i64,
            ),
            (
                RecV5::Instance {
                    instance: 2,
                    relation: Relation::Watch,
                    room: 0,
                },
                1,
            ),
        ];
        let mut payload = (rows.len() as u64).to_le_bytes().to_vec();
        for row in &rows {
            payload.extend(bincode::serialize(row).unwrap());
        }
        let new = matrix_records()
            .chunk(5, &payload, &mut strings)
            .unwrap()
            .unwrap();
        let decoded: Vec<(Rec, i64)> = bincode::deserialize(&new).unwrap();
        let Rec::RoomState(s) = &decoded[0].0 else {
            panic!("{decoded:?}")
        };
        assert_eq!((s.room, s.state_key, s.ts, s.content), (0, 2, Some(7), 4));
        assert_eq!(
            s.facts,
            Facts::Member {
                membership: Membership::Join,
                displayname: Some(5)
            }
        );
        assert_eq!(strings.get(5), Some("U"));
        assert_eq!(
            decoded[1].0,
            Rec::Instance {
                instance: 2,
                relation: Relation::Watch,
                room: 0
            }
        );
        // A content that is not JSON is damage, said as such.
        let mut strings = UpgradeStrings::of(
            ["!r", "m.room.member", "@u", "$e", "not JSON"]
                .into_iter()
                .map(|s| Some(s.to_string()))
                .collect(),
        );
        let e = matrix_records()
            .chunk(5, &payload, &mut strings)
            .unwrap_err();
        assert!(
            e.contains("record 0") && e.contains("not a JSON object"),
            "{e}"
        );
    }
}
