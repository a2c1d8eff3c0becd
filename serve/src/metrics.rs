//! `GET /metrics`: the service's metrics in the Prometheus (OpenMetrics) text format, with
//! the `prometheus-client` crate.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prr_engine::Status;

/// Labels: a list of `(name, value)` pairs.
type Labels = Vec<(&'static str, String)>;

/// The service's metrics.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    last_seq: Gauge,
    records: Family<Labels, Gauge>,
    frontier_lag: Family<Labels, Gauge>,
    source_deltas: Family<Labels, Counter>,
    source_events: Family<Labels, Counter>,
    commit: Histogram,
    http: Family<Labels, Counter>,
    transactions: Family<Labels, Counter>,
    effects: Family<Labels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("prr");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            last_seq: Gauge::default(),
            records: Family::default(),
            frontier_lag: Family::default(),
            source_deltas: Family::default(),
            source_events: Family::default(),
            // 1 ms .. 5 s, then +Inf.
            commit: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            http: Family::default(),
            transactions: Family::default(),
            effects: Family::default(),
        };
        registry.register(
            "last_seq",
            "The last committed source delta's seq",
            m.last_seq.clone(),
        );
        registry.register(
            "replica_records",
            "Records of each replica",
            m.records.clone(),
        );
        registry.register(
            "replica_frontier_lag",
            "Source deltas committed but not yet final in each replica (last seq + 1 - frontier)",
            m.frontier_lag.clone(),
        );
        registry.register(
            "source_deltas",
            "Source deltas committed, by source (api, appservice)",
            m.source_deltas.clone(),
        );
        registry.register(
            "source_events",
            "Items (events, manifests) in the source deltas committed, by source",
            m.source_events.clone(),
        );
        registry.register(
            "commit_seconds",
            "Time from taking a write to its source delta being durable and computed",
            m.commit.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            m.http.clone(),
        );
        registry.register(
            "appservice_transactions",
            "Appservice transactions answered, by outcome",
            m.transactions.clone(),
        );
        registry.register(
            "effects",
            "Outcomes of the effect handlers recorded, by action (ban, server_acl) and status \
             (done, failed, withdrawn)",
            m.effects.clone(),
        );
        *m.registry.lock().expect("not poisoned") = registry;
        m
    }

    /// An effect handler's outcome recorded.
    pub(crate) fn effect(&self, action: &str, status: &str) {
        let l = vec![
            ("action", action.to_string()),
            ("status", status.to_string()),
        ];
        self.effects.get_or_create(&l).inc();
    }

    /// A source delta committed from `source` with `items` items.
    pub(crate) fn source_delta(&self, source: &str, items: u64) {
        let l = vec![("source", source.to_string())];
        self.source_deltas.get_or_create(&l).inc();
        self.source_events.get_or_create(&l).inc_by(items);
    }

    /// A commit's latency.
    pub(crate) fn commit_seconds(&self, d: Duration) {
        self.commit.observe(d.as_secs_f64());
    }

    /// An HTTP request answered.
    pub(crate) fn http(&self, route: &str, status: u16) {
        let l = vec![("route", route.to_string()), ("status", status.to_string())];
        self.http.get_or_create(&l).inc();
    }

    /// An appservice transaction answered: `applied`, `duplicate`, `forbidden`, `bad_json`,
    /// `unavailable` (a storage failure: the homeserver retries) or `failed`.
    pub(crate) fn transaction(&self, outcome: &str) {
        let l = vec![("outcome", outcome.to_string())];
        self.transactions.get_or_create(&l).inc();
    }

    /// The text, with the replica gauges set from `status`.
    pub(crate) fn render(&self, status: &Status) -> String {
        let last = status.seq.0;
        self.last_seq.set(last as i64);
        for r in &status.replicas {
            let l = vec![("replica", r.name.clone())];
            self.records.get_or_create(&l).set(r.records as i64);
            let lag = (last + 1).saturating_sub(r.frontier.0);
            self.frontier_lag.get_or_create(&l).set(lag as i64);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        encode(&mut out, &registry).expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_counters_their_total() {
        let m = Metrics::new();
        m.source_delta("api", 3);
        m.http("/v1/status", 200);
        m.transaction("applied");
        m.commit_seconds(Duration::from_millis(3));
        let text = m.render(&Status {
            seq: prr_engine::Seq(4),
            replicas: Vec::new(),
            store: None,
            poisoned: Vec::new(),
        });
        for want in [
            "prr_last_seq 4",
            "prr_source_deltas_total{source=\"api\"} 1",
            "prr_source_events_total{source=\"api\"} 3",
            "prr_http_requests_total{route=\"/v1/status\",status=\"200\"} 1",
            "prr_appservice_transactions_total{outcome=\"applied\"} 1",
            "prr_commit_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
    }
}
