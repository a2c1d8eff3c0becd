//! One fixture (a Synapse and what a test file built in it) shared by a known number of tests,
//! dropped (Synapse stopped, its directory deleted) when the last of them is done with it.

use std::sync::{Arc, Mutex, MutexGuard};

/// What tests share: built by the first test that asks, dropped after `users` leases ended.
pub struct Shared<T> {
    users: usize,
    build: fn() -> T,
    state: Mutex<State<T>>,
}

struct State<T> {
    /// `None` until built; `Err` holds the build's panic message for the other tests.
    value: Option<Result<Arc<T>, String>>,
    done: usize,
}

/// A test's use of the fixture; ending it (drop) counts the test as done.
pub struct Lease<'a, T> {
    shared: &'a Shared<T>,
    value: Option<Arc<T>>,
}

impl<T> Shared<T> {
    /// A fixture for exactly `users` tests (keep in step with the tests that call `get`).
    pub const fn new(users: usize, build: fn() -> T) -> Self {
        Shared {
            users,
            build,
            state: Mutex::new(State {
                value: None,
                done: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fixture, built on first use (later callers wait for the build).
    pub fn get(&self) -> Lease<'_, T> {
        let mut state = self.lock();
        if state.value.is_none() {
            let built = std::panic::catch_unwind(self.build)
                .map(Arc::new)
                .map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the fixture's build panicked".into())
                });
            state.value = Some(built);
        }
        match state.value.as_ref().expect("built above") {
            Ok(v) => Lease {
                shared: self,
                value: Some(v.clone()),
            },
            Err(msg) => {
                let msg = msg.clone();
                state.done += 1;
                panic!("the shared fixture could not be built: {msg}");
            }
        }
    }
}

impl<T> std::ops::Deref for Lease<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until drop")
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        drop(self.value.take());
        let mut state = self.shared.lock();
        state.done += 1;
        if state.done >= self.shared.users {
            // The last user: drop the fixture (outside the lock would be nicer; it is quick).
            state.value = None;
        }
    }
}
