//! HTTP on the aggregator's port, beside gRPC: the wallboard page, a JSON API, Server-Sent Events, and health
//! endpoints for load balancers.
//!
//! # Layout
//! - [`router`]: every route. Handlers are thin: they resolve the same filters as gRPC (`Context::resolve`), call
//!   the same views ([`crate::views`]: hourly, previous hour) and read the same store; subscriptions run the same
//!   [`crate::session`] as gRPC `Subscribe`. Failures are [`crate::error::Error`]s, answered by [`Error::http`]
//!   (status code and `{error, violations}`); no handler makes a gRPC status (only [`router`]'s fallback tells a
//!   gRPC caller of an unknown method so, in `grpc-status`).
//! - [`json`]: the JSON forms of snapshots, events, the directory, the catalogue, history and mutual aid.
//! - [`aid`]: the mutual aid API (`/api/v1/aid/...`), over [`crate::aid`].
//! - The wallboard itself (`web/`: one HTML page, its script and style) is compiled into the binary.
//!
//! `/api/v1/events` is an SSE stream whose event ids are cursors: a browser that reconnects sends `Last-Event-ID`
//! (or `?last_event_id=`; the header wins) and resumes exactly where it left off, or gets a `reset` and a fresh
//! `snapshot` when its cursor cannot be served.

mod aid;
mod direct;
pub mod json;

pub use direct::serve as serve_direct;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::bytes::Bytes;
use serde_json::{Value as Json, json};
use sitrep_core::{ProviderLive, Timestamp};
use tokio_stream::StreamExt;

use crate::auth::{Action, Principal};
use crate::context::{Context, FilterSpec};
use crate::error::Error;
use crate::session::{self, Out, OutEvent};
use crate::views;

const PAGE: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/wallboard.js");
const STYLE: &str = include_str!("../../web/wallboard.css");

/// Where the page carries the deployment's wallboard settings, which the script reads before the address's.
const DEPLOYMENT: &str = r#"<script id="deployment" type="application/json">{}</script>"#;

/// The wallboard page with `settings` in it (as JSON in a script element; `<` escaped so no text in them can end
/// the element).
pub fn page(settings: &crate::config::WallboardConfig) -> String {
    let json = serde_json::to_string(settings).expect("settings serialise").replace('<', "\\u003c");
    assert!(PAGE.contains(DEPLOYMENT), "index.html has the deployment's settings element");
    PAGE.replace(DEPLOYMENT, &DEPLOYMENT.replace("{}", &json))
}

/// Every HTTP route, sharing the services' context.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/", get(|State(ctx): State<Arc<Context>>| async move { page_response(&ctx.page) }))
        .route("/wallboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/wallboard.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/healthz", get(|| async { (StatusCode::OK, axum::Json(json!({ "live": true }))) }))
        .route("/readyz", get(readyz))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/previous_hour", get(previous_hour))
        .route("/api/v1/hourly", get(hourly))
        .route(
            "/api/v1/directory",
            get(|State(ctx): State<Arc<Context>>, Extension(who): Extension<Principal>| async move {
                ok(json::directory(&ctx.rules, &who.grants.readable))
            }),
        )
        .route(
            "/api/v1/catalogue",
            get(|State(ctx): State<Arc<Context>>| async move { ok(json::catalogue(&ctx.rules)) }),
        )
        .route("/api/v1/history", get(history))
        .route("/api/v1/changes", get(changes))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/events", get(events))
        .route("/api/v1/refusals", get(refusals))
        .route("/metrics", get(metrics))
        .route("/api/v1/kiosk", axum::routing::post(kiosk_link))
        .route("/kiosk", get(kiosk_sign_in))
        .route(
            "/api/v1/whoami",
            get(|Extension(who): Extension<Principal>| async move {
                ok(json!({ "name": who.name, "credential": who.credential }))
            }),
        )
        .merge(aid::routes())
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
        .layer(axum::middleware::from_fn(one_request_per_connection))
        .with_state(ctx)
}

