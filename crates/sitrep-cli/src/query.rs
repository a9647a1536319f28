//! `sitrep history`, `hourly`, `alerts` and `refusals`: one `QueryService` call each, its answer printed for
//! people. The aggregator computes every view (hour-by-hour changes, completeness, open alerts); this only turns
//! arguments into a request and the answer into lines, and a refused request into an error naming each field.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use sitrep_client::display::value_text;
use sitrep_core::Timestamp;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::query_service_client::QueryServiceClient;
use tonic_types::StatusExt;

use crate::args::{ProvidersArg, ServerArg, connect};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep history --provider RJ7                          # every revision of the last 24 hours\n  \
    sitrep history --provider RJ7 --metric beds.cc_adult.occupied --hours 72\n  \
    sitrep history --metric beds.cc_adult.occupied --system QWE   # one metric, each provider of a system\n  \
    sitrep history --provider RGT --from 2026-11-26T00:00:00Z --to 2026-11-26T23:00:00Z")]
pub struct HistoryArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The provider whose every stored revision to print. Without it, --metric is required and the metric's
    /// history is printed for each provider selected by --system/--region (all when neither is given).
    #[arg(long)]
    provider: Option<String>,
    /// Metric to include (repeatable; with --provider, empty means all).
    #[arg(long = "metric", value_name = "CODE")]
    metrics: Vec<String>,
    /// With a metric's history: providers of this system (repeatable).
    #[arg(long = "system", value_name = "CODE")]
    systems: Vec<String>,
    /// With a metric's history: providers of this region (repeatable).
    #[arg(long = "region", value_name = "CODE")]
    regions: Vec<String>,
    /// Hours back from the current hour (ignored when --from is given).
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// First period, RFC 3339 (e.g. 2026-11-26T00:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Last period, RFC 3339; default the current hour.
    #[arg(long)]
    to: Option<String>,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep hourly --provider RJ7 --metric beds.cc_adult.occupancy       # the last 72 hours\n  \
    sitrep hourly --scope system:QWE --metric beds.ga_adult.occupancy --hours 24\n  \
    sitrep hourly --scope nation:ENG --metric ed.over_12h")]
pub struct HourlyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Metric code, reported (e.g. beds.cc_adult.occupied) or derived (e.g. beds.cc_adult.occupancy).
    #[arg(long)]
    metric: String,
    /// A provider's hours (give this or --scope).
    #[arg(long)]
    provider: Option<String>,
    /// A scope's hours: system:CODE, region:CODE or nation:CODE.
    #[arg(long)]
    scope: Option<String>,
    /// Hours up to and including the current one.
    #[arg(long, default_value_t = 72)]
    hours: u32,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep alerts\n  \
    sitrep alerts --system QWE --provider RGT")]
pub struct AlertsArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    who: ProvidersArg,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep refusals --key-file admin.key\n  \
    sitrep refusals --hours 1 --limit 50")]
pub struct RefusalsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only those of the last N hours (the aggregator keeps a day).
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 200)]
    limit: u32,
}

fn time_arg(name: &str, text: &Option<String>) -> anyhow::Result<Option<Timestamp>> {
    text.as_deref()
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .with_context(|| format!("--{name} {t:?} is not an RFC 3339 time like 2026-11-27T14:00:00Z"))
        })
        .transpose()
}

/// A failed query as an error naming every field violation the server listed.
fn query_failed(status: tonic::Status) -> anyhow::Error {
    let details = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
    let mut text = status.message().to_owned();
    for v in details {
        text.push_str(&format!("\n  {}: {}", v.field, v.description));
    }
    anyhow::anyhow!(text)
}

