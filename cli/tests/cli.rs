//! Integration tests of the `prr` binary: one binary, with submodules.

#[path = "cli/support.rs"]
mod support;

#[path = "cli/bad_input.rs"]
mod bad_input;
#[path = "cli/bot_mode.rs"]
mod bot_mode;
#[path = "cli/catch_up.rs"]
mod catch_up;
#[path = "cli/commands.rs"]
mod commands;
#[path = "cli/damage.rs"]
mod damage;
#[path = "cli/docs.rs"]
mod docs;
#[path = "cli/door.rs"]
mod door;
#[path = "cli/enact.rs"]
mod enact;
#[path = "cli/explain.rs"]
mod explain;
#[path = "cli/faults.rs"]
mod faults;
#[path = "cli/homeserver.rs"]
mod homeserver;
#[path = "cli/limits.rs"]
mod limits;
#[path = "cli/links.rs"]
mod links;
#[path = "cli/modules.rs"]
mod modules;
#[path = "cli/poisoned.rs"]
mod poisoned;
#[path = "cli/preview.rs"]
mod preview;
#[path = "cli/serve.rs"]
mod serve;
#[path = "cli/stream.rs"]
mod stream;
