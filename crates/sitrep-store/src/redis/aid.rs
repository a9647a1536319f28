//! Mutual aid in Redis: [`Store::act`](crate::Store::act)'s atomic step, and the book
//! [`Store::load`](crate::Store::load) returns.
//!
//! The book's records live in one hash, `{prefix}:aid` (`R<n>` / `O<n>` -> the record as JSON, `version` -> the
//! book's version, and the index of open references below); holds live in the holding providers' states, where a report can end them in its own step. An
//! action reads the book and the states of the providers it needs ([`AidBook::needs`]), is planned by the core
//! ([`sitrep_core::plan::aid::plan`]: every rule is there), and the plan is persisted by `act.lua`, which writes only if the book and
//! each of those providers are still at the versions the plan was made from. Otherwise it writes nothing and the
//! action is read and planned again: another replica acted, or a holder reported, meanwhile. That is what makes
//! two replicas racing on one request take exactly one of two accepts.
//!
//! Unlike reports, actions are not group-committed: they are rare (people deciding, the clock's timers), so each
//! is one script call of its own, on the committer's connection with the same `WAIT` for `store.ack_replicas`
//! (`Ack`) and the same following of the master as a report's. Within a replica an action takes the locks of the
//! providers it needs (in name order), so it never races this replica's own reports of them.
//!
//! **An action reads only its part of the book** (`aid_excerpt.lua`, one atomic call): the version, the last
//! request and offer ids given (kept beside the records, so new records get the ids the whole book would), the
//! action's request and that request's offers. Every action concerns one request ([`AidBook::excerpt`]), so its
//! cost does not grow with the book. A create's request is the provider's open request with the same reference, if
//! any (a retried create is answered with it, [`AidBook::open_with_reference`]): an index in the same hash,
//! `ref:<provider>|<reference>` -> `R<n>`, names it. Which entries a plan sets and removes is decided here, from
//! the records it writes ([`codec::aid_ref_changes`]: set while a request is open, removed when it ends);
//! `act.lua` writes them with the records, so the index never disagrees with them.
//!
//! **Loading the whole book** takes `HSCAN` in bounded pieces, like the states, between two reads of its version:
//! every write of the book advances the version in the same script, so an unchanged version proves the pieces are
//! of one book.

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::FromRedisValue;
use sitrep_core::aid::{Action, Actor, AidBook, Subject};
use sitrep_core::plan::aid::{AidOutcome, AidPlan};
use sitrep_core::state::Planned;
use sitrep_core::{Cursor, Event, ProviderLive, Timestamp};

use super::{MAX_CONFLICTS, Outcome, RedisStore, args, bad, codec, reply};
use crate::{Acted, StoreError};

/// What `act.lua` did with a plan.
enum Stored {
    /// Persisted: the events, with their cursors, in log order.
    Done(Vec<Event>),
    /// The book or a holding provider moved since the plan was made; nothing was written.
    Moved,
}

/// One event of a plan on its way to the script: what it says, its writer's token, and the state its plan leaves.
struct Outgoing {
    event: Event,
    token: u64,
    state: Option<Arc<ProviderLive>>,
}

