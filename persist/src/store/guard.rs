//! Containing the storage library's panics: redb panics on some damaged pages (and decoding a
//! damaged `&str` key). Every read of the store runs under [`contained`], which turns such a
//! panic into [`Error::Corrupt`] naming the table it was reading, and keeps the default panic
//! hook from printing it. A panic of a caller's callback is not the storage library's: it goes
//! on unwinding as it was (see [`callback`]).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Once;

use crate::Error;

thread_local! {
    /// How many [`contained`] calls this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread runs a caller's callback inside [`contained`].
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// A panic raised by a caller's callback, carried through [`contained`] unchanged.
struct CallbackPanic(Box<dyn std::any::Any + Send>);

static HOOK: Once = Once::new();

/// Installs, once per process, a panic hook that stays silent for the panics [`contained`]
/// turns into errors, and calls the previous hook for every other.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let silent = DEPTH.with(Cell::get) > 0 && !IN_CALLBACK.with(Cell::get);
            if !silent {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, a read of `table`, turning a panic of the storage library into
/// `Error::Corrupt("the storage library failed reading <table>: <message>")`.
pub(crate) fn contained<T, E: From<Error>>(
    table: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    // A read made by a callback is the storage library's again.
    let in_callback = IN_CALLBACK.with(|c| c.replace(false));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    IN_CALLBACK.with(|c| c.set(in_callback));
    DEPTH.with(|d| d.set(d.get() - 1));
    match outcome {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<CallbackPanic>() {
            Ok(p) => resume_unwind(p.0),
            Err(payload) => Err(Error::Corrupt(format!(
                "the storage library failed reading {table}: {}",
                message(&*payload)
            ))
            .into()),
        },
    }
}

/// Runs a caller's callback inside [`contained`]: its panic is printed as usual and goes on
/// unwinding past `contained`, not reported as damage.
pub(crate) fn callback<T>(f: impl FnOnce() -> T) -> T {
    let was = IN_CALLBACK.with(|c| c.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    IN_CALLBACK.with(|c| c.set(was));
    match outcome {
        Ok(v) => v,
        Err(payload) => std::panic::panic_any(CallbackPanic(payload)),
    }
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_damage_and_a_callbacks_panic_unwinds_on() {
        let r: Result<(), Error> = contained("log", || panic!("bad page"));
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .contains("the storage library failed reading log: bad page"),
            "{e}"
        );
        let caught = catch_unwind(|| {
            contained::<(), Error>("log", || callback(|| panic!("the caller's own")))
        })
        .unwrap_err();
        assert_eq!(message(&*caught), "the caller's own");
        assert_eq!(DEPTH.with(Cell::get), 0);
    }
}
