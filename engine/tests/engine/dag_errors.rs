use prr_engine::{Dag, DagError, Input, JoinView, ReplicaDescription};

fn src(name: &str) -> ReplicaDescription<u64> {
    ReplicaDescription::source(name, "x", |x| *x)
}

fn derived(name: &str, inputs: &[&str]) -> ReplicaDescription<u64> {
    ReplicaDescription::derived(
        name,
        "x",
        |x| *x,
        inputs.iter().map(|i| Input::full(i)).collect(),
        |ins| ins[0].clone(),
    )
}

#[test]
fn unknown_input_names_the_replica() {
    let err = Dag::new(vec![src("a"), derived("b", &["nope"])]).unwrap_err();
    assert_eq!(
        err,
        DagError::UnknownInput {
            replica: "b".into(),
            input: "nope".into()
        }
    );
    assert!(err.to_string().contains("`b`") && err.to_string().contains("`nope`"));
}

#[test]
fn duplicate_name_is_refused() {
    let err = Dag::new(vec![src("a"), src("a")]).unwrap_err();
    assert_eq!(err, DagError::DuplicateName("a".into()));
}

#[test]
fn cycle_names_a_replica_on_it() {
    let err = Dag::new(vec![
        src("a"),
        derived("b", &["a", "c"]),
        derived("c", &["b"]),
        derived("d", &["a"]),
    ])
    .unwrap_err();
    match err {
        DagError::Cycle(name) => assert!(name == "b" || name == "c", "{name}"),
        other => panic!("expected a cycle, got {other:?}"),
    }
}

#[test]
fn self_loop_is_a_cycle() {
    let err = Dag::new(vec![src("a"), derived("b", &["b"])]).unwrap_err();
    assert_eq!(err, DagError::Cycle("b".into()));
}

#[test]
fn declaration_order_is_made_topological() {
    let dag = Dag::new(vec![derived("c", &["b"]), derived("b", &["a"]), src("a")]).unwrap();
    let names: Vec<&str> = dag.replicas().iter().map(|d| d.name()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    let a = dag.id("a").unwrap();
    let c = dag.id("c").unwrap();
    assert_eq!(dag.dependents(a).len(), 2);
    assert!(dag.ancestors(c).contains(&a));
}

#[test]
fn description_hash_changes_with_logic_version() {
    let a = derived("b", &["a"]);
    let b = derived("b", &["a"]).with_logic_version(2);
    assert_ne!(a.description_hash(), b.description_hash());
    assert_eq!(
        a.description_hash(),
        derived("b", &["a"]).description_hash()
    );
}

fn view(name: &str, left: &str, right: &str) -> ReplicaDescription<u64> {
    ReplicaDescription::join_view(
        name,
        "x",
        |x| *x,
        left,
        right,
        JoinView {
            left_key: |x| Some(*x),
            right_key: |x| Some(*x),
            combine: |x, _| Some(*x),
            partition_follows_right: false,
        },
    )
}

#[test]
fn a_view_cannot_be_an_input() {
    let err = Dag::new(vec![src("a"), view("v", "a", "a"), derived("b", &["v"])]).unwrap_err();
    assert_eq!(
        err,
        DagError::ViewInput {
            replica: "b".into(),
            view: "v".into()
        }
    );
    let err = Dag::new(vec![src("a"), view("v", "a", "a"), view("w", "v", "a")]).unwrap_err();
    assert!(matches!(err, DagError::ViewInput { .. }), "{err}");
    assert!(err.to_string().contains("`w`") && err.to_string().contains("`v`"));
    let dag = Dag::new(vec![src("a"), src("b"), view("v", "a", "b")]).unwrap();
    let v = dag.replica(dag.id("v").unwrap());
    assert!(v.is_view() && !v.is_source());
    assert_eq!(dag.sources().count(), 2);
}
