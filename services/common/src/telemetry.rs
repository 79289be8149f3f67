//! Logging and tracing. Every service logs through `tracing`; spans become OpenTelemetry spans,
//! exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Without an exporter, spans still
//! get W3C trace ids, so the `correlationId` shown to users is always a real trace id.
//!
//! Logs and traces are filtered apart: `RUST_LOG` says what is logged, `SWITCHBOARD_TRACE_FILTER`
//! (default `info`) which spans are traced. A production node logging at `warn` still traces
//! every request, so the `correlationId` of an error leads to its trace.
//!
//! Trace context crosses gRPC in the `traceparent` metadata entry: clients wrap their channel
//! with [`inject_trace_context`], servers start their request span with [`grpc_server_span`].
//! A message that carries several sends (a batch of `SendStream`) carries each one's trace in its item
//! ([`current_traceparent`], [`set_parent_traceparent`]).

use std::collections::HashMap;

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes spans when dropped (at the end of `main`).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("telemetry flush failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
    }
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`); `SWITCHBOARD_LOG_FORMAT=json`
/// writes JSON lines.
pub fn init(service_name: &'static str) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(service_name);

    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // At debug, socketioxide's client logs every packet and each handshake's `auth` object,
        // tokens included: held at warn whatever RUST_LOG says.
        .add_directive(
            "socketioxide::client=warn"
                .parse()
                .expect("a valid filter directive"),
        );
    let trace_filter = match std::env::var("SWITCHBOARD_TRACE_FILTER") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v.trim())
            .map_err(|e| anyhow::anyhow!("SWITCHBOARD_TRACE_FILTER={v:?}: {e}"))?,
        _ => EnvFilter::new("info"),
    };
    let json = std::env::var("SWITCHBOARD_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Every socket event is a span, so a span's own cost is paid per event. Off: timing each
    // enter and exit for busy/idle attributes, thread attributes on every span, and attaching an
    // OpenTelemetry context on every enter (trace context here is read from the tracing span,
    // never from OpenTelemetry's current context). docs/benchmarks §25.
    let registry = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_context_activation(false)
            .with_filter(trace_filter),
    );
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_filter(log_filter),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_filter(log_filter))
            .try_init()
    };
    // A second init (tests running several services in one process) keeps the first subscriber.
    let _ = result;
    Ok(TelemetryGuard { provider })
}

/// The trace id of the current span, as 32 hex digits: the `correlationId` users see.
pub fn current_trace_id() -> String {
    let cx = tracing::Span::current().context();
    let id = cx.span().span_context().trace_id();
    if id == opentelemetry::trace::TraceId::INVALID {
        // Outside any traced span (unit tests without the OpenTelemetry layer): a random id of
        // the same form, unique per call.
        return format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    }
    id.to_string()
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// A tonic client interceptor that carries the current span's trace context to the server.
pub fn inject_trace_context(
    mut req: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(req.metadata_mut()))
    });
    Ok(req)
}

/// The current span's trace context as a W3C `traceparent` value (empty without one), for a
/// message that carries several traces, one per item (a batch of `SendStream`): see [`set_parent_traceparent`].
pub fn current_traceparent() -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the trace a [`current_traceparent`] value names (no-op when empty).
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let parent = global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
}

const TRACEPARENT: &str = "traceparent";

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Calls a node makes on its own, not on anyone's behalf: on a timer (the outbox sweep,
/// presence refreshes) or for as long as it runs (the send stream, whose sends each carry their
/// own trace). Without a caller's trace they are traced at debug, so that they do not make an
/// empty root trace every second per node, or one as long as a node's life.
const BACKGROUND_RPCS: &[&str] = &[
    "/switchboard.messages.v1.Messages/ClaimUndelivered",
    "/switchboard.messages.v1.Messages/SendStream",
    "/switchboard.presence.v1.Presence/Refresh",
];

/// The span of one incoming gRPC request, a child of the caller's trace when it sent one.
pub fn grpc_server_span<B>(req: &http::Request<B>) -> tracing::Span {
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let rpc = req.uri().path();
    let span = if !parent.span().span_context().is_valid() && BACKGROUND_RPCS.contains(&rpc) {
        tracing::debug_span!("grpc", rpc = %rpc, otel.kind = "server")
    } else {
        tracing::info_span!("grpc", rpc = %rpc, otel.kind = "server")
    };
    let _ = span.set_parent(parent);
    span
}

/// The span of one incoming HTTP request, a child of the caller's trace when it sent one.
///
/// `route` names the request in the span: the route's template (`/v1/sessions/{token}`) where
/// the caller knows it, so that secrets carried in paths stay out of traces and logs.
pub fn http_server_span<B>(req: &http::Request<B>, route: &str) -> tracing::Span {
    let parent = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let span =
        tracing::info_span!("http", method = %req.method(), path = %route, otel.kind = "server");
    let _ = span.set_parent(parent);
    span
}

/// The response header in which a service reports how long it worked on a request (its
/// Postgres/Redis time plus a little decoding), in the `Server-Timing` format: `app;dur=<ms>`.
/// The gateway records it beside the round trip it measures itself.
pub const SERVER_TIMING: &str = "server-timing";

/// Wraps a gRPC server's response future so the response carries [`SERVER_TIMING`]. Used as
/// `Server::builder().layer(tower::ServiceBuilder::new().map_future(report_server_timing))`.
pub fn report_server_timing<F, B, E>(
    fut: F,
) -> impl Future<Output = Result<http::Response<B>, E>> + Send
where
    F: Future<Output = Result<http::Response<B>, E>> + Send,
{
    let start = std::time::Instant::now();
    async move {
        let mut res = fut.await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if let Ok(v) = http::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
            res.headers_mut().insert(SERVER_TIMING, v);
        }
        Ok(res)
    }
}

/// The duration in a `Server-Timing` value written by [`report_server_timing`].
pub fn parse_server_timing(value: &str) -> Option<std::time::Duration> {
    let ms: f64 = value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("dur="))?
        .parse()
        .ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| std::time::Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_carries_the_trace_to_another_span() {
        use tracing_subscriber::layer::SubscriberExt;
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let sender = tracing::info_span!("sender");
            let (traceparent, trace_id) =
                sender.in_scope(|| (current_traceparent(), current_trace_id()));
            assert!(
                traceparent.contains(&trace_id),
                "{traceparent} / {trace_id}"
            );
            let receiver = tracing::info_span!("receiver");
            set_parent_traceparent(&receiver, &traceparent);
            assert_eq!(receiver.in_scope(current_trace_id), trace_id);
            // No traceparent: a trace of its own.
            let alone = tracing::info_span!("alone");
            set_parent_traceparent(&alone, "");
            assert_ne!(alone.in_scope(current_trace_id), trace_id);
        });
    }

    #[test]
    fn server_timing_round_trip() {
        assert_eq!(
            parse_server_timing("app;dur=1.500"),
            Some(std::time::Duration::from_micros(1500))
        );
        assert_eq!(parse_server_timing("app"), None);
        assert_eq!(parse_server_timing("app;dur=-1"), None);
    }
}