impl RedisStore {
    /// Takes `action` (see the module's header): read, plan, persist under the versions' check, again if they moved.
    pub(super) async fn act_in_one_step(
        &self,
        action: &Action,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Acted, StoreError> {
        for _ in 0..MAX_CONFLICTS {
            let book = self.read_excerpt(action).await?;
            // In name order (`needs` sorts), as every taker of more than one lock takes them, so none waits in a cycle.
            let needs = book.needs(action);
            let mut held = Vec::with_capacity(needs.len());
            for p in &needs {
                held.push(self.provider_lock(p).lock_owned().await);
            }
            let states = self.read_states(&needs).await?;
            let plan =
                match sitrep_core::plan::aid::plan(&self.options.rules, book, &states, action.clone(), actor, now) {
                    Ok(AidOutcome::Plan(plan)) => plan,
                    Ok(AidOutcome::Unchanged { request, offers }) => return Ok(Acted::Unchanged { request, offers }),
                    Err(refusal) => return Ok(Acted::Refused(refusal)),
                };
            if let Stored::Done(events) = self.persist_aid(plan).await? {
                return Ok(Acted::Done(events));
            }
        }
        Err(StoreError::Contention(format!(
            "{} or a holding provider kept changing while an action ({}) was being stored",
            self.keys.aid,
            action.name()
        )))
    }

    /// The part of the book `action` touches (its request and that request's offers, the version and last ids),
    /// read in one step by `aid_excerpt.lua`: an action costs the same however many records the book has.
    pub(super) async fn read_excerpt(&self, action: &Action) -> Result<AidBook, StoreError> {
        let (request, offer, reference) = match (action.subject(), action) {
            // A create's part is the provider's open request with the same reference, if any (a retry is answered
            // with it), which the index of open references names.
            (Subject::New, Action::Create(ask)) => {
                (String::new(), String::new(), codec::aid_ref_field(&ask.provider, &ask.reference))
            }
            (Subject::New, _) => (String::new(), String::new(), String::new()),
            (Subject::Request(r), _) => (r.to_string(), String::new(), String::new()),
            (Subject::Offer(o), _) => (String::new(), o.to_string(), String::new()),
        };
        let mut conn = self.conn().await?;
        let reply: Vec<Option<Vec<u8>>> = self
            .scripts
            .aid_excerpt
            .key(&self.keys.aid)
            .arg(request)
            .arg(offer)
            .arg(reference)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        let [version, last_request, last_offer, request, offers @ ..] = reply.as_slice() else {
            return Err(bad("aid excerpt"));
        };
        if version.is_some() && last_request.is_none() {
            // A book written before the last ids were kept: the whole of it says what they are.
            return Ok(self.read_book().await?.excerpt(action));
        }
        let offers: Vec<&[u8]> = offers.iter().flatten().map(Vec::as_slice).collect();
        codec::decode_aid_excerpt(
            &self.keys.aid,
            version.as_deref(),
            [last_request.as_deref(), last_offer.as_deref()],
            request.as_deref(),
            &offers,
        )
    }

    /// The book as stored: its records and version, read in bounded pieces (see the module's header).
    pub(super) async fn read_book(&self) -> Result<AidBook, StoreError> {
        let key = &self.keys.aid;
        let mut conn = self.conn().await?;
        for _ in 0..MAX_CONFLICTS {
            let before: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg(codec::AID_VERSION)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.masters.failed(e))?;
            let mut fields = Vec::new();
            self.scan_hash(&mut conn, key, |pairs| {
                fields.extend(pairs);
                Ok(())
            })
            .await?;
            let after: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg(codec::AID_VERSION)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.masters.failed(e))?;
            if before == after {
                return codec::decode_aid_book(key, fields);
            }
        }
        Err(StoreError::Contention(format!("{key} kept changing while it was being read")))
    }

    /// The stored states of `providers` (those with none are left out).
    async fn read_states(&self, providers: &[String]) -> Result<BTreeMap<String, ProviderLive>, StoreError> {
        let mut out = BTreeMap::new();
        if providers.is_empty() {
            return Ok(out);
        }
        let mut conn = self.conn().await?;
        let stored: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&self.keys.states)
            .arg(providers)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        for (provider, stored) in providers.iter().zip(stored) {
            if let Some(s) = stored {
                let state =
                    self.decoding(|codes| codec::decode_state(codes, &self.options.rules, provider, &s)).await?;
                out.insert(provider.clone(), state);
            }
        }
        Ok(out)
    }

    /// Persists `plan` with `act.lua` (see its header for the arguments).
    async fn persist_aid(&self, plan: AidPlan) -> Result<Stored, StoreError> {
        let codes = self.codes().await?;
        let AidPlan { expected_version, version, last_ids, requests, offers, event, providers } = plan;
        let mut records = codec::encode_aid_records(&requests, &offers)?;
        records.push((codec::AID_LAST_REQUEST.to_owned(), last_ids.0.to_string().into_bytes()));
        records.push((codec::AID_LAST_OFFER.to_owned(), last_ids.1.to_string().into_bytes()));
        let codec::RefChanges { open: open_refs, ended: ended_refs } = codec::aid_ref_changes(&requests);
        records.extend(open_refs.into_iter().map(|(field, id)| (field, id.into_bytes())));
        let keys = &self.keys;
        let [max_len, max_age_ms] = self.log_limits();
        let mut invocation = self.scripts.act.prepare_invoke();
        invocation.key(&keys.log).key(&keys.events).key(&keys.states).key(&keys.aid);
        let epoch_candidate = crate::new_epoch('r');
        let header = args::ActHeader {
            epoch_candidate: &epoch_candidate,
            max_len: &max_len,
            max_age_ms: &max_age_ms,
            expected_version: expected_version.to_string(),
            version: version.to_string(),
            records: records.len().to_string(),
            ended_refs: ended_refs.len().to_string(),
        };
        args::push(&mut invocation, &header.named());
        for (field, record) in &records {
            invocation.arg(field).arg(record.as_slice());
        }
        for (field, id) in &ended_refs {
            invocation.arg(field).arg(id);
        }
        let (token, written) = self.token();
        let book = args::EventArgs { event: codec::encode_event(&codes, &event)?, token: written };
        args::push(&mut invocation, &book.named());
        let mut outgoing = vec![Outgoing { event, token, state: None }];
        for p in providers {
            let state = p.state.map(Arc::new);
            let encoded = state.as_deref().map(|s| codec::encode_state(&codes, s)).transpose()?.unwrap_or_default();
            let (token, written) = self.token();
            let holder = args::HolderArgs {
                provider: p.provider,
                expected_version: p.expected_version.to_string(),
                state: encoded,
                event: codec::encode_event(&codes, &p.event)?,
                token: written,
            };
            args::push(&mut invocation, &holder.named());
            outgoing.push(Outgoing { event: p.event, token, state });
        }
        // Put aside before the call, as a report's event is: this store's tail may read them back before the answer.
        for o in &outgoing {
            self.remember(o.token, &o.event, o.state.as_ref());
        }
        let master = self.master().await?;
        let mut conn = master.commit.clone();
        let reply = self.ack().persist(&invocation, &mut conn, &self.masters).await;
        let forget = |outgoing: &[Outgoing]| {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for o in outgoing {
                recent.remove(&o.token);
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                // The writes may or may not have happened: plan the holders' next reports from what is stored.
                forget(&outgoing);
                for o in &outgoing[1..] {
                    self.set_known(&o.event.provider, None);
                }
                return Err(e);
            }
        };
        let answer = reply::ActAnswer::from_redis_value(reply).map_err(|e| bad(&format!("act reply: {e}")))?;
        let reply::ActAnswer::Done(reply::Committed { epoch, outcomes }) = answer else {
            forget(&outgoing);
            return Ok(Stored::Moved);
        };
        if outcomes.len() != outgoing.len() {
            return Err(bad(&format!("act reply: {} outcomes for {} events", outcomes.len(), outgoing.len())));
        }
        let mut events = Vec::with_capacity(outgoing.len());
        for (o, outcome) in outgoing.into_iter().zip(outcomes) {
            let Outcome::Accepted { pos, .. } = outcome else { return Err(bad("act outcome")) };
            let mut event = o.event;
            event.cursor = Cursor::new(epoch.clone(), pos);
            if o.state.is_some() {
                self.set_known(&event.provider, o.state.clone());
            }
            event.planned = Planned(o.state);
            events.push(event);
        }
        Ok(Stored::Done(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::conformance::{self, aid_offer, aid_request};
    use crate::redis::{RedisOptions, RedisProcess};
    use sitrep_core::aid::{OfferId, RequestId};
    use sitrep_core::{ValidReport, Value};

    fn cc(provider: &str, revision: u32, occupied: f64) -> ValidReport {
        let values = [("beds.cc_adult.open", Value::Number(10.0)), ("beds.cc_adult.occupied", Value::Number(occupied))];
        conformance::report(provider, 0, revision, &values)
    }

    /// `action` planned on `store` as `act` plans it, but not persisted.
    async fn plan(store: &RedisStore, action: Action) -> AidPlan {
        let book = store.read_book().await.expect("book");
        let states = store.read_states(&book.needs(&action)).await.expect("states");
        let actor = Actor { principal: "test".into(), cursor: store.head().await.expect("head") };
        match sitrep_core::plan::aid::plan(&store.options.rules, book, &states, action, &actor, Timestamp::now()) {
            Ok(AidOutcome::Plan(plan)) => plan,
            other => panic!("not planned: {other:?}"),
        }
    }

    /// `act.lua` writes nothing for a plan made from a book, or a holder's state, that has moved since (another
    /// replica acted, the holder reported); `act` then reads and plans again, and is done.
    #[tokio::test]
    async fn the_act_script_refuses_a_plan_whose_book_or_holder_moved() {
        let redis = RedisProcess::start().expect("redis-server");
        let options = RedisOptions { url: redis.url(), ..Default::default() };
        let a = RedisStore::connect(options.clone()).await.expect("connect");
        let b = RedisStore::connect(options).await.expect("connect");
        a.apply(&cc("RVR", 1, 7.0), Timestamp::now()).await.expect("apply");
        conformance::act(&a, aid_request("RJ7", 1)).await;
        let r = RequestId(1);

        // b plans an offer on the book at version 1; a acts first.
        let stale = plan(&b, aid_offer(r, "RVR", 1)).await;
        conformance::act(&a, aid_offer(r, "RAX", 1)).await;
        let head = a.head().await.expect("head");
        assert!(matches!(b.persist_aid(stale).await.expect("persist"), Stored::Moved), "a moved book");
        assert_eq!(a.head().await.expect("head"), head, "nothing appended");
        let book = a.read_book().await.expect("book");
        assert_eq!((book.version(), book.offers_of(r).count()), (2, 1), "nothing written");
        // Through `act`, b plans again from the book as it is: its offer is the second.
        conformance::act(&b, aid_offer(r, "RVR", 1)).await;
        assert_eq!(b.read_book().await.expect("book").offer(OfferId(2)).map(|o| o.provider.as_str()), Some("RVR"));

        // b plans to accept RVR's offer (a hold on RVR's state at version 1); RVR reports first.
        let accept = Action::Accept { offer: OfferId(2), baseline_occupied: 0 };
        let stale = plan(&b, accept.clone()).await;
        assert_eq!(stale.providers[0].expected_version, 1);
        a.apply(&cc("RVR", 2, 7.0), Timestamp::now()).await.expect("apply");
        assert!(matches!(b.persist_aid(stale).await.expect("persist"), Stored::Moved), "a moved holder");
        assert_eq!(a.read_book().await.expect("book").version(), 3, "nothing written");
        let events = conformance::act(&b, accept).await;
        let versions: Vec<(&str, u64)> = events.iter().map(|e| (e.provider.as_str(), e.version)).collect();
        assert_eq!(versions, [("RJ7", 0), ("RVR", 3)], "planned again from RVR's report");
        assert!(events[0].cursor.pos < events[1].cursor.pos);
        assert!(events[1].planned.0.as_ref().is_some_and(|s| s.holds.len() == 1), "the holder's planned state");
    }

    /// An action reads only its own records, yet gives new records the ids the whole book would: from the last ids
    /// kept beside the records, or, in a book written before they were kept, from the whole book.
    #[tokio::test]
    async fn an_excerpt_gives_the_ids_the_whole_book_would() {
        let redis = RedisProcess::start().expect("redis-server");
        let store =
            RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.expect("connect");
        for _ in 0..3 {
            conformance::act(&store, aid_request("RJ7", 1)).await;
        }
        conformance::act(&store, aid_offer(RequestId(1), "RVR", 1)).await;
        let excerpt = store.read_excerpt(&aid_offer(RequestId(2), "RAX", 1)).await.expect("excerpt");
        assert_eq!((excerpt.requests().count(), excerpt.last_ids(), excerpt.version()), (1, (3, 1), 4));
        let whole = store.read_book().await.expect("book");
        let offer = aid_offer(RequestId(1), "RAX", 1);
        assert_eq!(store.read_excerpt(&offer).await.expect("excerpt"), whole.excerpt(&offer));
        // The last ids gone (a book from before they were kept): the whole book is read for them.
        let mut conn = store.conn().await.expect("conn");
        let _: () = redis::cmd("HDEL")
            .arg(&store.keys.aid)
            .arg(codec::AID_LAST_REQUEST)
            .arg(codec::AID_LAST_OFFER)
            .query_async(&mut conn)
            .await
            .expect("hdel");
        let events = conformance::act(&store, aid_request("RJ7", 1)).await;
        let made = &events[0].aid.as_ref().expect("aid change").requests[0];
        assert_eq!(made.id, RequestId(4), "not R1 again");
        let events = conformance::act(&store, aid_offer(RequestId(3), "RAX", 1)).await;
        assert_eq!(events[0].aid.as_ref().expect("aid change").offers[0].id, OfferId(2));
    }

    /// The index of open references: set when a request is created, removed when it ends (a later request with the
    /// same reference then takes it), and built from a version 2 book by the 2 -> 3 migration, after which a
    /// retried create finds its open request from the index alone.
    #[tokio::test]
    async fn a_create_finds_its_open_request_through_the_index_also_after_migrating_version_2() {
        let redis = RedisProcess::start().expect("redis-server");
        let options = RedisOptions { url: redis.url(), ..Default::default() };
        let store = RedisStore::connect(options.clone()).await.expect("connect");
        let key = store.keys.aid.clone();
        let mut conn = store.conn().await.expect("conn");
        let reference = |a: &Action| match a {
            Action::Create(ask) => codec::aid_ref_field(&ask.provider, &ask.reference),
            _ => unreachable!(),
        };
        let first = aid_request("RJ7", 1);
        conformance::act(&store, first.clone()).await;
        let ended = aid_request("RJ7", 2);
        conformance::act(&store, ended.clone()).await;
        let cancel = Action::Cancel { request: RequestId(2), reason: "test".into() };
        conformance::act(&store, cancel).await;
        let mut index = async |field: &str| -> Option<String> {
            redis::cmd("HGET").arg(&key).arg(field).query_async(&mut conn).await.expect("hget")
        };
        assert_eq!(index(&reference(&first)).await.as_deref(), Some("R1"));
        assert_eq!(index(&reference(&ended)).await, None, "removed when R2 ended");
        // The ended request's reference is free: a new request with it takes the entry.
        let Action::Create(mut again) = ended.clone() else { unreachable!() };
        again.quantity = 3;
        let again = Action::Create(again);
        conformance::act(&store, again.clone()).await;
        assert_eq!(index(&reference(&again)).await.as_deref(), Some("R3"));

        // Version 2 data: the same book without the index.
        let mut conn = store.conn().await.expect("conn");
        let fields: Vec<String> = redis::cmd("HKEYS").arg(&key).query_async(&mut conn).await.expect("hkeys");
        let refs: Vec<&String> = fields.iter().filter(|f| f.starts_with(codec::AID_REF_PREFIX)).collect();
        assert_eq!(refs.len(), 2);
        for _ in 0..2 {
            // Twice: a migration run again (after an interruption) gives the same index.
            let _: () = redis::cmd("HDEL").arg(&key).arg(&refs).query_async(&mut conn).await.expect("hdel");
            let _: () = redis::cmd("SET").arg(&store.keys.schema).arg(2).query_async(&mut conn).await.expect("set");
            let migrated = RedisStore::connect(options.clone()).await.expect("connect");
            migrated.head().await.expect("head");
            let version: u32 = redis::cmd("GET").arg(&store.keys.schema).query_async(&mut conn).await.expect("get");
            assert_eq!(version, super::super::SCHEMA_VERSION);
            let mut found = Vec::new();
            for a in [&first, &again] {
                let id: Option<String> =
                    redis::cmd("HGET").arg(&key).arg(reference(a)).query_async(&mut conn).await.expect("hget");
                found.push(id);
            }
            assert_eq!(found, [Some("R1".to_owned()), Some("R3".to_owned())]);
            // A retried create reads only its open request, and is answered with it.
            let excerpt = migrated.read_excerpt(&first).await.expect("excerpt");
            assert_eq!(excerpt.requests().map(|r| r.id).collect::<Vec<_>>(), [RequestId(1)]);
            let actor = Actor { principal: "test".into(), cursor: migrated.head().await.expect("head") };
            match migrated.act(&first, &actor, Timestamp::now()).await.expect("act") {
                Acted::Unchanged { request, .. } => assert_eq!(request.id, RequestId(1)),
                other => panic!("not answered with R1: {other:?}"),
            }
        }
    }
}
