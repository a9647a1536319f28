//! Mutual aid over the JSON API (`/api/v1/aid/...`): the requests a caller may see, candidates, measures, and
//! every action a caller may take. Each handler reads its input, then calls [`crate::aid`], which decides who may
//! act and maps refusals; nothing about authorisation is decided here.
//!
//! Bodies are JSON objects read field by field ([`Body`]), so that bad input is answered, like a refused action, with
//! the field, the rule and the value (`quantity: must be a whole number from 1, not -2`), and an unknown field is
//! refused rather than ignored. Times are RFC 3339 (`needed_by`, `hold_until`) or minutes from now (`minutes`,
//! `hold_minutes`).
//!
//! An action is answered once this replica's picture shows it ([`crate::aid::act`] waits), so that the caller's next
//! request here (an offer on the request it just made, a snapshot) sees what it did.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prost::bytes::Bytes;
use serde_json::{Map, Value as Json, json};
use sitrep_core::Level;
use sitrep_core::Timestamp;
use sitrep_core::aid::{Action, Constraints, Kind, NewRequest, OfferId, RequestId, Stage, Urgency};

use super::json as form;
use super::{ApiError, ok, one, params};
use crate::auth::Principal;
use crate::context::Context;
use crate::error::Error;

/// The mutual aid routes, behind the same layers as the rest of the API.
pub(super) fn routes() -> Router<Arc<Context>> {
    Router::new()
        .route("/api/v1/aid/requests", get(list).post(create))
        .route("/api/v1/aid/requests/{id}", get(one_case))
        .route("/api/v1/aid/requests/{id}/candidates", get(candidates))
        .route("/api/v1/aid/requests/{id}/offers", post(offer))
        .route("/api/v1/aid/requests/{id}/{step}", post(progress))
        .route("/api/v1/aid/offers/{id}/{decision}", post(decide))
        .route("/api/v1/aid/measures", get(measures))
}

/// `?open=true&scope=system:QWE`: the cases the caller may see, newest first, with the escalation timers (which
/// the wallboard counts down).
async fn list(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let open = match one(&params, "open") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(
                Error::invalid_field("open", "boolean", format!("open = {other:?} must be true or false")).into()
            );
        }
    };
    let cases = crate::aid::cases(&ctx, &who, open, one(&params, "scope")).await?;
    Ok(ok(json!({
        "requests": cases.iter().map(form::aid_case).collect::<Vec<_>>(),
        "timers": form::aid_timers(&ctx.aid_timers),
        "server_time": Timestamp::now(),
    })))
}

async fn one_case(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let case = crate::aid::case(&ctx, &who, request_id(&id)?).await?;
    Ok(ok(form::aid_case(&case)))
}

async fn candidates(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, ranking) = crate::aid::candidates(&ctx, &who, request_id(&id)?).await?;
    let mut body = form::aid_ranking(&ranking);
    body["request"] = form::aid_request(&case.request);
    Ok(ok(body))
}

/// `?scope=system:QWE` (or `region:Y56`, `nation`), and `&days=7` for the measures of each day's requests.
async fn measures(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(q);
    let scope = one(&params, "scope")
        .ok_or_else(|| Error::invalid_field("scope", "required", "scope is required, e.g. ?scope=system:QWE".into()))?;
    let days = match one(&params, "days") {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            Error::invalid_field("days", "number", format!("days = {text:?} is not a whole number of days"))
        })?,
    };
    let (live, by_day) = crate::aid::measures(&ctx, &who, scope, days).await?;
    let mut body = form::aid_measures(scope, &live);
    if days > 0 {
        let days: Vec<Json> = by_day
            .iter()
            .map(|(day, m)| {
                let mut d = form::aid_measures(scope, m);
                d["day"] = json!(day);
                d
            })
            .collect();
        body["by_day"] = Json::Array(days);
    }
    Ok(ok(body))
}

