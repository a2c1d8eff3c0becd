//! Integration tests of the engine: one binary, with submodules.

mod engine {
    pub mod dag_errors;
    pub mod diamond;
    pub mod faults;
    pub mod persistence;
    pub mod random_dags;
    pub mod worker_panic;
}
