//! The picture: the live state of every provider, each scope's exact running totals, open alerts and staleness, as
//! a deterministic fold over the ordered event log.
//!
//! The log is the truth. A [`Picture`] starts from the providers' stored states as of some cursor (or from
//! nothing) and folds every later event into itself in log order with [`Picture::apply`]: the provider's readings,
//! facts, figures, OPEL levels, alerts and staleness change exactly as the event says (the same functions the plan
//! used, so the folded state equals the planned one), and the totals of its system, region and nation move by the
//! difference (see [`crate::rollup`]). Every replica folds the same log, so every replica holds the same picture and
//! computes the same rollups, and the rollups an event changed travel with it to subscribers. Snapshots are taken
//! from the picture ([`Picture::snapshot`]): providers are kept behind `Arc`s, so a snapshot of ten thousand of
//! them is ten thousand reference counts, taken in a moment, and streamed out afterwards.
//!
//! Each event carries the provider's version after it ([`crate::ProviderLive::version`]). A picture started from
//! stored states read while the log was moving may meet events those states already reflect: their version is not
//! above the provider's, and they are passed over. A version further ahead than the next one means an event is
//! missing, which the log's links make impossible short of damage; [`Picture::apply`] says so rather than guess.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::aid::AidBook;
use crate::derive;
use crate::rollup::{ScopeRollup, Totals, fixed, rollup, rollup_at};
use crate::rules::Position;
use crate::{Alert, Cursor, Event, EventKind, ProviderLive, Rules, Scope, Selection, Timestamp};

/// The whole (or a filtered part of the) picture as of one cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct PictureSnapshot {
    /// Every event up to and including this cursor is reflected; no later one is.
    pub cursor: Cursor,
    /// Providers that have reported, in code order.
    pub providers: Vec<Arc<ProviderLive>>,
    /// The figures of every scope a selected provider rolls up into (every scope for a full snapshot), in scope
    /// order: systems, regions, the nation.
    pub rollups: Vec<ScopeRollup>,
}

/// An event the picture cannot fold: the provider's version jumps past the next one, so an event is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event at {cursor} brings {provider} to version {got}, but the picture has it at version {have}")]
pub struct Gap {
    pub cursor: Cursor,
    pub provider: String,
    pub have: u64,
    pub got: u64,
}

/// Live state, totals per scope, open alerts and staleness, folded from the event log. Cheap to snapshot.
#[derive(Clone, Debug)]
pub struct Picture {
    rules: Rules,
    cursor: Cursor,
    providers: BTreeMap<String, Arc<ProviderLive>>,
    /// Per scope, by its position in the rules' index.
    totals: Vec<Totals>,
    /// Mutual aid: every request and offer, and every provider's holds.
    aid: AidBook,
}

impl PartialEq for Picture {
    fn eq(&self, other: &Self) -> bool {
        self.cursor == other.cursor
            && self.providers == other.providers
            && self.totals == other.totals
            && self.aid == other.aid
    }
}

impl Picture {
    /// An empty picture as of `cursor` (the start of a log with no events).
    pub fn new(rules: Rules, cursor: Cursor) -> Self {
        let totals = vec![Totals::new(&rules); rules.index().scopes.len()];
        Picture { rules, cursor, providers: BTreeMap::new(), totals, aid: AidBook::new() }
    }

    /// The picture of `states` as of `cursor`, with every total counted afresh. Also the reference a folded
    /// picture must always equal.
    pub fn from_states(rules: Rules, cursor: Cursor, states: impl IntoIterator<Item = ProviderLive>) -> Self {
        let mut picture = Picture::new(rules, cursor);
        for state in states {
            let values = counted_values(&picture.rules, &state);
            let held = crate::aid::hold::held_by_metric(&picture.rules, &state.holds);
            for s in picture.rules.index().scopes_of(&state.provider) {
                picture.totals[*s].add_held(&picture.rules, &values, &held, state.stale);
            }
            picture.aid.set_holds(&state.provider, &state.holds);
            picture.providers.insert(state.provider.clone(), Arc::new(state));
        }
        picture
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The cursor of the last event folded in (or the one the picture started from).
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    pub fn provider(&self, code: &str) -> Option<&Arc<ProviderLive>> {
        self.providers.get(code)
    }

    /// Every provider that has reported, in code order.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<ProviderLive>> {
        self.providers.values()
    }