/// What a browser is told about every page and answer: no framing, no sniffing, scripts, styles and connections
/// only from this origin, no referrer. The page has no inline script or style (its settings are a JSON data block,
/// which is not run).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// Refuses a request whose Host this deployment does not answer to (a DNS rebinding page on a LAN would otherwise
/// read the picture through a browser), and adds the security headers to every answer.
async fn guard(
    State(ctx): State<Arc<Context>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or(request.uri().host());
    // Cross-origin reads only from the origins configured ([http] cors_origins); none by default.
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| ctx.cors_origins.iter().any(|c| c == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = request.method() == axum::http::Method::OPTIONS;
    let mut response = match ctx.hosts.allows(host) {
        true if preflight && origin.is_some() => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            r
        }
        true => next.run(request).await,
        false => {
            tracing::info!(host = ?host, path = request.uri().path(), "request refused: a Host this deployment does not answer to");
            let message = "this server does not answer to that Host name (see [http] allowed_hosts)";
            (StatusCode::MISDIRECTED_REQUEST, axum::Json(json!({ "error": message }))).into_response()
        }
    };
    for (name, value) in SECURITY_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    if let Some(origin) = origin {
        response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// HTTP/1.1 answers close their connection, so that a browser opens its event stream on a fresh connection, which
/// [`direct`] serves (an idle stream then costs a few KiB rather than hyper's buffers); a browser reusing a
/// kept-alive connection would put its stream through hyper. The wallboard makes a handful of requests when it
/// loads and one an hour after, so the extra connections cost nothing that matters. HTTP/2 is left alone.
async fn one_request_per_connection(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let mut response = next.run(request).await;
    if http1 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// What unknown paths get: gRPC's "unimplemented" for gRPC clients, a 404 for everyone else.
pub async fn fallback(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut().insert("grpc-status", HeaderValue::from(tonic::Code::Unimplemented as i32));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        return r;
    }
    let path = request.uri().path().to_owned();
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": format!("no such page or API: {path}") }))).into_response()
}

fn page_response(page: &str) -> Response {
    let mut r = page.to_owned().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page is small and changes with the binary: always revalidate.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn ok(body: Json) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A failure as HTTP: [`Error::http`]'s status code and JSON body, with the reason of a refusal for the audit.
pub(crate) struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, body) = self.0.http();
        let mut response = (code, axum::Json(body)).into_response();
        // The audit layer records a refusal with its reason (see `crate::auth::layer`).
        if let Some((_, reason)) = self.refusal() {
            response.extensions_mut().insert(crate::audit::Reason(reason));
        }
        response
    }
}

impl ApiError {
    /// The kind of refusal this is for the audit, and why, if it is one.
    pub(crate) fn refusal(&self) -> Option<(&'static str, String)> {
        self.0.refusal()
    }
}

/// Query parameters in order, percent-decoded (`+` is a space; a `%` not followed by two hex digits stays as it is;
/// bytes that are not UTF-8 become U+FFFD), as an HTML form encodes them.
fn params(query: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Every value of `key` (or its plural), each split at commas: `?system=QWE&system=QMJ` or `?systems=QWE,QMJ`.
fn list(params: &[(String, String)], key: &str) -> Vec<String> {
    let plural = format!("{key}s");
    params
        .iter()
        .filter(|(k, _)| k == key || *k == plural)
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn one<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn filter(params: &[(String, String)]) -> FilterSpec {
    FilterSpec {
        providers: list(params, "provider"),
        systems: list(params, "system"),
        regions: list(params, "region"),
        metrics: list(params, "metric"),
    }
}

fn time_param(params: &[(String, String)], key: &str) -> Result<Option<Timestamp>, Error> {
    match one(params, key) {
        None => Ok(None),
        Some(text) => match text.parse::<i64>() {
            Ok(ms) => Ok(Some(Timestamp::from_millis(ms))),
            Err(_) => Timestamp::parse_rfc3339(text).map(Some).ok_or_else(|| {
                Error::invalid_field(
                    key,
                    "time",
                    format!("{key} = {text:?} is neither RFC 3339 (2026-11-27T14:00:00Z) nor milliseconds since 1970"),
                )
            }),
        },
    }
}

/// Ready only when the store answers and the Hub is following the log: what a load balancer should route on.
async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    let state = ctx.health.status().borrow().clone();
    let positioned = ctx.hub.ready(Duration::ZERO).await;
    let head = tokio::time::timeout(Duration::from_secs(1), ctx.store.head()).await;
    let reason = match (&head, positioned, state.degraded) {
        (Err(_), _, _) => Some("the store did not answer within 1 s".to_owned()),
        (Ok(Err(e)), _, _) => Some(format!("the store is unreachable: {e}")),
        (_, _, true) => Some(state.message.clone()),
        (_, false, _) => {
            Some("the aggregator has not caught up with its event log (and made its snapshots ready) yet".to_owned())
        }
        _ => None,
    };
    match reason {
        None => ok(json!({ "ready": true })),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "ready": false, "reason": reason }))).into_response()
        }
    }
}