async fn create(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = [
        "provider",
        "site",
        "kind",
        "pair",
        "quantity",
        "urgency",
        "needed_by",
        "minutes",
        "constraints",
        "reference",
        "summary",
        "cursor",
    ];
    let b = Body::parse("create", &body, &fields)?;
    let constraints = match b.1.get("constraints") {
        None | Some(Json::Null) => Constraints::default(),
        Some(Json::Object(c)) => {
            let c = Body("create", c.clone());
            c.known(&["within", "isolation"], "constraints.")?;
            let within = match c.text("within")? {
                None => Constraints::default().within,
                Some(text) => Level::parse(&text).ok_or_else(|| {
                    b.bad("constraints.within", "level", &json!(text), "must be system, region or nation")
                })?,
            };
            Constraints { within, isolation: c.flag("isolation")?.unwrap_or(false) }
        }
        Some(other) => {
            return Err(b.bad("constraints", "object", other, "must be an object {within, isolation}").into());
        }
    };
    let ask = NewRequest {
        provider: b.required("provider")?,
        site: b.text("site")?,
        kind: b.choice::<Kind>("kind", "patient_transfer, cohort, staff or equipment")?,
        pair: b.required("pair")?,
        quantity: b.count("quantity")?,
        urgency: b.choice::<Urgency>("urgency", "routine, urgent or immediate")?,
        needed_by: b.time("needed_by", "minutes")?,
        constraints,
        reference: b.required("reference")?,
        summary: b.text("summary")?.unwrap_or_default(),
    };
    let done = act(&ctx, &who, Action::Create(ask), &b).await?;
    Ok((StatusCode::CREATED, done).into_response())
}

async fn offer(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = request_id(&id)?;
    let b = Body::parse("offer", &body, &["provider", "site", "quantity", "hold_until", "hold_minutes", "cursor"])?;
    let action = Action::Offer {
        request,
        provider: b.required("provider")?,
        site: b.text("site")?,
        quantity: b.count("quantity")?,
        hold_until: b.time("hold_until", "hold_minutes")?,
    };
    Ok(act(&ctx, &who, action, &b).await?.into_response())
}

