//! A Synapse module (here a spam checker) loads from a directory given to the harness.

use prr_synapse_harness::{RoomOptions, Synapse, SynapseConfig};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Refuses every join of a user whose localpart starts with `blocked`.
const MODULE: &str = r#"
from synapse.module_api import NOT_SPAM
from synapse.module_api.errors import Codes


class RefuseBlocked:
    def __init__(self, config, api):
        api.register_spam_checker_callbacks(user_may_join_room=self.user_may_join_room)

    async def user_may_join_room(self, user_id, room_id, is_invited):
        if user_id.startswith("@blocked"):
            return Codes.FORBIDDEN
        return NOT_SPAM
"#;

#[test]
fn a_spam_checker_module_on_the_python_path_refuses_a_join() -> TestResult {
    let modules = tempfile::tempdir()?;
    std::fs::write(modules.path().join("prr_refuse_blocked.py"), MODULE)?;
    let synapse = Synapse::start(
        SynapseConfig::new()
            .with_python_path(modules.path())
            .with_option(
                "modules",
                json!([{"module": "prr_refuse_blocked.RefuseBlocked", "config": {}}]),
            ),
    )?;
    let owner = synapse.register("owner", "pw", false)?;
    let room = owner.create_room(&RoomOptions::new().public())?;
    // The creator's own join is not checked; ordinary users are.
    synapse.register("fine", "pw", false)?.join(&room)?;
    let refused = synapse
        .register("blocked1", "pw", false)?
        .join(&room)
        .unwrap_err();
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    Ok(())
}