/// Keeps only `metrics` (when given) in a JSON snapshot's readings, figures and rollups.
fn retain_metrics(v: &mut Json, metrics: Option<&BTreeSet<String>>) {
    if let Some(providers) = v["providers"].as_array_mut() {
        for p in providers {
            retain_provider_metrics(p, metrics);
        }
    }
    if let Some(rollups) = v["rollups"].as_array_mut() {
        for r in rollups {
            retain_rollup_metrics(r, metrics);
        }
    }
}

fn keeps(metrics: &BTreeSet<String>) -> impl Fn(&Json) -> bool + '_ {
    |f: &Json| f["metric"].as_str().is_some_and(|c| metrics.contains(c))
}

/// Keeps only `metrics` (when given) in a provider's JSON readings and figures.
fn retain_provider_metrics(p: &mut Json, metrics: Option<&BTreeSet<String>>) {
    let Some(m) = metrics else { return };
    if let Some(r) = p["readings"].as_object_mut() {
        r.retain(|k, _| m.contains(k));
    }
    if let Some(f) = p["figures"].as_array_mut() {
        f.retain(keeps(m));
    }
}

/// Keeps only `metrics` (when given) in a rollup's JSON figures.
fn retain_rollup_metrics(r: &mut Json, metrics: Option<&BTreeSet<String>>) {
    let Some(m) = metrics else { return };
    if let Some(list) = r["metrics"].as_array_mut() {
        list.retain(keeps(m));
    }
}

/// Providers per piece of a streamed JSON snapshot.
const JSON_PART: usize = 100;