    /// The picture of `states` and the mutual aid `book` (its records; holds come from the states) as of `cursor`.
    pub fn with_aid(
        rules: Rules,
        cursor: Cursor,
        states: impl IntoIterator<Item = ProviderLive>,
        book: AidBook,
    ) -> Self {
        let mut picture = Picture::from_states(rules, cursor, states);
        let holds = std::mem::replace(&mut picture.aid, book);
        picture.aid.take_holds(holds);
        picture
    }

    /// Mutual aid as of the picture's cursor: every request and offer, and every provider's holds.
    pub fn aid(&self) -> &AidBook {
        &self.aid
    }

    /// Each scope's running totals, in the rules' scope order.
    pub fn totals(&self) -> &[Totals] {
        &self.totals
    }

    /// Folds `event` in (it must come next in the log) and returns the rollups it changed: the provider's system,
    /// region and nation with the figures of the metrics it changed (and their provider counts). Events the
    /// picture already reflects change nothing and return no rollups.
    pub fn apply(&mut self, event: &Event) -> Result<Vec<ScopeRollup>, Gap> {
        self.fold_event(event, true)
    }

    /// Folds `event` in without making the rollups it changed (the totals move all the same): for a replica with
    /// nobody to send them to.
    pub fn apply_quietly(&mut self, event: &Event) -> Result<(), Gap> {
        self.fold_event(event, false).map(drop)
    }

    fn fold_event(&mut self, event: &Event, rollups: bool) -> Result<Vec<ScopeRollup>, Gap> {
        self.cursor = event.cursor.clone();
        if let Some(change) = &event.aid {
            self.aid.fold(&event.provider, change, false);
        }
        if !moves_totals(event) {
            return Ok(Vec::new());
        }
        let rules = &self.rules;
        let Some(entry) = next_in_line(&mut self.providers, event)? else {
            return Ok(Vec::new());
        };
        let (first, was_stale) = (entry.version == 0, entry.stale);
        let held_before = held_counted(rules, entry);
        // What the provider counts for in its scopes' totals before and after the event: its numbers by metric
        // position, none while it is stale, and none for readings too old to count (see `counted`).
        let before = counted(rules, entry);
        // The writer's own events come with the state their plan left: the same state folding gives (the property
        // tests check it), without making it again.
        match event.planned.0.as_ref().filter(|p| p.version == event.version && p.provider == event.provider) {
            Some(planned) => *entry = planned.clone(),
            None => fold(rules, Arc::make_mut(entry), event),
        }
        let state: &ProviderLive = entry;
        let after = counted(rules, state);
        let held_after = held_counted(rules, state);
        let moved = Moved {
            first,
            was_stale,
            stale: state.stale,
            metrics: changed_metrics(&before, &after),
            derived: changed_pairs(rules, (&before, &held_before), (&after, &held_after)),
        };
        if let Some(holds) = event.aid.as_ref().and_then(|a| a.holds.as_ref()) {
            self.aid.set_holds(&event.provider, holds);
        }
        let scopes = rules.index().scopes_of(&event.provider);
        for s in scopes {
            moved.count_in(rules, &mut self.totals[*s]);
        }
        if !rollups {
            return Ok(Vec::new());
        }
        Ok(self.rollups_moved(event, scopes, &moved))
    }

