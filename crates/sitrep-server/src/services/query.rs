//! `QueryService`: the current picture, the directory and the catalogue, on request.

use std::sync::Arc;

use std::collections::BTreeMap;

use sitrep_core::hourly::{PeriodRevision, hours_ending, provider_hours, scope_hours};
use sitrep_core::rollup::{Totals, rollup};
use sitrep_core::{Code, Scope, Selection, Timestamp, Value};
use sitrep_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{Action, principal_of};
use crate::context::{Context, FilterSpec};
use crate::convert::{
    absent_to_wire, alert_to_wire, catalogue_to_wire, directory_to_wire, filter_from_wire, scope_to_wire,
    sender_to_wire, snapshot_to_wire, timestamp_from_wire, timestamp_to_wire, value_to_wire,
};
use crate::error;

/// The periods a history request covers (see [`Context::history_range`]), from the wire.
fn range(
    ctx: &Context,
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Result<(Timestamp, Timestamp), Status> {
    ctx.history_range(from.map(timestamp_from_wire), to.map(timestamp_from_wire))
}

fn known_provider(ctx: &Context, code: &str) -> Result<(), Status> {
    ctx.known_provider(code)
}

fn known_metric(ctx: &Context, field: &str, code: &str) -> Result<(), Status> {
    match ctx.rules.catalogue.knows(code) {
        true => Ok(()),
        false => Err(error::invalid_field(
            field,
            "known_metric",
            format!("{field}: metric {code:?} is not in the catalogue"),
        )),
    }
}

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
        known_provider(ctx, &req.provider)?;
        who.may(Action::ReadProvider(&req.provider))?;
        for (i, m) in req.metrics.iter().enumerate() {
            known_metric(ctx, &format!("metrics[{i}]"), m)?;
        }
        let (from, to) = range(ctx, req.from.as_ref(), req.to.as_ref())?;
        let records = ctx.store.history(&req.provider, from, to).await.map_err(error::store)?;
        let entries = records
            .into_iter()
            .map(|h| pb::HistoryEntry {
                period: Some(timestamp_to_wire(h.period)),
                revision: h.revision,
                observed_at: Some(timestamp_to_wire(h.observed_at)),
                received_at: Some(timestamp_to_wire(h.received_at)),
                values: h
                    .values
                    .into_iter()
                    .filter(|(code, _)| req.metrics.is_empty() || req.metrics.iter().any(|m| m == code.as_str()))
                    .map(|(code, v)| (code.to_string(), value_to_wire(v)))
                    .collect(),
                narrative: h.narrative.unwrap_or_default(),
                source: h.source.unwrap_or_default(),
                site: h.site.unwrap_or_default(),
                sender: h.sender.as_ref().map(sender_to_wire),
            })
            .collect();
        Ok(Response::new(pb::History { provider: req.provider, entries }))
    }

    async fn get_metric_history(
        &self,
        request: Request<pb::GetMetricHistoryRequest>,
    ) -> Result<Response<pb::MetricHistory>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let ctx = &self.ctx;
        known_metric(ctx, "metric", &req.metric)?;
        let filter = ctx.resolve(
            req.filter.as_ref().map(|f| FilterSpec { metrics: Vec::new(), ..filter_from_wire(f) }).as_ref(),
            &who,
        )?;
        let (from, to) = range(ctx, req.from.as_ref(), req.to.as_ref())?;
        let providers: Vec<String> = match filter.providers {
            Selection::All => ctx.rules.directory.providers().map(|p| p.code.clone()).collect(),
            Selection::Only(set) => set.into_iter().collect(),
        };
        let mut series = Vec::new();
        for provider in providers {
            let records: Vec<PeriodRevision> = ctx
                .store
                .history(&provider, from, to)
                .await
                .map_err(error::store)?
                .into_iter()
                .map(PeriodRevision::from)
                .collect();
            // Each hour's revisions merged (and a provider's sites combined) as the hourly view does.
            let periods: Vec<Timestamp> =
                records.iter().map(|r| r.period).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let points: Vec<pb::MetricPoint> = provider_hours(&ctx.rules, &records, &req.metric, &periods)
                .into_iter()
                .filter_map(|h| {
                    Some(pb::MetricPoint {
                        period: Some(timestamp_to_wire(h.period)),
                        revision: h.revision?,
                        value: Some(value_to_wire(h.value?)),
                    })
                })
                .collect();
            if !points.is_empty() {
                series.push(pb::MetricSeries { provider, points });
            }
        }
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
        let list = refusals
            .since(since, limit)
            .into_iter()
            .map(|r| pb::Refusal {
                at: Some(timestamp_to_wire(r.at)),
                principal: r.principal,
                credential: r.credential,
                address: r.address,
                target: r.target,
                kind: r.kind.to_owned(),
                reason: r.reason,
            })
            .collect();
        Ok(Response::new(pb::Refusals { refusals: list, counted: refusals.counted() }))
    }

    async fn get_hourly(&self, request: Request<pb::GetHourlyRequest>) -> Result<Response<pb::Hourly>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let req = request.into_inner();
        let ctx = &self.ctx;
        known_metric(ctx, "metric", &req.metric)?;
        let hours = if req.hours == 0 { DEFAULT_HOURS } else { req.hours };
        if i64::from(hours) > ctx.limits.retention_hours {
            return Err(error::invalid_field(
                "hours",
                "within_retention",
                format!("hours = {hours} exceeds the {} hours of history kept", ctx.limits.retention_hours),
            ));
        }
        let to = req.to.as_ref().map(timestamp_from_wire).unwrap_or_else(Timestamp::now).hour_start();
        let periods = hours_ending(to, hours);
        // One hour more than shown, so the first hour has a change too.
        let from = periods[0].add_hours(-1);
        let history = |provider: String| async move {
            let records = ctx.store.history(&provider, from, to).await.map_err(error::store)?;
            let records: Vec<PeriodRevision> = records.into_iter().map(PeriodRevision::from).collect();
            Ok::<_, Status>((provider, records))
        };
        let metric = req.metric.clone();
        let figure = |merged: &BTreeMap<Code, Value>| -> Option<f64> {
            sitrep_core::derive::figures(&ctx.rules.catalogue, merged).get(&metric).copied()
        };
        let mut out = pb::Hourly { metric: req.metric.clone(), ..Default::default() };
        match (req.provider.is_empty(), req.scope.is_empty()) {
            (false, true) => {
                known_provider(ctx, &req.provider)?;
                who.may(Action::ReadProvider(&req.provider))?;
                let (provider, records) = history(req.provider.clone()).await?;
                if ctx.rules.catalogue.get(&req.metric).is_some() {
                    out.points = provider_hours(&ctx.rules, &records, &req.metric, &periods)
                        .into_iter()
                        .map(|h| pb::HourlyPoint {
                            period: Some(timestamp_to_wire(h.period)),
                            value: match h.value {
                                Some(Value::Number(n)) => Some(n),
                                _ => None,
                            },
                            absent: match h.value {
                                Some(Value::Absent(r)) => absent_to_wire(r) as i32,
                                _ => 0,
                            },
                            change: h.change,
                            revision: h.revision,
                            corrections: h.corrections,
                            reported: h.reported,
                            ..Default::default()
                        })
                        .collect();
                } else {
                    // A derived figure: from each hour's merged values, like a one-provider scope.
                    let histories = BTreeMap::from([(provider.clone(), records)]);
                    let expected = [provider];
                    out.points =
                        scope_hours(&ctx.rules, &histories, &expected, &periods, |list| figure(list.first()?.1))
                            .into_iter()
                            .map(|h| pb::HourlyPoint {
                                providers_reported: Vec::new(),
                                providers_expected: 0,
                                completeness: 0.0,
                                ..scope_point(h)
                            })
                            .collect();
                }
                out.provider = req.provider;
            }
            (true, false) => {
                let scope = Scope::parse(&req.scope).filter(|s| ctx.rules.scopes().contains(s)).ok_or_else(|| {
                    error::invalid_field(
                        "scope",
                        "known_scope",
                        format!(
                            "scope {:?} is not a system, region or nation of the directory (e.g. \"system:QWE\")",
                            req.scope
                        ),
                    )
                })?;
                who.may(Action::ReadScope(&scope))?;
                let expected: Vec<String> = ctx
                    .rules
                    .directory
                    .providers()
                    .filter(|p| ctx.rules.in_scope(&p.code, &scope))
                    .map(|p| p.code.clone())
                    .collect();
                let mut histories = BTreeMap::new();
                for provider in &expected {
                    let (p, records) = history(provider.clone()).await?;
                    histories.insert(p, records);
                }
                let metrics = std::collections::BTreeSet::from([req.metric.clone()]);
                let roll = |list: &[(&str, &BTreeMap<Code, Value>)]| {
                    let mut totals = Totals::new(&ctx.rules);
                    for (_, values) in list {
                        totals.add(&ctx.rules, values, false);
                    }
                    rollup(&ctx.rules, &scope, &totals, Some(&metrics)).metrics.first().and_then(|m| m.value)
                };
                out.points = scope_hours(&ctx.rules, &histories, &expected, &periods, roll)
                    .into_iter()
                    .map(scope_point)
                    .collect();
                out.scope = Some(scope_to_wire(&ctx.rules, &scope));
            }
            _ => {
                return Err(error::invalid_field(
                    "provider",
                    "one_of",
                    "give exactly one of provider (e.g. \"RJ7\") or scope (e.g. \"system:QWE\")".to_owned(),
                ));
            }
        }
        Ok(Response::new(out))
    }
}

/// One hour of a scope's view on the wire.
fn scope_point(h: sitrep_core::hourly::ScopeHour) -> pb::HourlyPoint {
    pb::HourlyPoint {
        period: Some(timestamp_to_wire(h.period)),
        value: h.value,
        change: h.change,
        corrections: h.corrections,
        reported: !h.reported.is_empty(),
        providers_reported: h.reported,
        providers_expected: h.expected,
        completeness: h.completeness,
        ..Default::default()
    }
}

/// Hours in an hour-by-hour view when the request does not say.
const DEFAULT_HOURS: u32 = 72;
