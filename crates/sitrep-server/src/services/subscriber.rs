//! `SubscriberService`: a [`crate::session`] per subscription, its items encoded as `Update`s.
//!
//! Events the Hub shares are sent in their shared encoding (made once, by the first subscriber that needs it) when
//! the subscriber takes every metric, and snapshots are assembled from each provider's encoding, which the Hub
//! keeps until the provider changes; anything else is encoded for this subscriber.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use prost::bytes::Bytes;
use sitrep_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::principal_of;
use crate::context::Context;
use crate::convert::{
    encode_event_update, live_to_wire, resync_to_wire, rollup_to_wire, snapshot_to_wire, timestamp_to_wire,
    write_rollup,
};
use crate::error::Error;
use crate::metrics::Transport;
use crate::session::{self, Out, OutEvent};
use sitrep_store::write;

/// One response of a subscription.
// Built and consumed one at a time per stream: boxing the message would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum OutUpdate {
    /// An update to encode.
    Message(pb::Update),
    /// The bytes of an encoded `Update`, shared between subscribers.
    Encoded(Bytes),
}

/// The stream of a subscription, as the transport sends it.
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<OutUpdate, Status>> + Send>>;

pub struct SubscriberApi {
    ctx: Arc<Context>,
}

impl SubscriberApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        SubscriberApi { ctx }
    }
}

impl SubscriberApi {
    /// `SubscriberService.Subscribe` (served by [`super::subscriber_transport::SubscriberServer`]).
    pub async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Result<Response<UpdateStream>, Status> {
        let peer = request.remote_addr();
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let filter = self.ctx.resolve(req.filter.as_ref().map(crate::convert::filter_from_wire).as_ref(), &who)?;
        let heartbeat = match req.heartbeat_seconds {
            0 => self.ctx.subscribers.default_heartbeat_seconds,
            s @ 1..=300 => s,
            s => {
                return Err(Error::invalid_field(
                    "heartbeat_seconds",
                    "range",
                    format!("heartbeat_seconds = {s} is outside 1..=300"),
                )
                .into());
            }
        };
        let resume = (!req.resume_from.is_empty()).then_some(req.resume_from);
        let ticket = self.ctx.subscriptions.open(&who.name)?;
        // Who subscribed to what, and from where it replays: the audit of reads.
        tracing::info!(?peer, principal = %who.name, credential = %who.credential, filter = ?req.filter, resume = resume.as_deref(), "subscriber connected");
        let metrics = filter.metrics.clone();
        let who = format!("grpc {peer:?} {}", who.name);
        let rx = session::start(
            self.ctx.clone(),
            filter,
            Duration::from_secs(heartbeat.into()),
            resume,
            who,
            Transport::Grpc,
            ticket,
        );
        let ctx = self.ctx.clone();
        // Counted as open for as long as the transport holds the stream.
        let open = self.ctx.metrics.subscribed(Transport::Grpc);
        let stream = ReceiverStream::new(rx).map(move |item| {
            let _open = &open;
            item.map(|out| encode(&ctx, metrics.as_ref(), out)).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A provider's state as encoded in snapshots (every metric).
pub fn encode_provider(p: &sitrep_core::ProviderLive) -> prost::bytes::Bytes {
    live_to_wire(p, None).encode_to_vec().into()
}

/// A part of a snapshot as an encoded `Update`, each provider's encoding taken from the Hub's cache: what
/// `snapshot_to_wire` and prost would produce, field by field.
fn encode_snapshot(ctx: &Context, snap: &crate::session::SnapshotPart) -> prost::bytes::Bytes {
    let mut out = Vec::new();
    write::message(1, &mut out, |b| {
        write::text(1, &snap.cursor.to_string(), b);
        for p in &snap.providers {
            let bytes = ctx.hub.encoded_provider(&snap.cursor.epoch, p, encode_provider);
            write::message(2, b, |b| b.extend_from_slice(&bytes));
        }
        for r in &snap.rollups {
            write::message(3, b, |b| write_rollup(&ctx.rules, r, b));
        }
        write::boolean(4, snap.more, b);
    });
    out.into()
}

fn update(kind: pb::update::Kind) -> pb::Update {
    pb::Update { kind: Some(kind) }
}

/// A session's item as an `Update`: shared events in their shared encoding.
fn encode(ctx: &Context, metrics: Option<&BTreeSet<String>>, out: Out) -> OutUpdate {
    if let Out::Event(e) = &out {
        ctx.metrics.delivered(Transport::Grpc, e.event());
    }
    let kind = match out {
        Out::Event(OutEvent::Shared(shared)) => {
            let rules = &ctx.rules;
            return OutUpdate::Encoded(shared.encoded(|e| encode_event_update(rules, e).into()));
        }
        Out::Event(OutEvent::Own(event)) => return OutUpdate::Encoded(encode_event_update(&ctx.rules, &event).into()),
        Out::Snapshot(snap) if metrics.is_none() => return OutUpdate::Encoded(encode_snapshot(ctx, &snap)),
        Out::Snapshot(snap) => pb::update::Kind::Snapshot(snapshot_to_wire(
            &ctx.rules,
            &snap.cursor,
            &snap.providers,
            &snap.rollups,
            snap.more,
            metrics,
        )),
        Out::Heartbeat(cursor) => pb::update::Kind::Heartbeat(pb::Heartbeat {
            cursor: cursor.to_string(),
            server_time: Some(timestamp_to_wire(sitrep_core::Timestamp::now())),
        }),
        Out::Reset(reason, text) => {
            pb::update::Kind::Reset(pb::Reset { reason: resync_to_wire(reason) as i32, message: text.to_owned() })
        }
        Out::Rollups(cursor, rollups) => pb::update::Kind::Rollups(pb::Rollups {
            cursor: cursor.to_string(),
            rollups: rollups.iter().map(|r| rollup_to_wire(&ctx.rules, r)).collect(),
        }),
        Out::Status(state) => pb::update::Kind::Status(pb::PictureStatus {
            degraded: state.degraded,
            message: state.message.clone(),
            since: Some(timestamp_to_wire(state.since)),
        }),
    };
    OutUpdate::Message(update(kind))
}
