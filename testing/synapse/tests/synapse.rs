//! The harness's own tests, against a real Synapse (the venv of `scripts/synapse-venv.sh`).
//! They fail, never skip, when the venv is missing.

mod synapse {
    mod appservice;
    mod modules;
    mod restart;
    mod rooms;
    mod shared;
}