/// The picture as JSON, streamed: the cursor and the rollups first, then the providers a hundred at a time, each
/// piece made only when the connection is ready for it. Ten thousand providers are tens of megabytes of JSON;
/// built whole, the first byte waited for the last and the aggregator held it all.
async fn snapshot(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let f = ctx.resolve(Some(&filter(&params)), &who)?;
    let mut snap = ctx.snapshot(&f.providers).await?;
    f.retain_readable(&mut snap.rollups);
    let metrics = f.metrics;
    let rollups: Vec<Json> = snap
        .rollups
        .iter()
        .map(|r| {
            let mut r = json::rollup(&ctx.rules, r);
            retain_rollup_metrics(&mut r, metrics.as_ref());
            r
        })
        .collect();
    let head = format!(
        "{{\"cursor\":{},\"more\":false,\"server_time\":{},\"rollups\":{},\"providers\":[",
        json!(snap.cursor.to_string()),
        json!(Timestamp::now()),
        Json::Array(rollups)
    );
    let body = streamed(head, snap.providers, JSON_PART, move |p| {
        let mut p = json::provider(&ctx.rules, p);
        retain_provider_metrics(&mut p, metrics.as_ref());
        p
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `head`, then `providers` rendered `part` at a time as the elements of a JSON array, then the array's and the
/// object's ends: each piece made when the body is polled for it.
fn streamed(
    head: String,
    providers: Vec<Arc<ProviderLive>>,
    part: usize,
    render: impl Fn(&ProviderLive) -> Json + Send + 'static,
) -> impl tokio_stream::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let parts = providers.len().div_ceil(part);
    let pieces = futures_util::stream::iter(0..parts).map(move |n| {
        let mut out = Vec::with_capacity(part * 2048);
        for (i, p) in providers.iter().enumerate().skip(n * part).take(part) {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &render(p)).expect("JSON to memory");
        }
        Ok(Bytes::from(out))
    });
    tokio_stream::once(Ok(Bytes::from(head))).chain(pieces).chain(tokio_stream::once(Ok(Bytes::from_static(b"]}"))))
}

/// Each selected provider's figures, and each of their scopes' rollup figures, for the hour before the current
/// one ([`crate::views::previous_hour`]): what the wallboard shows changes against.
async fn previous_hour(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let now = time_param(&params, "hour")?;
    let view = views::previous_hour(&ctx, &who, &filter(&params), now).await?;
    Ok(ok(json!({ "hour": view.hour, "providers": view.providers, "rollups": view.rollups })))
}

/// One metric of a provider or a scope, hour by hour ([`crate::views::hourly`]), as `QueryService.GetHourly`
/// gives it: `?metric=..&provider=..` or `&scope=system:QWE`, `hours=` (default 72) and `to=` (default now).
async fn hourly(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let hours = match one(&params, "hours") {
        None => 0,
        Some(text) => text.parse::<u32>().map_err(|_| {
            Error::invalid_field("hours", "whole_number", format!("hours = {text:?} is not a whole number of hours"))
        })?,
    };
    let query = views::HourlyQuery {
        metric: one(&params, "metric").unwrap_or_default().to_owned(),
        provider: one(&params, "provider").map(str::to_owned),
        scope: one(&params, "scope").map(str::to_owned),
        hours,
        to: time_param(&params, "to")?,
    };
    let view = views::hourly(&ctx, &who, &query).await?;
    Ok(ok(json::hourly(&query.metric, &view)))
}

async fn history(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let provider = one(&params, "provider").ok_or_else(|| {
        Error::invalid_field("provider", "required", "provider is required, e.g. ?provider=RJ7".into())
    })?;
    ctx.known_provider(provider)?;
    who.may(Action::ReadProvider(provider))?;
    let (from, to) = ctx.history_range(time_param(&params, "from")?, time_param(&params, "to")?)?;
    let mut records = ctx.store.history(provider, from, to).await.map_err(Error::store)?;
    let metrics = list(&params, "metric");
    if !metrics.is_empty() {
        for r in &mut records {
            r.values.retain(|k, _| metrics.iter().any(|m| m == k.as_str()));
        }
    }
    Ok(ok(json::history(provider, &records)))
}

/// What the selected providers' reports changed since a time (default: the last hour), newest first: for the
/// wallboard's "last hour" panel when it loads (after that, the event stream keeps it current). Read from the
/// history, the hour before `since` included so that the first report in the window has something to differ from.
async fn changes(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let f = ctx.resolve(Some(&filter(&params)), &who)?;
    let now = Timestamp::now();
    let since = time_param(&params, "since")?.unwrap_or(Timestamp::from_millis(now.millis() - Timestamp::HOUR_MS));
    let limit = match one(&params, "limit") {
        None => CHANGES_LIMIT,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=CHANGES_MAX).contains(n)).ok_or_else(|| {
            Error::invalid_field("limit", "range", format!("limit = {text:?} is not a number from 1 to {CHANGES_MAX}"))
        })?,
    };
    let (from, to) = ctx.history_range(Some(since.hour_start().add_hours(-1)), Some(now.hour_start()))?;
    let metrics = list(&params, "metric");
    let selected: Vec<String> =
        ctx.rules.directory.providers().filter(|p| f.providers.contains(&p.code)).map(|p| p.code.clone()).collect();
    // One batch read for every selected provider, not a round trip each.
    let mut stored = ctx.store.histories(&selected, from, to).await.map_err(Error::store)?;
    let mut histories = Vec::with_capacity(selected.len());
    for p in &selected {
        let mut records = stored.remove(p).unwrap_or_default();
        if !metrics.is_empty() {
            for r in &mut records {
                r.values.retain(|k, _| metrics.iter().any(|m| m == k.as_str()));
            }
        }
        histories.push((p, records));
    }
    let mut found: Vec<json::Change<'_>> =
        histories.iter().flat_map(|(p, records)| json::changes_since(p, records, since)).collect();
    found.sort_by(|a, b| b.received_at().cmp(&a.received_at()).then_with(|| a.provider.cmp(b.provider)));
    let more = found.len() > limit;
    found.truncate(limit);
    Ok(ok(json!({
        "since": since,
        "more": more,
        "changes": found.iter().map(json::change).collect::<Vec<_>>(),
    })))
}

