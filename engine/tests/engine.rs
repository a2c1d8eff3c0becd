//! Integration tests of the engine: one binary, with submodules.

mod engine {
    pub mod capture;
    pub mod config;
    pub mod dag_errors;
    pub mod diamond;
    pub mod faults;
    pub mod integrity;
    pub mod persistence;
    pub mod poison;
    pub mod preview;
    pub mod random_dags;
    pub mod strings;
    pub mod worker_panic;
}
