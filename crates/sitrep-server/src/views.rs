//! The views over history that more than one surface asks for: the hour-by-hour view of one metric
//! ([`hourly`], `QueryService.GetHourly` and `GET /api/v1/hourly`), a metric's series per provider ([`metric_history`],
//! `QueryService.GetMetricHistory`) and the hour before the current one ([`previous_hour`], `GET
//! /api/v1/previous_hour`, what the wallboard shows changes against).
//!
//! Each takes domain inputs and the caller, checks and authorises them the same way for every transport, reads the
//! store's history in one batch ([`sitrep_store::Store::histories`], never a round trip per provider), and answers
//! with domain values or an [`Error`]; the handlers only read the request, call a view and write its answer. The
//! rules of the views themselves (merging an hour's revisions and sites, changes, completeness, rollups) are the
//! core's ([`sitrep_core::hourly`], [`sitrep_core::rollup`]).

use std::collections::{BTreeMap, BTreeSet};

use sitrep_core::hourly::{PeriodRevision, ProviderHour, ScopeHour, hours_ending, provider_hours, scope_hours};
use sitrep_core::rollup::{Totals, rollup};
use sitrep_core::{Code, HistoryRecord, Scope, Selection, Timestamp, Value};

use crate::auth::{Action, Principal};
use crate::context::{Context, FilterSpec, ResolvedFilter};
use crate::error::Error;

/// Hours in an hour-by-hour view when the request does not say.
pub const DEFAULT_HOURS: u32 = 72;

/// What an hour-by-hour view is asked for: one metric of one provider or of one scope (exactly one of them).
#[derive(Clone, Debug, Default)]
pub struct HourlyQuery {
    pub metric: String,
    /// A provider code, e.g. "RJ7".
    pub provider: Option<String>,
    /// A scope, e.g. "system:QWE".
    pub scope: Option<String>,
    /// How many hours; 0: [`DEFAULT_HOURS`].
    pub hours: u32,
    /// The last hour shown (its hour); `None`: the current hour.
    pub to: Option<Timestamp>,
}

/// An hour-by-hour view.
#[derive(Clone, Debug, PartialEq)]
pub enum Hourly {
    /// A catalogue metric of one provider.
    Provider { provider: String, hours: Vec<ProviderHour> },
    /// A derived figure (e.g. occupancy) of one provider, from each hour's merged values like a one-provider scope.
    ProviderDerived { provider: String, hours: Vec<ScopeHour> },
    /// A metric of a scope, rolled up from its providers hour by hour, with completeness.
    Scope { scope: Scope, hours: Vec<ScopeHour> },
}

/// The hour-by-hour view `q` asks for, if `who` may read it: INVALID_ARGUMENT naming the field for an unknown
/// metric, provider or scope, too many hours, or not exactly one of provider and scope; PERMISSION_DENIED outside
/// the caller's read grant.
pub async fn hourly(ctx: &Context, who: &Principal, q: &HourlyQuery) -> Result<Hourly, Error> {
    known_metric(ctx, "metric", &q.metric)?;
    let hours = if q.hours == 0 { DEFAULT_HOURS } else { q.hours };
    if i64::from(hours) > ctx.limits.retention_hours {
        return Err(Error::invalid_field(
            "hours",
            "within_retention",
            format!("hours = {hours} exceeds the {} hours of history kept", ctx.limits.retention_hours),
        ));
    }
    let to = q.to.unwrap_or_else(Timestamp::now).hour_start();
    let periods = hours_ending(to, hours);
    // One hour more than shown, so the first hour has a change too.
    let from = periods[0].add_hours(-1);
    let rules = &ctx.rules;
    match (q.provider.as_deref().filter(|p| !p.is_empty()), q.scope.as_deref().filter(|s| !s.is_empty())) {
        (Some(provider), None) => {
            ctx.known_provider(provider)?;
            who.may(Action::ReadProvider(provider))?;
            let records = revisions(ctx.store.history(provider, from, to).await?);
            if ctx.rules.catalogue.get(&q.metric).is_some() {
                let hours = provider_hours(rules, &records, &q.metric, &periods);
                return Ok(Hourly::Provider { provider: provider.to_owned(), hours });
            }
            let figure = |merged: &BTreeMap<Code, Value>| -> Option<f64> {
                sitrep_core::derive::figures(&ctx.rules.catalogue, merged).get(&q.metric).copied()
            };
            let histories = BTreeMap::from([(provider.to_owned(), records)]);
            let expected = [provider.to_owned()];
            let hours = scope_hours(rules, &histories, &expected, &periods, |list| figure(list.first()?.1));
            Ok(Hourly::ProviderDerived { provider: provider.to_owned(), hours })
        }
        (None, Some(text)) => {
            let scope = Scope::parse(text).filter(|s| rules.scopes().contains(s)).ok_or_else(|| {
                Error::invalid_field(
                    "scope",
                    "known_scope",
                    format!("scope {text:?} is not a system, region or nation of the directory (e.g. \"system:QWE\")"),
                )
            })?;
            who.may(Action::ReadScope(&scope))?;
            let expected: Vec<String> = ctx
                .rules
                .directory
                .providers()
                .filter(|p| rules.in_scope(&p.code, &scope))
                .map(|p| p.code.clone())
                .collect();
            let histories = histories(ctx, &expected, from, to).await?;
            let metrics = BTreeSet::from([q.metric.clone()]);
            let roll = |list: &[(&str, &BTreeMap<Code, Value>)]| {
                let mut totals = Totals::new(rules);
                for (_, values) in list {
                    totals.add(rules, values, false);
                }
                rollup(rules, &scope, &totals, Some(&metrics)).metrics.first().and_then(|m| m.value)
            };
            let hours = scope_hours(rules, &histories, &expected, &periods, roll);
            Ok(Hourly::Scope { scope, hours })
        }
        _ => Err(Error::invalid_field(
            "provider",
            "one_of",
            "give exactly one of provider (e.g. \"RJ7\") or scope (e.g. \"system:QWE\")".to_owned(),
        )),
    }
}

