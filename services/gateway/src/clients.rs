//! The gateway's only way to state: gRPC clients of the three services. Every call carries the
//! current trace context, has a deadline, and is timed into `switchboard_grpc_client_duration_seconds`.

use std::{sync::Arc, time::Instant};

use switchboard_common::{
    DomainError,
    telemetry::{self, inject_trace_context},
};
use switchboard_proto::{
    membership::membership_client::MembershipClient, messages::messages_client::MessagesClient,
    presence::presence_client::PresenceClient,
};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    config::Config,
    metrics::{GrpcLabels, Metrics},
};

type Interceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type Traced = InterceptedService<Channel, Interceptor>;

#[derive(Clone)]
pub struct Clients {
    pub membership: MembershipClient<Traced>,
    pub messages: MessagesClient<Traced>,
    pub presence: PresenceClient<Traced>,
    metrics: Arc<Metrics>,
}

fn channel(url: &str, config: &Config) -> anyhow::Result<Channel> {
    // Lazy: a service that is down at start-up is retried on each call (readiness reports it).
    Ok(Endpoint::from_shared(url.to_string())?
        .timeout(config.grpc_timeout)
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .connect_lazy())
}

impl Clients {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let i: Interceptor = inject_trace_context;
        Ok(Self {
            membership: MembershipClient::with_interceptor(
                channel(&config.membership_url, config)?,
                i,
            ),
            messages: MessagesClient::with_interceptor(channel(&config.messages_url, config)?, i),
            presence: PresenceClient::with_interceptor(channel(&config.presence_url, config)?, i),
            metrics,
        })
    }

    /// Runs one call, timing it and turning a `Status` into the domain error it carries.
    pub async fn call<T>(
        &self,
        service: &'static str,
        method: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DomainError> {
        let start = Instant::now();
        let result = fut.await;
        let labels = self.observe(service, method, result.is_ok(), start.elapsed());
        // The service's own time on the call (its Postgres/Redis work), when it reported it.
        let metadata = match &result {
            Ok(r) => Some(r.metadata()),
            Err(s) => Some(s.metadata()),
        };
        if let Some(inside) = metadata
            .and_then(|m| m.get(telemetry::SERVER_TIMING))
            .and_then(|v| v.to_str().ok())
            .and_then(telemetry::parse_server_timing)
        {
            self.metrics
                .grpc_server
                .get_or_create(&labels)
                .observe(inside.as_secs_f64());
        }
        result
            .map(tonic::Response::into_inner)
            .map_err(DomainError::from)
    }

    /// Times one call (or, on a stream, one exchange) into the client metrics.
    pub fn observe(
        &self,
        service: &'static str,
        method: &'static str,
        ok: bool,
        took: std::time::Duration,
    ) -> GrpcLabels {
        let labels = GrpcLabels {
            service,
            method,
            ok,
        };
        self.metrics
            .grpc
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        labels
    }
}
