//! The scheduling priority of the threads that do bulk work: the core thread (and the dataflow
//! worker threads it starts, which inherit its policy and nice value) and the parsing of
//! ingest and preview bodies. On Linux the policy and the nice value are properties of each
//! thread, so lowering theirs lets the HTTP threads, which answer the checks at the door in
//! microseconds, take a core from them at once when a request arrives, while a join wave keeps
//! them busy.
//!
//! A nice value alone does not do it: the scheduler (EEVDF) lets a running thread finish its
//! slice, a few milliseconds, before a woken thread of higher priority runs. A thread of the
//! `SCHED_IDLE` policy is preempted as soon as any other thread wakes ([`BulkPriority::Idle`]);
//! its cost is that bulk work only runs in the time that threads of normal priority (of any
//! process) leave, which on a saturated host is next to none. The default is therefore a nice
//! value, which keeps bulk work a share of the cores.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The priority of `prr serve`'s bulk threads (`--bulk-priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkPriority {
    /// The `SCHED_IDLE` policy: they run when no thread of normal priority wants the core.
    Idle,
    /// The normal policy at this nice value (0 to 19; 0 leaves them at the process's own).
    Nice(i32),
}

/// The priority `prr serve` gives its bulk threads unless told otherwise.
pub const DEFAULT_BULK_PRIORITY: BulkPriority = BulkPriority::Nice(10);

/// The highest nice value (the lowest priority) there is.
const MAX_NICE: i32 = 19;

impl FromStr for BulkPriority {
    type Err = String;

    /// `idle`, or a nice value from 0 to 19.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "idle" {
            return Ok(BulkPriority::Idle);
        }
        match s.parse::<i32>() {
            Ok(n) if (0..=MAX_NICE).contains(&n) => Ok(BulkPriority::Nice(n)),
            _ => Err(format!(
                "`{s}`: expected `idle` or a nice value from 0 to {MAX_NICE}"
            )),
        }
    }
}

impl fmt::Display for BulkPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BulkPriority::Idle => f.write_str("idle"),
            BulkPriority::Nice(n) => write!(f, "{n}"),
        }
    }
}

/// The `SCHED_IDLE` policy.
#[cfg(target_os = "linux")]
const IDLE: thread_priority::ThreadSchedulePolicy = thread_priority::ThreadSchedulePolicy::Normal(
    thread_priority::NormalThreadSchedulePolicy::Idle,
);

/// Lowers the calling thread's priority to `priority`, never raising it: a nice value only
/// when the thread's is lower (an unprivileged process cannot raise it again). Elsewhere than
/// on Linux, where these are the whole process's, does nothing.
pub(crate) fn lower_this_thread(priority: BulkPriority) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    match priority {
        BulkPriority::Idle => {
            use thread_priority::{ThreadPriority, set_thread_priority_and_policy};
            // The crate also sets the nice value to 0 after the policy; when the thread's is
            // higher that fails (unprivileged) or raises it (privileged), both harmless: an
            // idle thread's nice value plays no part. What counts is the policy it ends with.
            let set = set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                ThreadPriority::Min,
                IDLE,
            );
            if thread_priority::thread_schedule_policy().ok() != Some(IDLE) {
                let e = set
                    .err()
                    .map_or("not applied".to_string(), |e| e.to_string());
                return Err(std::io::Error::other(format!("SCHED_IDLE: {e}")));
            }
        }
        BulkPriority::Nice(nice) => {
            let tid = Some(rustix::thread::gettid());
            if rustix::process::getpriority_process(tid)? < nice {
                rustix::process::setpriority_process(tid, nice)?;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
    Ok(())
}

/// [`lower_this_thread`] for a thread called `what`, logging the first failure (the thread
/// keeps its priority: a sandbox may forbid the call).
pub(crate) fn lower_or_warn(priority: BulkPriority, what: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if priority == BulkPriority::Nice(0) {
        return;
    }
    if let Err(e) = lower_this_thread(priority)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(error = %e, %priority, "cannot lower the priority of the {what}");
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
            lower_this_thread(BulkPriority::Nice(start.max(7))).expect("lower");
            let inner = this_thread_nice();
            // A thread started from a lowered thread inherits its nice value.
            let child = std::thread::spawn(this_thread_nice).join().expect("child");
            // Never raised again.
            lower_this_thread(BulkPriority::Nice(0)).expect("no-op");
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

    #[cfg(target_os = "linux")]
    #[test]
    fn idle_is_a_policy_of_one_thread_and_its_children() {
        let policy = || thread_priority::thread_schedule_policy().expect("policy");
        let before = policy();
        let (inner, child) = std::thread::spawn(move || {
            lower_this_thread(BulkPriority::Idle).expect("idle");
            (policy(), std::thread::spawn(policy).join().expect("child"))
        })
        .join()
        .expect("thread");
        assert_eq!((inner, child), (IDLE, IDLE));
        assert_eq!(policy(), before);
    }

    #[test]
    fn priorities_parse_and_print() {
        assert_eq!("idle".parse(), Ok(BulkPriority::Idle));
        assert_eq!("7".parse(), Ok(BulkPriority::Nice(7)));
        for bad in ["20", "-1", "low", ""] {
            let err = bad.parse::<BulkPriority>().unwrap_err();
            assert!(
                err.contains("expected `idle` or a nice value from 0 to 19"),
                "{err}"
            );
        }
        assert_eq!(BulkPriority::Nice(3).to_string(), "3");
        assert_eq!(BulkPriority::Idle.to_string(), "idle");
    }
}
