//! Stopping and restarting Synapse: state, tokens and the port survive.

use prr_synapse_harness::{Error, PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A `/state` answer without what changes with time (`age`): event ids, keys and contents.
fn stable(state: Vec<serde_json::Value>) -> Vec<String> {
    let mut out: Vec<String> = state
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].to_string();
            [
                f("event_id"),
                f("type"),
                f("state_key"),
                f("sender"),
                f("content"),
            ]
            .join(" ")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn state_tokens_and_port_survive_a_restart() -> TestResult {
    let mut synapse = Synapse::start(SynapseConfig::new().with_server_name("restart.test"))?;
    let admin = synapse.register("admin", "pw", true)?;
    let room = admin.create_room(&RoomOptions::new().with_name("before"))?;
    let rule = PolicyRule::entity(RuleKind::Server, "*.evil.example");
    let rule_id = admin.send_rule(&room, &rule)?;
    let before = stable(admin.state(&room)?);
    let port = synapse.port();

    synapse.restart()?;
    assert!(synapse.is_running());
    assert_eq!(synapse.port(), port);
    // The client made before the restart still works: its token is in the database.
    assert_eq!(admin.whoami()?, "@admin:restart.test");
    assert_eq!(stable(admin.state(&room)?), before);
    let content = admin.state_event(&room, &rule.event_type(), rule.state_key())?;
    assert_eq!(content.as_ref(), Some(rule.content()));
    assert_eq!(
        admin.state_event(&room, "m.policy.rule.user", "nothing")?,
        None
    );
    // Writes work after the restart, and passwords still log in.
    let again = admin.send_rule(&room, &rule.clone().with_reason("again"))?;
    assert_ne!(again, rule_id);
    assert_eq!(
        synapse.login("admin", "pw")?.whoami()?,
        "@admin:restart.test"
    );

    // Stopped, it does not answer; a restart from stopped brings it back.
    synapse.stop()?;
    assert!(!synapse.is_running());
    match admin.whoami() {
        Err(Error::Transport { .. }) => {}
        other => panic!("a stopped Synapse answered: {other:?}"),
    }
    synapse.restart()?;
    assert_eq!(admin.whoami()?, "@admin:restart.test");
    assert!(
        synapse.log_tail(200).contains("Synapse now listening"),
        "{}",
        synapse.log_tail(20)
    );
    Ok(())
}

#[test]
fn a_missing_venv_fails_with_the_command_that_creates_it() {
    let empty = tempfile::tempdir().unwrap();
    let err = Synapse::start(SynapseConfig::new().with_venv(empty.path())).unwrap_err();
    assert!(matches!(err, Error::VenvMissing { .. }), "{err:?}");
    assert!(
        err.to_string().contains("bash scripts/synapse-venv.sh"),
        "{err}"
    );
}