/// `in_transit`, `complete`, `cancel` or `unfulfilled` (the last two with a `reason`).
async fn progress(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    Path((id, step)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = request_id(&id)?;
    let (name, fields): (&'static str, &[&str]) = match step.as_str() {
        "in_transit" => ("in_transit", &["cursor"]),
        "complete" => ("complete", &["cursor"]),
        "cancel" => ("cancel", &["reason", "cursor"]),
        "unfulfilled" => ("unfulfilled", &["reason", "cursor"]),
        _ => return Err(unknown_step(&step, "in_transit, complete, cancel or unfulfilled")),
    };
    let b = Body::parse(name, &body, fields)?;
    // A missing reason is refused by the core's own rule (`reason_required`), as an empty one is.
    let reason = || b.text("reason").map(Option::unwrap_or_default);
    let action = match name {
        "in_transit" => Action::Progress { request, stage: Stage::InTransit },
        "complete" => Action::Progress { request, stage: Stage::Completed },
        "cancel" => Action::Cancel { request, reason: reason()? },
        _ => Action::Unfulfilled { request, reason: reason()? },
    };
    Ok(act(&ctx, &who, action, &b).await?.into_response())
}

/// `accept`, `decline` or `withdraw` an offer.
async fn decide(
    State(ctx): State<Arc<Context>>,
    Extension(who): Extension<Principal>,
    Path((id, decision)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let offer = offer_id(&id)?;
    let action = match decision.as_str() {
        // The hold's baseline is read from the offering provider's stored state when the store plans the action.
        "accept" => Action::Accept { offer, baseline_occupied: 0 },
        "decline" => Action::Decline(offer),
        "withdraw" => Action::Withdraw(offer),
        _ => return Err(unknown_step(&decision, "accept, decline or withdraw")),
    };
    let b = Body::parse(action.name(), &body, &["cursor"])?;
    Ok(act(&ctx, &who, action, &b).await?.into_response())
}

fn unknown_step(step: &str, known: &str) -> ApiError {
    ApiError::from(Error::not_found(format!("no mutual aid action {step:?}: the actions here are {known}")))
}

/// What an action answers: its request and offers as they are after it, and the cursor of a picture that shows it
/// (its last event's; for a retried create, which appended none, the picture's that shows the request).
struct Acted(crate::aid::Done);

impl IntoResponse for Acted {
    fn into_response(self) -> Response {
        let mut body = form::aid_case(&self.0.case);
        body["cursor"] = json!(self.0.cursor.as_ref().map(|c| c.to_string()));
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

async fn act(ctx: &Context, who: &Principal, action: Action, b: &Body) -> Result<Acted, Error> {
    let cursor = b.text("cursor")?;
    Ok(Acted(crate::aid::act(ctx, who, action, cursor.as_deref()).await?))
}

fn request_id(text: &str) -> Result<RequestId, Error> {
    numbered(text, 'R').map(RequestId).ok_or_else(|| {
        Error::invalid_field("request", "request_id", format!("request = {text:?} is not a request id such as R1"))
    })
}

fn offer_id(text: &str) -> Result<OfferId, Error> {
    numbered(text, 'O').map(OfferId).ok_or_else(|| {
        Error::invalid_field("offer", "offer_id", format!("offer = {text:?} is not an offer id such as O1"))
    })
}

/// `R12` (or `12`) with prefix `R` -> 12.
fn numbered(text: &str, prefix: char) -> Option<u64> {
    let digits = text.strip_prefix(prefix).unwrap_or(text);
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok()).flatten()
}

/// A JSON object body, for the action named, read field by field.
struct Body(&'static str, Map<String, Json>);

impl Body {
    /// Parses `bytes` (empty: no fields) as an object with only the `known` fields.
    fn parse(action: &'static str, bytes: &[u8], known: &[&str]) -> Result<Self, Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(action, Map::new()));
        }
        let map = match serde_json::from_slice::<Json>(bytes) {
            Ok(Json::Object(map)) => map,
            Ok(_) => {
                return Err(Error::invalid_field(
                    "body",
                    "json_object",
                    format!("{action}: the body must be a JSON object"),
                ));
            }
            Err(e) => return Err(Error::invalid_field("body", "json", format!("{action}: the body is not JSON: {e}"))),
        };
        let body = Body(action, map);
        body.known(known, "")?;
        Ok(body)
    }

    /// Refuses a field not in `known` (a misspelt field would otherwise be silently ignored).
    fn known(&self, known: &[&str], prefix: &str) -> Result<(), Error> {
        match self.1.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some((k, v)) => Err(self.bad(
                &format!("{prefix}{k}"),
                "known_field",
                v,
                &format!("is not a field of {} (its fields: {})", self.0, known.join(", ")),
            )),
        }
    }

    /// INVALID_ARGUMENT naming the field, the rule and the value: `create: quantity = -2 must be ...`.
    fn bad(&self, field: &str, rule: &'static str, value: &Json, words: &str) -> Error {
        Error::invalid_field(field, rule, format!("{} refused: {field} = {value} {words}", self.0))
    }

    fn get(&self, field: &str) -> Option<&Json> {
        self.1.get(field).filter(|v| !v.is_null())
    }

    fn text(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.bad(field, "text", v, "must be text")),
        }
    }

    fn required(&self, field: &str) -> Result<String, Error> {
        self.text(field)?.ok_or_else(|| self.bad(field, "required", &Json::Null, "is required"))
    }

    fn flag(&self, field: &str) -> Result<Option<bool>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Json::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(field, "boolean", v, "must be true or false")),
        }
    }

    /// A whole number of beds or people; zero is left for the core to refuse by its own rule.
    fn count(&self, field: &str) -> Result<u32, Error> {
        let v = self.get(field).ok_or_else(|| self.bad(field, "required", &Json::Null, "is required"))?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| self.bad(field, "whole_number", v, "must be a whole number from 1"))
    }

    /// One of an enum's snake_case names.
    fn choice<T: serde::de::DeserializeOwned>(&self, field: &str, names: &str) -> Result<T, Error> {
        let v = self
            .get(field)
            .ok_or_else(|| self.bad(field, "required", &Json::Null, &format!("is required: {names}")))?;
        serde_json::from_value(v.clone()).map_err(|_| self.bad(field, "one_of", v, &format!("must be one of {names}")))
    }

    /// A time: `at` in RFC 3339, or `minutes` from now; exactly one of them.
    fn time(&self, at: &str, minutes: &str) -> Result<Timestamp, Error> {
        match (self.get(at), self.get(minutes)) {
            (Some(_), Some(v)) => Err(self.bad(minutes, "one_of", v, &format!("cannot be given with {at}"))),
            (None, None) => {
                Err(self.bad(at, "required", &Json::Null, &format!("is required (or {minutes}, from now)")))
            }
            (Some(v), None) => v
                .as_str()
                .and_then(Timestamp::parse_rfc3339)
                .ok_or_else(|| self.bad(at, "time", v, "must be RFC 3339, e.g. 2026-11-27T14:00:00Z")),
            (None, Some(v)) => v
                .as_i64()
                .filter(|m| (1..=366 * 24 * 60).contains(m))
                .map(|m| Timestamp::from_millis(Timestamp::now().millis() + m * 60_000))
                .ok_or_else(|| self.bad(minutes, "minutes", v, "must be a whole number of minutes from 1 to a year")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_written_or_bare() {
        assert_eq!(numbered("R12", 'R'), Some(12));
        assert_eq!(numbered("12", 'R'), Some(12));
        for bad in ["O12", "R", "", "R1x", "R-1", "R+1"] {
            assert_eq!(numbered(bad, 'R'), None, "{bad}");
        }
    }

    /// Bad input names its field, its rule and its value.
    #[test]
    fn bad_fields_are_named_with_rule_and_value() {
        let violation = |e: Error| {
            let v = e.violations()[0].clone();
            (v.field, v.rule.to_owned(), v.description)
        };
        let body = |text: &str| Body::parse("create", text.as_bytes(), &["quantity", "kind", "needed_by", "minutes"]);
        let (field, rule, words) = violation(body(r#"{"quantity": -2}"#).unwrap().count("quantity").unwrap_err());
        assert_eq!((field.as_str(), rule.as_str()), ("quantity", "whole_number"));
        assert_eq!(words, "create refused: quantity = -2 must be a whole number from 1");
        let (field, rule, _) = violation(body(r#"{"kind": "taxi"}"#).unwrap().choice::<Kind>("kind", "k").unwrap_err());
        assert_eq!((field.as_str(), rule.as_str()), ("kind", "one_of"));
        let (field, rule, words) = violation(body(r#"{"quantity": 1, "colour": "red"}"#).err().unwrap());
        assert_eq!((field.as_str(), rule.as_str()), ("colour", "known_field"));
        assert!(words.contains("colour = \"red\""), "{words}");
        let both = body(r#"{"needed_by": "2026-11-27T14:00:00Z", "minutes": 5}"#).unwrap();
        assert_eq!(violation(both.time("needed_by", "minutes").unwrap_err()).0, "minutes");
        let bad_time = body(r#"{"needed_by": "tomorrow"}"#).unwrap();
        assert_eq!(violation(bad_time.time("needed_by", "minutes").unwrap_err()).1, "time");
        let later = body(r#"{"minutes": 90}"#).unwrap().time("needed_by", "minutes").unwrap();
        assert!((later.millis() - Timestamp::now().millis() - 90 * 60_000).abs() < 5_000);
        assert!(body("").unwrap().1.is_empty(), "an empty body has no fields");
        assert_eq!(violation(body("[1]").err().unwrap()).1, "json_object");
    }
}
