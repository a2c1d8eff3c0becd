//! Integration tests of the Matrix replicas: one binary, with submodules.

#[path = "replicas/oracle.rs"]
mod oracle;
#[path = "replicas/workload.rs"]
mod workload;

#[path = "replicas/agreement.rs"]
mod agreement;
#[path = "replicas/differs.rs"]
mod differs;
#[path = "replicas/fuzz.rs"]
mod fuzz;
#[path = "replicas/hostile_rules.rs"]
mod hostile_rules;
#[path = "replicas/real_data.rs"]
mod real_data;
