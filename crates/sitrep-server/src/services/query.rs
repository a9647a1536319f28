//! `QueryService`: the current picture, the directory and the catalogue, history and the views over it, on
//! request. Each method reads its request, calls the context or a view ([`crate::views`], shared with HTTP) and
//! writes the answer; failures are [`crate::error::Error`]s, made statuses by `?`.

use std::sync::Arc;

use sitrep_core::Timestamp;
use sitrep_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{Action, principal_of};
use crate::context::Context;
use crate::convert::{
    alert_to_wire, catalogue_to_wire, directory_to_wire, filter_from_wire, history_entry_to_wire,
    metric_series_to_wire, provider_hour_to_wire, refusal_to_wire, scope_hour_to_wire, scope_to_wire, snapshot_to_wire,
    timestamp_from_wire,
};
use crate::views::{self, Hourly};

pub struct QueryApi {
    ctx: Arc<Context>,
}

impl QueryApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        QueryApi { ctx }
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryApi {
    async fn get_snapshot(&self, request: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let who = principal_of(request.extensions())?;
        let filter = self.ctx.resolve(request.get_ref().filter.as_ref().map(filter_from_wire).as_ref(), who)?;
        let mut snap = self.ctx.snapshot(&filter.providers).await?;
        filter.retain_readable(&mut snap.rollups);
        let metrics = filter.metrics.as_ref();
        Ok(Response::new(snapshot_to_wire(
            &self.ctx.rules,
            &snap.cursor,
            &snap.providers,
            &snap.rollups,
            false,
            metrics,
        )))
    }

    async fn get_directory(
        &self,
        request: Request<pb::GetDirectoryRequest>,
    ) -> Result<Response<pb::Directory>, Status> {
        let who = principal_of(request.extensions())?;
        Ok(Response::new(directory_to_wire(&self.ctx.rules.directory, &who.grants.readable)))
    }

    async fn get_catalogue(&self, _: Request<pb::GetCatalogueRequest>) -> Result<Response<pb::Catalogue>, Status> {
        Ok(Response::new(catalogue_to_wire(&self.ctx.rules.catalogue)))
    }

    async fn get_history(&self, request: Request<pb::GetHistoryRequest>) -> Result<Response<pb::History>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let ctx = &self.ctx;
        ctx.known_provider(&req.provider)?;
        who.may(Action::ReadProvider(&req.provider))?;
        for (i, m) in req.metrics.iter().enumerate() {
            views::known_metric(ctx, &format!("metrics[{i}]"), m)?;
        }
        let (from, to) =
            ctx.history_range(req.from.as_ref().map(timestamp_from_wire), req.to.as_ref().map(timestamp_from_wire))?;
        let records = ctx.store.history(&req.provider, from, to).await.map_err(crate::error::Error::store)?;
        let entries = records.into_iter().map(|h| history_entry_to_wire(h, &req.metrics)).collect();
        Ok(Response::new(pb::History { provider: req.provider, entries }))
    }

    async fn get_metric_history(
        &self,
        request: Request<pb::GetMetricHistoryRequest>,
    ) -> Result<Response<pb::MetricHistory>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let filter = req.filter.as_ref().map(filter_from_wire);
        let (from, to) = (req.from.as_ref().map(timestamp_from_wire), req.to.as_ref().map(timestamp_from_wire));
        let found = views::metric_history(&self.ctx, &who, &req.metric, filter, from, to).await?;
        let series = found.into_iter().map(metric_series_to_wire).collect();
        Ok(Response::new(pb::MetricHistory { metric: req.metric, series }))
    }

    async fn get_alerts(&self, request: Request<pb::GetAlertsRequest>) -> Result<Response<pb::Alerts>, Status> {
        let who = principal_of(request.extensions())?;
        let filter = self.ctx.resolve(request.get_ref().filter.as_ref().map(filter_from_wire).as_ref(), who)?;
        let alerts = self.ctx.alerts(&filter.providers).await?;
        Ok(Response::new(pb::Alerts { alerts: alerts.iter().map(alert_to_wire).collect() }))
    }

    async fn get_refusals(&self, request: Request<pb::GetRefusalsRequest>) -> Result<Response<pb::Refusals>, Status> {
        principal_of(request.extensions())?.may(Action::Admin)?;
        let req = request.into_inner();
        let since = req.since.as_ref().map(timestamp_from_wire).unwrap_or(Timestamp(0));
        let limit = if req.limit == 0 { 200 } else { req.limit as usize };
        let refusals = self.ctx.auth.refusals();
        let list = refusals.since(since, limit).into_iter().map(refusal_to_wire).collect();
        Ok(Response::new(pb::Refusals { refusals: list, counted: refusals.counted() }))
    }

    async fn get_hourly(&self, request: Request<pb::GetHourlyRequest>) -> Result<Response<pb::Hourly>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let query = views::HourlyQuery {
            metric: req.metric.clone(),
            provider: Some(req.provider),
            scope: Some(req.scope),
            hours: req.hours,
            to: req.to.as_ref().map(timestamp_from_wire),
        };
        let mut out = pb::Hourly { metric: req.metric, ..Default::default() };
        match views::hourly(&self.ctx, &who, &query).await? {
            Hourly::Provider { provider, hours } => {
                out.points = hours.into_iter().map(provider_hour_to_wire).collect();
                out.provider = provider;
            }
            Hourly::ProviderDerived { provider, hours } => {
                out.points = hours
                    .into_iter()
                    .map(|h| pb::HourlyPoint {
                        providers_reported: Vec::new(),
                        providers_expected: 0,
                        completeness: 0.0,
                        ..scope_hour_to_wire(h)
                    })
                    .collect();
                out.provider = provider;
            }
            Hourly::Scope { scope, hours } => {
                out.points = hours.into_iter().map(scope_hour_to_wire).collect();
                out.scope = Some(scope_to_wire(&self.ctx.rules, &scope));
            }
        }
        Ok(Response::new(out))
    }
}