/// How many changes `/api/v1/changes` lists unless asked (`limit`), and at most.
const CHANGES_LIMIT: usize = 200;
const CHANGES_MAX: usize = 2000;

async fn alerts(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = ctx.resolve(Some(&filter(&params(q))), &who)?;
    let alerts = ctx.alerts(&f.providers).await?;
    Ok(ok(json!({ "alerts": alerts })))
}

/// The Server-Sent Events stream of the picture: `snapshot`, `event`, `heartbeat`, `reset`, `status` and, last,
/// `error`. Ids are cursors. (A connection whose first request is this one is served by [`direct`] instead, with
/// the same [`open_events`].)
/// Refused attempts, newest first (see [`crate::audit`]): `?since=` (RFC 3339 or milliseconds) and `?limit=`
/// (default 200). Needs the admin grant.
async fn refusals(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    who.may(Action::Admin)?;
    let params = params(q);
    let since = time_param(&params, "since")?.unwrap_or(Timestamp(0));
    let limit = one(&params, "limit").and_then(|l| l.parse().ok()).unwrap_or(200usize);
    let list = ctx.auth.refusals().since(since, limit);
    Ok(ok(json!({ "counted": ctx.auth.refusals().counted(), "refusals": list })))
}

/// The Prometheus metrics (see [`crate::metrics`]): OpenMetrics text for a scraper that asks for it (Prometheus
/// does), the Prometheus text format 0.0.4 otherwise. Needs the admin grant.
async fn metrics(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    who.may(Action::Admin)?;
    let scraped = ctx.scrape().await;
    let text = ctx.metrics.encode(&scraped);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (body, content_type) = match crate::metrics::wants_openmetrics(accept) {
        true => (text, crate::metrics::OPENMETRICS),
        false => (crate::metrics::to_prometheus_text(&text), crate::metrics::PROMETHEUS_TEXT),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// Makes a kiosk link for a wallboard (see [`crate::auth::kiosk`]): `{"name": "London wall", "read":
/// ["region:Y56"], "days": 30}` gives `{"link": "/kiosk?code=...", "expires_in_seconds": 900}`. Needs the admin
/// grant; the read grant is checked against the directory.
async fn kiosk_link(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    who.may(Action::Admin)?;
    #[derive(serde::Deserialize)]
    struct Ask {
        name: String,
        read: Vec<String>,
        #[serde(default = "thirty")]
        days: u32,
    }
    fn thirty() -> u32 {
        30
    }
    let ask: Ask = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid_field("body", "json", format!("the body is not {{\"name\", \"read\": [...], \"days\"}}: {e}"))
    })?;
    ctx.auth.screen_grants(&ask.read).map_err(|e| Error::invalid_field("read", "known_scope", e))?;
    let now = crate::auth::unix_now();
    let code = ctx.auth.sessions().link(&ask.name, &ask.read, ask.days.clamp(1, 366), now);
    tracing::info!(principal = %who.name, screen = %ask.name, read = ?ask.read, days = ask.days, "kiosk link made");
    Ok(ok(json!({ "link": format!("/kiosk?code={code}"), "expires_in_seconds": crate::auth::kiosk::LINK_SECONDS })))
}

