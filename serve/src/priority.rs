//! The scheduling priority of the threads that do bulk work: the core thread (and the dataflow
//! worker threads it starts, which inherit its nice value) and the parsing of ingest and
//! preview bodies. On Linux the nice value is a property of each thread, so lowering theirs
//! lets the HTTP threads, which answer the checks at the door in microseconds, take a core
//! from them at once when a request arrives, while a join wave keeps them busy.

use std::sync::atomic::{AtomicBool, Ordering};

/// The nice value `prr serve` gives its bulk threads unless told otherwise (`--bulk-nice`).
pub const DEFAULT_BULK_NICE: i32 = 10;

/// The highest nice value (the lowest priority) there is.
pub(crate) const MAX_NICE: i32 = 19;

/// Lowers the calling thread's priority to nice `nice` (0 to 19), unless it is already that
/// low or lower: an unprivileged process cannot raise it again. Elsewhere than on Linux, where
/// the nice value is the whole process's, does nothing.
pub(crate) fn lower_this_thread(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        if rustix::process::getpriority_process(tid)? < nice {
            rustix::process::setpriority_process(tid, nice)?;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

/// [`lower_this_thread`] for a thread called `what`, logging the first failure (the thread
/// keeps its priority: a sandbox may forbid the call).
pub(crate) fn lower_or_warn(nice: i32, what: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if nice <= 0 {
        return;
    }
    if let Err(e) = lower_this_thread(nice)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, nice, "cannot lower the priority of the {what}");
    }
}

/// The calling thread's nice value.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn this_thread_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("getpriority")
}

/// The calling thread's nice value (0: not followed elsewhere than on Linux).
#[cfg(all(test, not(target_os = "linux")))]
pub(crate) fn this_thread_nice() -> i32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_one_thread_leaves_the_others() {
        let before = this_thread_nice();
        let (inner, child) = std::thread::spawn(|| {
            let start = this_thread_nice();
            lower_this_thread(start.max(7)).expect("lower");
            let inner = this_thread_nice();
            // A thread started from a lowered thread inherits its nice value.
            let child = std::thread::spawn(this_thread_nice).join().expect("child");
            // Never raised again.
            lower_this_thread(0).expect("no-op");
            assert_eq!(this_thread_nice(), inner);
            (inner, child)
        })
        .join()
        .expect("thread");
        if cfg!(target_os = "linux") {
            assert_eq!(inner, before.max(7));
            assert_eq!(child, inner);
        }
        assert_eq!(this_thread_nice(), before);
    }
}