    /// The rollups of `scopes` (the event's provider's) after the event that `moved` describes: of the metrics it
    /// changed, of the derived metrics they feed (a provider's open beds with no occupied figure move no free-beds
    /// total, but how partial it is: its coverage against open beds), of every metric the event changed, and of
    /// every figure whose rating changed (its scope's rating may have moved with it), so an event's rollups cover
    /// every metric the event mentions.
    fn rollups_moved(&self, event: &Event, scopes: &[usize], moved: &Moved) -> Vec<ScopeRollup> {
        let rules = &self.rules;
        let index = rules.index();
        let mut positions: Vec<Position> = moved
            .metrics
            .iter()
            .map(|(m, ..)| Position::Metric(*m))
            .chain(moved.metrics.iter().flat_map(|(m, ..)| index.feeds[*m].iter().map(|d| Position::Derived(*d))))
            .chain(moved.derived.iter().map(|(d, ..)| Position::Derived(*d)))
            .chain(event.changes.iter().filter_map(|c| index.position_of(c.metric)))
            .chain(event.derived.figures.iter().filter_map(|f| index.position_of(f.metric)))
            .collect();
        positions.sort_by_key(|p| index.ordinal_of(*p));
        positions.dedup();
        // CRITCON moves with a unit's declared level, and with its staleness or first report (a stale unit counts at
        // its last level and is named as such).
        let critcon = rules.critcon.is_some()
            && (moved.first
                || moved.was_stale != moved.stale
                || event.changes.iter().any(|c| c.metric.as_str() == crate::catalogue::CRITCON_METRIC));
        let mut out: Vec<ScopeRollup> =
            scopes.iter().map(|s| rollup_at(rules, &index.scopes[*s], &self.totals[*s], &positions, false)).collect();
        if critcon {
            for r in &mut out {
                r.critcon = self.critcon(&r.scope);
            }
        }
        out
    }

    /// Every scope's mutual aid strain signals (see [`crate::rollup::Strain`]), by the scope's position in the
    /// rules' index, from the book as of the picture's cursor: one pass over the requests, each counted in its
    /// requesting provider's scopes, as [`crate::aid::measures`] counts them.
    fn strains(&self) -> Vec<Option<crate::rollup::Strain>> {
        let index = self.rules.index();
        // Per scope: requests open, unmet (unfulfilled or expired), closed other than cancelled.
        let mut counts = vec![(0u32, 0u32, 0u32); index.scopes.len()];
        for r in self.aid.requests() {
            let (open, unmet, closed) = match r.state {
                crate::aid::RequestState::Completed => (0, 0, 1),
                crate::aid::RequestState::Unfulfilled | crate::aid::RequestState::Expired => (0, 1, 1),
                crate::aid::RequestState::Cancelled => continue,
                _ => (1, 0, 0),
            };
            for s in index.scopes_of(&r.ask.provider) {
                let c = &mut counts[*s];
                (c.0, c.1, c.2) = (c.0 + open, c.1 + unmet, c.2 + closed);
            }
        }
        counts.into_iter().map(|(open, unmet, closed)| crate::rollup::Strain::of_counts(open, unmet, closed)).collect()
    }

    /// The derived CRITCON level of `scope`, explained (see [`crate::critcon::of_scope`]); `None` without a CRITCON
    /// rule, or when no member has a level.
    pub fn critcon(&self, scope: &Scope) -> Option<crate::critcon::Derived> {
        let table = self.rules.critcon.as_ref()?;
        let state_of = |code: &str| self.providers.get(code).map(|p| declared(p));
        crate::critcon::of_scope(table, &self.rules.directory, scope, &state_of)
    }

    /// The figures of `scopes`: of `metrics`, or of every metric that has a value when `None`.
    pub fn rollups(&self, scopes: &[Scope], metrics: Option<&BTreeSet<String>>) -> Vec<ScopeRollup> {
        let index = self.rules.index();
        let strains = self.strains();
        scopes
            .iter()
            .filter_map(|scope| {
                let at = index.scope(scope)?;
                let mut r = rollup(&self.rules, scope, &self.totals[at], metrics);
                r.critcon = self.critcon(scope);
                r.strain = strains[at];
                Some(r)
            })
            .collect()
    }

    /// The selected providers and their scopes' figures, as of the picture's cursor.
    pub fn snapshot(&self, selection: &Selection) -> PictureSnapshot {
        let providers = match selection {
            Selection::All => self.providers.values().cloned().collect(),
            Selection::Only(set) => set.iter().filter_map(|p| self.providers.get(p).cloned()).collect(),
        };
        PictureSnapshot {
            cursor: self.cursor.clone(),
            providers,
            rollups: self.rollups(&self.rules.scopes_for(selection), None),
        }
    }

    /// The open alerts of the selected providers, by provider then key.
    pub fn alerts(&self, selection: &Selection) -> Vec<Alert> {
        self.providers.values().filter(|p| selection.contains(&p.provider)).flat_map(|p| p.alerts.clone()).collect()
    }