/// Opens a kiosk link on a screen: takes its one-time code for a session cookie, then shows the wallboard. The
/// code leaves the address at once (the answer redirects to the page), and the cookie is HttpOnly.
async fn kiosk_sign_in(
    State(ctx): State<Arc<Context>>,
    peer: Option<Extension<crate::transport::Peer>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let params = params(q);
    let now = crate::auth::unix_now();
    let taken = one(&params, "code").ok_or("the link has no code").and_then(|c| ctx.auth.sessions().take(c, now));
    match taken {
        Ok((cookie, session)) => {
            tracing::info!(screen = %session.name, "kiosk signed in");
            // Secure over TLS (here, or at a proxy in front that says so).
            let tls = peer.is_some_and(|p| p.tls) || headers.get("x-forwarded-proto").is_some_and(|v| v == "https");
            let secure = if tls { "; Secure" } else { "" };
            let max_age = session.exp - now;
            let set = format!(
                "{}={cookie}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
                crate::auth::kiosk::COOKIE
            );
            let mut r = (StatusCode::SEE_OTHER, "").into_response();
            r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&set) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(why) => {
            let page = format!(
                "<!doctype html><title>sitrep</title><h1>This sign-in link cannot be used</h1><p>It is {why}.</p>\
                 <p>Ask your sitrep administrator for a new one.</p>"
            );
            let mut r = (StatusCode::UNAUTHORIZED, page).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
    }
}

async fn events(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let events = open_events(&ctx, &who, q, last_event_id, "by hyper")?;
    let retry = tokio_stream::once(Ok::<_, Infallible>(Bytes::from_static(RETRY)));
    let messages = futures_util::stream::unfold(events, |mut events| async move {
        events.next().await.map(|message| (Ok::<_, Infallible>(message), events))
    });
    let mut response = axum::body::Body::from_stream(retry.chain(messages)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The first message of every stream: asks browsers to wait a moment before reconnecting by themselves (the
/// wallboard backs off further). The session sends a heartbeat whenever the stream is otherwise quiet, so no
/// keep-alive comments are needed.
const RETRY: &[u8] = b"retry: 1000\n\n";

/// An open event stream: the session's items, made into messages.
pub struct EventStream {
    rx: tokio::sync::mpsc::Receiver<Result<Out, Error>>,
    ctx: Arc<Context>,
    metrics: Option<BTreeSet<String>>,
    /// Counted as an open subscription while the stream is held.
    _open: crate::metrics::Subscribed,
}

impl EventStream {
    /// The next message, or `None` once the session has ended (its last message may be an `error`). Cancel-safe.
    pub async fn next(&mut self) -> Option<Bytes> {
        Some(match self.rx.recv().await? {
            Ok(out) => sse_message(&self.ctx, self.metrics.as_ref(), out),
            Err(e) => message("error", None, &json!({ "message": e.message }).to_string()),
        })
    }
}

/// Opens the event stream a request asks for: its filters and `heartbeat` from the query, and where to resume
/// from the `Last-Event-ID` header (which a reconnecting browser sends; it wins over `?last_event_id=`, which a
/// page sets on its first connect).
fn open_events(
    ctx: &Arc<Context>,
    who: &Principal,
    query: Option<String>,
    last_event_id: Option<&str>,
    served: &'static str,
) -> Result<EventStream, ApiError> {
    let params = params(query);
    let f = ctx.resolve(Some(&filter(&params)), who)?;
    let heartbeat = match one(&params, "heartbeat").map(str::parse::<u64>) {
        None => u64::from(ctx.subscribers.default_heartbeat_seconds),
        Some(Ok(s @ 1..=300)) => s,
        Some(_) => {
            return Err(Error::invalid_field(
                "heartbeat",
                "range",
                "heartbeat must be whole seconds in 1..=300".into(),
            )
            .into());
        }
    };
    let resume = last_event_id
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| one(&params, "last_event_id").map(str::to_owned));
    let ticket = ctx.subscriptions.open(&who.name)?;
    // Who subscribed to what, and from where it replays: the audit of reads.
    tracing::info!(principal = %who.name, credential = %who.credential, query = ?params, resume = resume.as_deref(), served, "browser subscriber connected");
    let metrics = f.metrics.clone();
    let rx = session::start(
        ctx.clone(),
        f,
        Duration::from_secs(heartbeat),
        resume,
        format!("sse {}", who.name),
        crate::metrics::Transport::Sse,
        ticket,
    );
    let open = ctx.metrics.subscribed(crate::metrics::Transport::Sse);
    Ok(EventStream { rx, ctx: ctx.clone(), metrics, _open: open })
}

/// One Server-Sent Events message: its name, its id if it has one, and its data on one line (compact JSON has no
/// line breaks). Written by hand rather than through axum's `Sse` so that an event's message is made once and
/// shared by every subscriber, not copied for each.
fn message(event: &str, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + id.map_or(0, str::len) + 24);
    out.push_str("event: ");
    out.push_str(event);
    if let Some(id) = id {
        out.push_str("\nid: ");
        out.push_str(id);
    }
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

fn sse_message(ctx: &Context, metrics: Option<&BTreeSet<String>>, out: Out) -> Bytes {
    let rules = &ctx.rules;
    if let Out::Event(e) = &out {
        ctx.metrics.delivered(crate::metrics::Transport::Sse, e.event());
    }
    match out {
        Out::Snapshot(snap) => {
            let mut body = json::snapshot(rules, &snap.cursor, &snap.providers, &snap.rollups, snap.more);
            retain_metrics(&mut body, metrics);
            // Only the last part carries the cursor as its id: a browser that reconnects half-way through a
            // snapshot must not resume as if it had all of it.
            let cursor = snap.cursor.to_string();
            message("snapshot", (!snap.more).then_some(cursor.as_str()), &body.to_string())
        }
        Out::Event(OutEvent::Shared(shared)) => {
            shared.sse(|e| message("event", Some(&e.cursor.to_string()), &json::event(e).to_string()))
        }
        Out::Event(OutEvent::Own(e)) => message("event", Some(&e.cursor.to_string()), &json::event(&e).to_string()),
        Out::Heartbeat(cursor) => {
            let data = json!({ "cursor": cursor.to_string(), "server_time": Timestamp::now() }).to_string();
            message("heartbeat", Some(&cursor.to_string()), &data)
        }
        Out::Reset(reason, text) => {
            message("reset", None, &json!({ "reason": reason.as_str(), "message": text }).to_string())
        }
        Out::Rollups(cursor, rollups) => {
            let rollups: Vec<Json> = rollups.iter().map(|r| json::rollup(rules, r)).collect();
            let cursor = cursor.to_string();
            let data = json!({ "cursor": cursor, "rollups": rollups }).to_string();
            message("rollups", Some(&cursor), &data)
        }
        Out::Status(state) => message("status", None, &json::status(&state).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_streamed_snapshot_is_one_json_document_whatever_its_pieces() {
        for n in [0, 1, 99, 100, 101, 250] {
            let providers: Vec<Arc<ProviderLive>> =
                (0..n).map(|i| Arc::new(ProviderLive::new(&format!("P{i:03}")))).collect();
            let pieces: Vec<Bytes> = streamed("{\"providers\":[".into(), providers, 100, |p| json!(p.provider))
                .map(|b| b.unwrap())
                .collect()
                .await;
            let whole: Vec<u8> = pieces.iter().flat_map(|b| b.to_vec()).collect();
            let v: Json = serde_json::from_slice(&whole).unwrap();
            let codes: Vec<&str> = v["providers"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            assert_eq!(codes.len(), n);
            assert_eq!(codes.last().copied(), (n > 0).then(|| format!("P{:03}", n - 1)).as_deref());
            assert_eq!(pieces.len(), 2 + n.div_ceil(100), "{n} providers");
        }
    }

    #[test]
    fn query_parameters_decode_and_split() {
        let p = params(Some("system=QWE,QMJ&systems=QUE&last_event_id=m1%3A42-0&metric=a+b&x".into()));
        assert_eq!(list(&p, "system"), ["QWE", "QMJ", "QUE"]);
        assert_eq!(one(&p, "last_event_id"), Some("m1:42-0"));
        assert_eq!(one(&p, "metric"), Some("a b"));
        assert_eq!(one(&p, "x"), None);
        assert_eq!(params(Some("a=%zz&b=%4".into())), [("a".into(), "%zz".into()), ("b".into(), "%4".into())]);
        assert_eq!(one(&params(Some("a=%+1".into())), "a"), Some("% 1"), "not hex: no byte 0x01");
    }
}
