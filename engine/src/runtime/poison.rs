//! Poisoned source deltas: the ones a replica's computation panicked on are found (each
//! delta after the last good point replayed alone), quarantined durably, listed and dropped.

use prr_persist::Quarantined;

use super::Runtime;
use crate::codec::{self, LoggedDelta};
use crate::error::Error;
use crate::record::Record;
use crate::restore::{Replay, replay_log};
use crate::seq::Seq;

impl<R: Record> Runtime<R> {
    /// Sorts out the deltas a failed dataflow was computing, after `good` (through which it
    /// had computed everything): restarts the dataflow through `good`, then applies each later
    /// delta of the log alone, in order. One that panics again is quarantined (durably, before
    /// anything else) and the dataflow restarted through it, without it; the others are
    /// applied. Each delta is tried alone once, so this ends; a panic that does not recur
    /// quarantines nothing. A panic while restarting through `good` (not caused by a delta
    /// after it) is the error.
    pub(super) fn quarantine_poisoned(&mut self, good: u64) -> Result<(), Error> {
        self.restart_dataflow(good)?;
        for seq in good + 1..=self.stored.last_seq {
            if self.stored.is_quarantined(seq) {
                continue;
            }
            let Runtime {
                stored, controller, ..
            } = self;
            let controller = (controller.as_mut())
                .ok_or_else(|| Error::WorkerFailed("the dataflow is not running".into()))?;
            match replay_log(stored, controller, seq, seq, Replay::EachSeq) {
                Ok(()) => {}
                Err(Error::WorkerFailed(message)) => {
                    self.quarantine(seq, message)?;
                    self.restart_dataflow(seq)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Quarantines the delta at `seq` with the panic's message: durably (unless read-only:
    /// then for this runtime's life), before anything else happens.
    fn quarantine(&mut self, seq: u64, message: String) -> Result<(), Error> {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let entry = Quarantined {
            seq,
            unix_ms,
            message,
        };
        if !self.stored.config.read_only {
            self.stored
                .store("quarantining a delta")?
                .quarantine(&entry)?;
        }
        self.stored.quarantine.insert(seq, entry);
        self.newly_poisoned.push(Seq(seq));
        Ok(())
    }

    /// The quarantined source deltas, by `Seq`: each one a replica's computation panicked on
    /// (with the panic's message and when). No replica holds anything of them (source
    /// replicas included), and no replay, restore, rebuild or time travel feeds them, until
    /// [`Runtime::ack_poisoned`] drops them. Without a store a panic stops the runtime
    /// instead ([`Error::WorkerFailed`]): there is nothing to restart from.
    pub fn poisoned(&self) -> Vec<Quarantined> {
        self.stored.quarantine.values().cloned().collect()
    }

    /// The deltas this runtime quarantined since it started, in order: a caller that keeps
    /// state derived from the deltas it pushed (an ingest state) reloads it when this grows.
    pub fn newly_poisoned(&self) -> &[Seq] {
        &self.newly_poisoned
    }

    /// Drops the quarantined delta at `seq` for good: its log entry becomes an empty delta
    /// (so the log stays contiguous) and it leaves the quarantine, in one transaction. No
    /// replica ever held it, so nothing else changes. An error if `seq` is not quarantined.
    pub fn ack_poisoned(&mut self, seq: Seq) -> Result<(), Error> {
        let store = self.stored.store("dropping a quarantined delta")?;
        if !self.stored.is_quarantined(seq.0) {
            return Err(Error::NotPoisoned {
                seq,
                poisoned: self.stored.quarantine.keys().map(|s| Seq(*s)).collect(),
            });
        }
        let empty: LoggedDelta<R> = Vec::new();
        store.drop_quarantined(seq.0, &codec::encode(&empty))?;
        self.stored.quarantine.remove(&seq.0);
        Ok(())
    }
}
