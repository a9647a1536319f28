//! `AidService`: mutual aid over gRPC (`proto/sitrep/v1/aid.proto`).
//!
//! Each call is the authenticated principal, the message made a domain value by [`crate::convert::aid`], one call
//! into [`crate::aid`], and the answer made a message again. Who may do what, and what the state machines refuse,
//! are decided there and only there (the JSON API shares them); nothing here checks a grant or a state.
//!
//! Requests go out with the holds their accepted offers have placed. Holds live in the holding providers' state and
//! the book keeps a copy of them all; a view reads them from the Hub's picture just after the cases, so a hold ended
//! in between is left out rather than shown on an offer whose request has moved on.

use std::sync::Arc;

use sitrep_core::Timestamp;
use sitrep_core::aid::Hold;
use sitrep_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::aid;
use crate::auth::principal_of;
use crate::context::Context;
use crate::convert::aid::{self as wire, Trail};
use crate::error::Error;

pub struct AidApi {
    ctx: Arc<Context>,
}

impl AidApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        AidApi { ctx }
    }

    /// Takes an action made from a message (or refuses the message), for the request's caller.
    async fn act<T>(
        &self,
        request: Request<T>,
        action: impl FnOnce(&T) -> Result<sitrep_core::aid::Action, Error>,
        cursor: impl FnOnce(&T) -> &str,
    ) -> Result<Response<pb::AidUpdate>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let m = request.into_inner();
        let action = action(&m)?;
        let done = aid::act(&self.ctx, &who, action, Some(cursor(&m))).await?;
        Ok(Response::new(wire::done_to_wire(&done, &self.ctx.rules.directory)))
    }

    /// Every hold in force, from the Hub's picture (see the module's documentation).
    async fn holds(&self) -> Result<Vec<Hold>, Error> {
        self.ctx.with_picture(|p| p.aid().holds().cloned().collect()).await
    }
}

#[tonic::async_trait]
impl pb::aid_service_server::AidService for AidApi {
    async fn create_request(&self, request: Request<pb::NewAidRequest>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::create_from_wire, |m| &m.cursor).await
    }

    async fn offer(&self, request: Request<pb::NewAidOffer>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::offer_from_wire, |m| &m.cursor).await
    }

    async fn accept(&self, request: Request<pb::AcceptOffer>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::accept_from_wire, |m| &m.cursor).await
    }

    async fn decline(&self, request: Request<pb::DeclineOffer>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::decline_from_wire, |m| &m.cursor).await
    }

    async fn withdraw(&self, request: Request<pb::WithdrawOffer>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::withdraw_from_wire, |m| &m.cursor).await
    }

    async fn progress(&self, request: Request<pb::ProgressRequest>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::progress_from_wire, |m| &m.cursor).await
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::cancel_from_wire, |m| &m.cursor).await
    }

    async fn unfulfilled(&self, request: Request<pb::UnfulfilledRequest>) -> Result<Response<pb::AidUpdate>, Status> {
        self.act(request, wire::unfulfilled_from_wire, |m| &m.cursor).await
    }

    async fn list_requests(&self, request: Request<pb::ListAidRequests>) -> Result<Response<pb::AidRequests>, Status> {
        let who = principal_of(request.extensions())?;
        let m = request.get_ref();
        let cases = aid::cases(&self.ctx, who, !m.all, Some(&m.scope)).await?;
        let holds = self.holds().await?;
        let requests = cases.iter().map(|c| wire::case_to_wire(c, &holds, Trail::Omitted)).collect();
        Ok(Response::new(pb::AidRequests { requests }))
    }

    async fn get_request(&self, request: Request<pb::GetAidRequest>) -> Result<Response<pb::AidRequest>, Status> {
        let who = principal_of(request.extensions())?;
        let id = wire::get_from_wire(request.get_ref())?;
        let case = aid::case(&self.ctx, who, id).await?;
        let holds = self.holds().await?;
        Ok(Response::new(wire::case_to_wire(&case, &holds, Trail::Full)))
    }

    async fn candidates(&self, request: Request<pb::GetAidCandidates>) -> Result<Response<pb::AidCandidates>, Status> {
        let who = principal_of(request.extensions())?;
        let id = wire::candidates_from_wire(request.get_ref())?;
        // The ranking is made on this picture or a later one (the picture only moves forward).
        let cursor = self.ctx.with_picture(|p| p.cursor().clone()).await?;
        let (_, ranking) = aid::candidates(&self.ctx, who, id).await?;
        Ok(Response::new(wire::candidates_to_wire(id, &cursor, &ranking)))
    }

    async fn measures(&self, request: Request<pb::GetAidMeasures>) -> Result<Response<pb::AidMeasures>, Status> {
        let who = principal_of(request.extensions())?;
        let (scope, days) = (&request.get_ref().scope, request.get_ref().days);
        let (live, by_day) = aid::measures(&self.ctx, who, scope, days).await?;
        Ok(Response::new(wire::measures_to_wire(scope, &live, &by_day, Timestamp::now())))
    }
}
