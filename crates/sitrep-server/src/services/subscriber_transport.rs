//! The transport of `SubscriberService.Subscribe`: the generated server's routing, with a codec that can send an
//! update the Hub has already encoded.
//!
//! With many subscribers following everything, encoding each event once per subscriber was most of the cost of
//! fan-out. This service is wire-identical to the generated one (same path, same messages, so generated clients
//! in any language and reflection are unaffected), but its responses are [`OutUpdate`]s, which
//! [`super::subscriber`] makes: either a message to encode, or the bytes of an `Update` encoded once and shared.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use prost::bytes::BufMut;
use sitrep_proto::v1 as pb;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use super::subscriber::{OutUpdate, SubscriberApi};

/// Encodes [`OutUpdate`]s, decodes `SubscribeRequest`s.
#[derive(Default)]
struct OutCodec;

struct OutEncoder;
struct RequestDecoder;

impl Encoder for OutEncoder {
    type Item = OutUpdate;
    type Error = Status;

    fn encode(&mut self, item: OutUpdate, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            OutUpdate::Message(m) => m.encode(dst).map_err(|e| Status::internal(format!("encoding an update: {e}"))),
            OutUpdate::Encoded(bytes) => {
                dst.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

impl Decoder for RequestDecoder {
    type Item = pb::SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::SubscribeRequest>, Status> {
        pb::SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a SubscribeRequest: {e}")))
    }
}

impl Codec for OutCodec {
    type Encode = OutUpdate;
    type Decode = pb::SubscribeRequest;
    type Encoder = OutEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> OutEncoder {
        OutEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// `sitrep.v1.SubscriberService`, served.
#[derive(Clone)]
pub struct SubscriberServer {
    api: Arc<SubscriberApi>,
    max_decoding_message_size: usize,
}

impl SubscriberServer {
    pub fn new(api: SubscriberApi, max_decoding_message_size: usize) -> Self {
        SubscriberServer { api: Arc::new(api), max_decoding_message_size }
    }
}

impl NamedService for SubscriberServer {
    const NAME: &'static str = "sitrep.v1.SubscriberService";
}

struct SubscribeMethod(Arc<SubscriberApi>);

impl tonic::server::ServerStreamingService<pb::SubscribeRequest> for SubscribeMethod {
    type Response = OutUpdate;
    type ResponseStream = super::subscriber::UpdateStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<pb::SubscribeRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.subscribe(request).await })
    }
}

impl<B> Service<http::Request<B>> for SubscriberServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (api, max) = (self.api.clone(), self.max_decoding_message_size);
        match req.uri().path() {
            "/sitrep.v1.SubscriberService/Subscribe" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(OutCodec).apply_max_message_size_config(Some(max), None);
                Ok(grpc.server_streaming(SubscribeMethod(api), req).await)
            }),
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            }),
        }
    }
}