    /// Providers that have gone quiet at `now` and are not yet marked stale, in code order.
    pub fn due_stale(&self, now: Timestamp) -> Vec<String> {
        self.providers
            .values()
            .filter(|p| p.version > 0 && !p.stale && derive::is_stale(&self.rules, &p.provider, p.period, now))
            .map(|p| p.provider.clone())
            .collect()
    }
}

/// A provider's two inputs of a derived metric, in millionths, when it has both.
type InputPair = Option<(i128, i128)>;

/// Whether `event` can move the totals: a report only when it is live (a late one is history), an aid change
/// only when it changes the provider's holds.
fn moves_totals(event: &Event) -> bool {
    match event.kind {
        EventKind::Report => event.live,
        EventKind::Aid => event.aid.as_ref().is_some_and(|a| a.holds.is_some()),
        EventKind::Stale => true,
    }
}

/// The provider's state that `event` comes next for (made on its first event), or `None` when the picture already
/// reflects it; a [`Gap`] when events between are missing.
fn next_in_line<'a>(
    providers: &'a mut BTreeMap<String, Arc<ProviderLive>>,
    event: &Event,
) -> Result<Option<&'a mut Arc<ProviderLive>>, Gap> {
    if !providers.contains_key(&event.provider) {
        providers.insert(event.provider.clone(), Arc::new(ProviderLive::new(&event.provider)));
    }
    let entry = providers.get_mut(&event.provider).expect("inserted above");
    if event.version <= entry.version {
        return Ok(None);
    }
    if event.version != entry.version + 1 {
        return Err(Gap {
            cursor: event.cursor.clone(),
            provider: event.provider.clone(),
            have: entry.version,
            got: event.version,
        });
    }
    Ok(Some(entry))
}

/// What one event moved in its provider's part of the totals.
struct Moved {
    /// The provider's first event: it starts counting as reporting.
    first: bool,
    was_stale: bool,
    stale: bool,
    /// Metric positions whose counted number changed, with the number before and after.
    metrics: Vec<(usize, Option<i128>, Option<i128>)>,
    /// Derived positions whose input pair changed, with the pair before and after.
    derived: Vec<(usize, InputPair, InputPair)>,
}

impl Moved {
    /// Moves one of the provider's scopes' totals by what the event moved.
    fn count_in(&self, rules: &Rules, totals: &mut Totals) {
        totals.reporting += u32::from(self.first);
        match (self.was_stale, self.stale) {
            (false, true) => totals.stale += 1,
            (true, false) => totals.stale -= 1,
            _ => {}
        }
        for (m, before, after) in &self.metrics {
            totals.change_metric(rules, *m, *before, *after);
        }
        for (d, before, after) in &self.derived {
            totals.change_pair(*d, *before, *after);
        }
    }
}

/// The metric positions whose counted number differs between `before` and `after`.
fn changed_metrics(before: &[Option<i128>], after: &[Option<i128>]) -> Vec<(usize, Option<i128>, Option<i128>)> {
    (0..before.len()).filter(|m| before[*m] != after[*m]).map(|m| (m, before[m], after[m])).collect()
}

/// The derived positions whose input pair (each input with the provider's held capacity added) differs between
/// `before` and `after`, each given as counted numbers and held quantities.
fn changed_pairs(
    rules: &Rules,
    before: (&[Option<i128>], &[(usize, i128)]),
    after: (&[Option<i128>], &[(usize, i128)]),
) -> Vec<(usize, InputPair, InputPair)> {
    let index = rules.index();
    let pair = |(numbers, held): (&[Option<i128>], &[(usize, i128)]), d: usize| {
        let input =
            |m: usize| numbers[m].map(|n| n + held.iter().filter(|(h, _)| *h == m).map(|(_, q)| q).sum::<i128>());
        input(index.inputs[d][0]).zip(input(index.inputs[d][1]))
    };
    (0..index.derived.len()).map(|d| (d, pair(before, d), pair(after, d))).filter(|(_, b, a)| b != a).collect()
}