pub async fn hourly(args: HourlyArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let request = pb::GetHourlyRequest {
        metric: args.metric,
        provider: args.provider.unwrap_or_default(),
        scope: args.scope.unwrap_or_default(),
        hours: args.hours,
        to: None,
    };
    let h = client.get_hourly(request).await.map_err(query_failed)?.into_inner();
    let number = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    match &h.scope {
        Some(s) => println!("{} for {} {} ({}), hour by hour", h.metric, s.level, s.code, s.name),
        None => println!("{} for {}, hour by hour", h.metric, h.provider),
    }
    for p in &h.points {
        let period = p.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let value = match (p.value, p.reported) {
            (Some(v), _) => number(v),
            (None, true) if p.absent != 0 => {
                format!("absent ({})", pb::AbsentReason::try_from(p.absent).map_or("?", |r| r.as_str_name()))
            }
            (None, true) => "–".to_owned(),
            (None, false) => "not reported".to_owned(),
        };
        let mut line = format!("{period}  {value:>12}");
        if let Some(c) = p.change {
            line.push_str(&format!("  {}{}", if c >= 0.0 { "+" } else { "" }, number(c)));
        }
        if let Some(r) = p.revision {
            line.push_str(&format!("  r{r}"));
        }
        if p.corrections > 0 {
            line.push_str(&format!("  {} correction(s)", p.corrections));
        }
        if h.scope.is_some() {
            line.push_str(&format!(
                "  {}/{} reported ({:.0}%)",
                p.providers_reported.len(),
                p.providers_expected,
                p.completeness * 100.0
            ));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let filter = args.who.filter(Vec::new());
    let alerts = client.get_alerts(pb::GetAlertsRequest { filter: Some(filter) }).await.map_err(query_failed)?;
    let alerts = alerts.into_inner().alerts;
    println!("{} open alert(s)", alerts.len());
    for a in alerts {
        let since = a.raised_at.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let severity = match a.severity() {
            pb::alert::Severity::Critical => "CRITICAL",
            _ => "warning ",
        };
        println!("{severity} since {since}  {}", a.message);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn refusals(args: RefusalsArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let since = Some(sitrep_proto::convert::timestamp_to_wire(Timestamp::now().add_hours(-args.hours.max(1))));
    let answer =
        client.get_refusals(pb::GetRefusalsRequest { since, limit: args.limit }).await.map_err(query_failed)?;
    let answer = answer.into_inner();
    println!("{} refused attempt(s) shown; {} since the aggregator started", answer.refusals.len(), answer.counted);
    for r in answer.refusals {
        let at = r.at.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let credential = if r.credential.is_empty() { String::new() } else { format!(" ({})", r.credential) };
        println!("{at} {} {}{credential} from {} -> {}: {}", r.kind, r.principal, r.address, r.target, r.reason);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let to = time_arg("to", &args.to)?.unwrap_or_else(|| Timestamp::now().hour_start());
    let from = time_arg("from", &args.from)?.unwrap_or_else(|| to.add_hours(-(args.hours.max(1) - 1)));
    let wire = |t: Timestamp| Some(sitrep_proto::convert::timestamp_to_wire(t));
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let failed = query_failed;
    match args.provider {
        Some(provider) => {
            let request = pb::GetHistoryRequest { provider, from: wire(from), to: wire(to), metrics: args.metrics };
            let history = client.get_history(request).await.map_err(failed)?.into_inner();
            println!("{}: {} revision(s) from {from} to {to}", history.provider, history.entries.len());
            for e in history.entries {
                let period = e.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
                let mut values: Vec<_> = e.values.iter().collect();
                values.sort_by(|a, b| a.0.cmp(b.0));
                let values: Vec<String> = values.iter().map(|(k, v)| format!("{k}={}", value_text(Some(v)))).collect();
                // A site's report names its site: each site has its own revisions.
                let site = if e.site.is_empty() { String::new() } else { format!(" site {}", e.site) };
                println!("{period}{site} r{} {}", e.revision, values.join(" "));
                if let Some(s) = &e.sender {
                    println!("    sent by {} ({}) from {}", s.name, s.credential, s.address);
                }
                if !e.narrative.is_empty() {
                    println!("    “{}”", e.narrative);
                }
            }
        }
        None => {
            let [metric] = &args.metrics[..] else {
                bail!("give --provider, or exactly one --metric to see that metric across providers");
            };
            let filter = pb::Filter { systems: args.systems, regions: args.regions, ..Default::default() };
            let request = pb::GetMetricHistoryRequest {
                metric: metric.clone(),
                filter: Some(filter),
                from: wire(from),
                to: wire(to),
            };
            let history = client.get_metric_history(request).await.map_err(failed)?.into_inner();
            println!("{}: {} provider(s) from {from} to {to}", history.metric, history.series.len());
            for series in history.series {
                let points: Vec<String> = series
                    .points
                    .iter()
                    .map(|p| {
                        let period =
                            p.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
                        format!("{}={}", period.to_string().get(5..16).unwrap_or("?"), value_text(p.value.as_ref()))
                    })
                    .collect();
                println!("{:<6} {}", series.provider, points.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
