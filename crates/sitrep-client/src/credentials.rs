//! A client's credential: the `authorization: Bearer <key>` header every call on a channel carries, put there by
//! an interceptor that also carries the caller's trace context to the aggregator. Checking credentials is the
//! aggregator's (`sitrep_server::auth`); this side only presents one, so it needs nothing of the server.

/// A client's side: the `authorization: Bearer ...` every call on a channel carries (none: calls go without), and
/// the current trace context when tracing is on.
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// `key` (an API key or a signed token), or an error that does not echo it.
    pub fn new(key: &str) -> Result<Self, String> {
        let value = format!("Bearer {}", key.trim())
            .parse()
            .map_err(|_| "the key has characters a header cannot carry".to_owned())?;
        Ok(Bearer(Some(value)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        // The caller's trace continues on the aggregator (nothing when tracing is off).
        sitrep_telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

/// A client channel whose calls carry a credential.
pub type AuthedChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` with `bearer` on every call.
pub fn authed(channel: tonic::transport::Channel, bearer: Bearer) -> AuthedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, bearer)
}