/// What a provider counts for in its scopes' totals, by metric position: nothing while it is stale or before it
/// has reported, and of its readings only those recent enough ([`derive::oldest_counted`]). A scope's totals are
/// always the sum of this over its providers (the property tests check it).
fn counted(rules: &Rules, state: &ProviderLive) -> Vec<Option<i128>> {
    let index = rules.index();
    let mut numbers = vec![None; index.metrics.len()];
    if state.version == 0 || state.stale {
        return numbers;
    }
    for (code, r) in derive::counted_readings(rules, state) {
        if let Some(Position::Metric(m)) = index.position_of(*code) {
            numbers[m] = r.value.number().map(fixed);
        }
    }
    numbers
}

/// The beds a provider holds for mutual aid, as it counts them in its scopes' totals of derived metrics: by
/// reported metric position, in millionths; none while it is stale or before it has reported (as [`counted`]).
fn held_counted(rules: &Rules, state: &ProviderLive) -> Vec<(usize, i128)> {
    if state.version == 0 || state.stale || state.holds.is_empty() {
        return Vec::new();
    }
    crate::aid::hold::held_by_metric(rules, &state.holds).into_iter().map(|(m, q)| (m, fixed(q))).collect()
}

/// A provider's values that count (see [`counted`]; a stale provider's are left out by [`Totals::add`]).
pub fn counted_values(rules: &Rules, state: &ProviderLive) -> BTreeMap<crate::Code, crate::Value> {
    derive::counted_readings(rules, state).map(|(c, r)| (*c, r.value)).collect()
}

/// Brings `state` up to date with `event` (a live report or the clock), exactly as the plan that made the event
/// changed the stored state: the report's values (its changes, and the values it repeated, which its site's
/// readings already hold) go through the same [`ProviderLive::take`] the plan used.
fn fold(rules: &Rules, state: &mut ProviderLive, event: &Event) {
    match event.kind {
        EventKind::Report => {
            let source = match (&event.site, state.sites.is_empty()) {
                (None, true) => Some(&state.readings),
                (site, _) => state.sites.get(site.as_deref().unwrap_or(crate::state::WHOLE)).map(|s| &s.readings),
            };
            // The report's values in code order: its changes and the codes it repeated are each in code order.
            let mut values = Vec::with_capacity(event.changes.len() + event.unchanged.len());
            let mut repeated =
                event.unchanged.iter().filter_map(|code| Some((*code, source?.get(code)?.value))).peekable();
            for c in &event.changes {
                while let Some(r) = repeated.next_if(|(code, _)| *code < c.metric) {
                    values.push(r);
                }
                values.push((c.metric, c.after));
            }
            values.extend(repeated);
            let facts = crate::state::Facts {
                site: event.site.as_deref(),
                period: event.period,
                revision: event.revision,
                observed_at: event.observed_at,
                received_at: event.received_at,
                narrative: event.narrative.as_deref(),
                source: event.source.as_deref(),
            };
            state.take(rules, facts, values.into_iter());
        }
        EventKind::Stale | EventKind::Aid => {}
    }
    if let Some(holds) = event.aid.as_ref().and_then(|a| a.holds.as_ref()) {
        state.holds = holds.clone();
    }
    state.record_alerts(&event.derived);
    // A provider is stale exactly while its stale alert is open: the clock raises it, a report for a recent
    // enough period clears it, and a report for an older period leaves it (or raises it).
    state.stale = state.alerts.iter().any(|a| a.kind == crate::AlertKind::Stale);
    derive::apply_derived(state, &event.derived);
    state.version = event.version;
}

/// What `live` has declared for the CRITCON rule: its `critcon.level` as a whole and by site (sites that declared
/// none left out), and whether it is stale.
fn declared(live: &ProviderLive) -> crate::critcon::Declared {
    let level = |readings: &std::collections::BTreeMap<crate::Code, crate::state::Reading>| {
        readings.get(crate::catalogue::CRITCON_METRIC).and_then(|r| r.value.number()).map(crate::critcon::unit_level)
    };
    crate::critcon::Declared {
        stale: live.stale,
        whole: level(&live.readings),
        sites: live
            .sites
            .iter()
            .filter(|(site, _)| site.as_str() != crate::state::WHOLE)
            .filter_map(|(site, s)| Some((site.clone(), level(&s.readings)?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
