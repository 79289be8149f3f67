//! Prometheus metrics served at `/metrics`: connections, events in and out by name, errors by
//! code, the latency of every gRPC call this node makes (which includes the services'
//! Postgres/Redis time), and where a stored send's time on this node goes, stage by stage.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub namespace: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A stage of a stored send's way through this node (`send_stage_seconds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub service: &'static str,
    pub method: &'static str,
    pub ok: bool,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub events_in: Family<EventLabels, Counter<u64, AtomicU64>>,
    pub events_out: Family<EventLabels, Counter<u64, AtomicU64>>,
    pub errors: Family<CodeLabels, Counter<u64, AtomicU64>>,
    pub grpc: Family<GrpcLabels, Histogram>,
    pub grpc_server: Family<GrpcLabels, Histogram>,
    /// Where a stored send's time on this node goes: one histogram per `SendStage`, looked up
    /// once here rather than by label on every send.
    send_stages: [Histogram; SendStage::ALL.len()],
    pub redelivered: Counter<u64, AtomicU64>,
    pub disconnects: Family<ReasonLabels, Counter<u64, AtomicU64>>,
    /// Deliveries to a socket whose outgoing queue was full (a slow consumer, disconnected
    /// when its write deadline passes) or closing: the rest of the broadcast went out.
    pub dropped_deliveries: Counter<u64, AtomicU64>,
    /// Stored events this node had delivered already when they were published again (by the
    /// outbox sweeper after their sender died unconfirmed, or after a Redis restart).
    pub duplicates_suppressed: Counter<u64, AtomicU64>,
    /// Handshakes that asked to recover a session, by outcome (`recovered`, `new_session`).
    pub recoveries: Family<ReasonLabels, Counter<u64, AtomicU64>>,
}

/// The stages of a stored send on its node, in order; the ack leaves after the last.
#[derive(Clone, Copy, Debug)]
pub enum SendStage {
    /// From the send reaching the forwarder until its batch leaves (the linger, a free place).
    Queued,
    /// Its batch's rate-window script.
    RateCheck,
    /// Its batch's round trip to the messages service.
    Store,
    /// From its outcome until its event is in the delivery log (waiting for its turn included).
    Log,
}

impl SendStage {
    const ALL: [SendStage; 4] = [
        SendStage::Queued,
        SendStage::RateCheck,
        SendStage::Store,
        SendStage::Log,
    ];

    fn name(self) -> &'static str {
        match self {
            SendStage::Queued => "queued",
            SendStage::RateCheck => "rate_check",
            SendStage::Store => "store",
            SendStage::Log => "log",
        }
    }
}

fn grpc_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let connections = Gauge::default();
        let events_in = Family::default();
        let events_out = Family::default();
        let errors = Family::default();
        let grpc = Family::<GrpcLabels, Histogram>::new_with_constructor(
            grpc_histogram as fn() -> Histogram,
        );
        let grpc_server = Family::<GrpcLabels, Histogram>::new_with_constructor(
            grpc_histogram as fn() -> Histogram,
        );
        let send_stages = Family::<StageLabels, Histogram>::new_with_constructor(
            grpc_histogram as fn() -> Histogram,
        );
        let redelivered = Counter::default();
        let disconnects = Family::default();
        let dropped_deliveries = Counter::default();
        let duplicates_suppressed = Counter::default();
        let recoveries = Family::default();
        registry.register(
            "recoveries",
            "Handshakes that asked to recover a session, by outcome (reason: recovered or new_session)",
            recoveries.clone(),
        );
        registry.register(
            "duplicates_suppressed",
            "Stored events published again that this node had delivered already (not repeated)",
            duplicates_suppressed.clone(),
        );
        registry.register(
            "disconnects",
            "Sockets of this node disconnected, by reason (TransportError includes slow consumers)",
            disconnects.clone(),
        );
        registry.register(
            "dropped_deliveries",
            "Deliveries not queued because the socket's outgoing queue was full or closing",
            dropped_deliveries.clone(),
        );
        registry.register(
            "connections",
            "Socket.IO sockets connected to this node",
            connections.clone(),
        );
        registry.register(
            "events_in",
            "Client events received, by namespace and event",
            events_in.clone(),
        );
        registry.register(
            "events_out",
            "Events emitted to rooms from this node, by namespace and event",
            events_out.clone(),
        );
        registry.register(
            "errors",
            "Errors answered to clients and API callers, by code",
            errors.clone(),
        );
        registry.register(
            "grpc_client_duration_seconds",
            "Latency of gRPC calls to the services (includes their Postgres/Redis time)",
            grpc.clone(),
        );
        registry.register(
            "grpc_server_duration_seconds",
            "Time the service reported working on the call: its Postgres/Redis work (Server-Timing)",
            grpc_server.clone(),
        );
        registry.register(
            "send_stage_seconds",
            "Time a stored send spends in each stage on this node: queued (until its batch leaves), \
             rate_check (its batch's rate windows), store (its batch's round trip to the messages \
             service), log (until its event is in the delivery log, its turn included)",
            send_stages.clone(),
        );
        let send_stages = SendStage::ALL.map(|stage| {
            send_stages
                .get_or_create(&StageLabels {
                    stage: stage.name(),
                })
                .clone()
        });
        registry.register(
            "outbox_redelivered",
            "Stored events broadcast by the outbox sweeper",
            redelivered.clone(),
        );
        Self {
            registry,
            connections,
            events_in,
            events_out,
            errors,
            grpc,
            grpc_server,
            send_stages,
            redelivered,
            disconnects,
            dropped_deliveries,
            duplicates_suppressed,
            recoveries,
        }
    }

    /// Records `took` in `stage` for each of `sends` sends (a batch's stages take as long for
    /// every send it carries).
    pub fn send_stage(&self, stage: SendStage, took: std::time::Duration, sends: usize) {
        let histogram = &self.send_stages[stage as usize];
        for _ in 0..sends {
            histogram.observe(took.as_secs_f64());
        }
    }

    pub fn disconnect(&self, reason: &str) {
        self.disconnects
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn recovery(&self, outcome: &str) {
        self.recoveries
            .get_or_create(&ReasonLabels {
                reason: outcome.to_string(),
            })
            .inc();
    }

    pub fn event_in(&self, namespace: &str, event: &str) {
        self.events_in
            .get_or_create(&EventLabels {
                namespace: namespace.to_string(),
                event: event.to_string(),
            })
            .inc();
    }

    pub fn event_out(&self, namespace: &str, event: &str) {
        self.events_out
            .get_or_create(&EventLabels {
                namespace: namespace.to_string(),
                event: event.to_string(),
            })
            .inc();
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