/// One metric's hour-by-hour points of one provider: the hours it reported, each hour's revisions merged (and its
/// sites combined) as the hourly view does.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSeries {
    pub provider: String,
    pub hours: Vec<ProviderHour>,
}

/// `metric`'s series for every provider `filter` selects (its metrics ignored) that reported it from `from` to
/// `to` (each `None`: see [`Context::history_range`]), within what `who` may read.
pub async fn metric_history(
    ctx: &Context,
    who: &Principal,
    metric: &str,
    filter: Option<FilterSpec>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<MetricSeries>, Error> {
    known_metric(ctx, "metric", metric)?;
    let filter = ctx.resolve(filter.map(|f| FilterSpec { metrics: Vec::new(), ..f }).as_ref(), who)?;
    let (from, to) = ctx.history_range(from, to)?;
    let providers: Vec<String> = match filter.providers {
        Selection::All => ctx.rules.directory.providers().map(|p| p.code.clone()).collect(),
        Selection::Only(set) => set.into_iter().collect(),
    };
    let mut histories = histories(ctx, &providers, from, to).await?;
    let mut series = Vec::new();
    for provider in providers {
        let Some(records) = histories.remove(&provider) else { continue };
        let periods: Vec<Timestamp> = records.iter().map(|r| r.period).collect::<BTreeSet<_>>().into_iter().collect();
        let hours: Vec<ProviderHour> = provider_hours(&ctx.rules, &records, metric, &periods)
            .into_iter()
            .filter(|h| h.revision.is_some() && h.value.is_some())
            .collect();
        if !hours.is_empty() {
            series.push(MetricSeries { provider, hours });
        }
    }
    Ok(series)
}

/// Each selected provider's figures, and each of their scopes' rollup figures, for one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousHour {
    pub hour: Timestamp,
    /// Provider code -> figure -> value, for the selected providers that reported that hour.
    pub providers: BTreeMap<String, BTreeMap<String, f64>>,
    /// Scope -> figure -> value, for the selected providers' scopes the caller may read.
    pub rollups: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The hour before `now`'s (the current hour when `None`) for what `filter` selects, within what `who` may read:
/// what the wallboard shows changes against. Every provider of the selected scopes counts towards their rollups,
/// selected or not.
pub async fn previous_hour(
    ctx: &Context,
    who: &Principal,
    filter: &FilterSpec,
    now: Option<Timestamp>,
) -> Result<PreviousHour, Error> {
    let f: ResolvedFilter = ctx.resolve(Some(filter), who)?;
    let hour = now.unwrap_or_else(Timestamp::now).hour_start().add_hours(-1);
    let rules = &ctx.rules;
    let scopes = f.scopes(rules);
    let wanted: Vec<String> = rules
        .directory
        .providers()
        .filter(|p| f.providers.contains(&p.code) || scopes.iter().any(|s| rules.in_scope(&p.code, s)))
        .map(|p| p.code.clone())
        .collect();
    let merged: BTreeMap<String, BTreeMap<Code, Value>> = histories(ctx, &wanted, hour, hour)
        .await?
        .into_iter()
        .filter_map(|(p, records)| Some((p, sitrep_core::hourly::merged_hour(rules, &records, hour)?)))
        .collect();
    let providers = merged
        .iter()
        .filter(|(p, _)| f.providers.contains(p))
        .map(|(p, v)| (p.clone(), sitrep_core::derive::figures(&rules.catalogue, v)))
        .collect();
    let mut rollups = BTreeMap::new();
    for scope in &scopes {
        let mut totals = Totals::new(rules);
        for (_, values) in merged.iter().filter(|(p, _)| rules.in_scope(p, scope)) {
            totals.add(rules, values, false);
        }
        let figures: BTreeMap<String, f64> = rollup(rules, scope, &totals, None)
            .metrics
            .into_iter()
            .filter_map(|m| Some((m.metric.to_string(), m.value?)))
            .collect();
        rollups.insert(scope.to_string(), figures);
    }
    Ok(PreviousHour { hour, providers, rollups })
}

/// INVALID_ARGUMENT on `field` unless the catalogue knows `code` (a metric or a derived figure).
pub fn known_metric(ctx: &Context, field: &str, code: &str) -> Result<(), Error> {
    match ctx.rules.catalogue.knows(code) {
        true => Ok(()),
        false => Err(Error::invalid_field(
            field,
            "known_metric",
            format!("{field}: metric {code:?} is not in the catalogue"),
        )),
    }
}

/// The history of each of `providers` from `from` to `to`, read in one batch, as the core's hourly view reads it.
async fn histories(
    ctx: &Context,
    providers: &[String],
    from: Timestamp,
    to: Timestamp,
) -> Result<BTreeMap<String, Vec<PeriodRevision>>, Error> {
    Ok(ctx.store.histories(providers, from, to).await?.into_iter().map(|(p, r)| (p, revisions(r))).collect())
}

fn revisions(records: Vec<HistoryRecord>) -> Vec<PeriodRevision> {
    records.into_iter().map(PeriodRevision::from).collect()
}
