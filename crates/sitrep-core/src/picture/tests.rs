//! Property tests of the fold: random sequences of reports, corrections, absences, late reports, duplicates and
//! stale transitions, planned by [`crate::plan`] against a model store, must fold into exactly the picture counted
//! afresh from the final live state, on any number of replicas, and from states read while the log moved.

use std::collections::BTreeMap;

use super::*;
use crate::cursor::Position;
use crate::plan;
use crate::rollup::Totals;
use crate::{AbsentReason, Code, Limits, Report, ValidReport, Value, validate};

/// A small, seedable generator (xorshift64*), so failures are reproducible from the seed they print.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A report's key: provider, site, period, revision.
type Key = (String, Option<String>, Timestamp, u32);

/// The least a store does: keep live state, history and the log, and persist what the core plans.
struct Model {
    rules: Rules,
    states: BTreeMap<String, ProviderLive>,
    /// (provider, site, period, revision) -> what it said.
    history: BTreeMap<Key, BTreeMap<Code, Value>>,
    log: Vec<Event>,
    /// Each event's planned state, as a writer's own tail has it.
    planned: Vec<Option<Arc<ProviderLive>>>,
}

impl Model {
    fn new(rules: &Rules) -> Self {
        let (states, history) = (BTreeMap::new(), BTreeMap::new());
        Model { rules: rules.clone(), states, history, log: Vec::new(), planned: Vec::new() }
    }

    fn persist(&mut self, plan: plan::Plan) {
        assert_eq!(self.states.get(&plan.provider).map_or(0, |s| s.version), plan.expected_version);
        let mut event = plan.event;
        event.cursor = Cursor::new("prop", Position(self.log.len() as u64 + 1, 0));
        self.planned.push(plan.state.clone().map(Arc::new));
        if let Some(state) = plan.state {
            self.states.insert(plan.provider.clone(), state);
        }
        if let Some(h) = plan.history {
            self.history.insert((plan.provider.clone(), h.site, h.period, h.revision), h.values);
        }
        self.log.push(event);
    }

    fn report(&mut self, r: &ValidReport, at: Timestamp) {
        let key = (r.provider().to_owned(), r.site().map(str::to_owned), r.period(), r.revision());
        if self.history.contains_key(&key) {
            return;
        }
        let prior = self.states.get(r.provider());
        let previous = plan::is_late(prior, r)
            .then(|| {
                let from = (key.0.clone(), key.1.clone(), key.2, 0);
                self.history.range(from..key.clone()).next_back().map(|(_, v)| v.clone())
            })
            .flatten();
        let p = plan::report(&self.rules, prior, previous.as_ref(), r, at, 48);
        self.persist(p);
    }

    fn check_stale(&mut self, now: Timestamp) {
        let due: Vec<String> = self.states.keys().cloned().collect();
        for code in due {
            if let Some(p) = plan::stale(&self.rules, &self.states[&code], now) {
                self.persist(p);
            }
        }
    }
}

const PROVIDERS: [&str; 6] = ["RJ7", "RVR", "RAX", "RGT", "RAL", "RKE"];

fn random_report(rng: &mut Rng, rules: &Rules, now: Timestamp) -> Option<ValidReport> {
    let mut values: BTreeMap<String, crate::MetricInput> = BTreeMap::new();
    let mut put = |code: &str, v: Value| {
        values.insert(code.to_owned(), v.into());
    };
    let absent = Value::Absent(AbsentReason::NotAvailable);
    let pick = |rng: &mut Rng, v: f64| if rng.chance(15) { absent } else { Value::Number(v) };
    for (open, occupied) in
        [("beds.cc_adult.open", "beds.cc_adult.occupied"), ("beds.ga_adult.open", "beds.ga_adult.occupied")]
    {
        let capacity = rng.below(60) as f64;
        // Either, both or neither: a provider that reports open beds and not occupied ones must not move totals
        // of free beds or occupancy.
        if rng.chance(60) {
            let v = pick(rng, capacity);
            put(open, v);
        }
        if rng.chance(60) {
            let n = (rng.below(61) as f64).min(capacity);
            let v = pick(rng, n);
            put(occupied, v);
        }
    }
    if rng.chance(40) {
        let n = (1 + rng.below(4)) as f64;
        let v = pick(rng, n);
        put("opel.level", v);
    }
    if rng.chance(40) {
        // A mean of fractional minutes, and a correction of an absurd typo: neither may leave a residue in sums.
        let minutes = if rng.chance(5) { 1e12 } else { rng.below(2000) as f64 / 7.0 };
        let v = pick(rng, minutes);
        put("ambulance.handover_mean_minutes", v);
    }
    if rng.chance(30) {
        let n = rng.below(1000) as f64 / 10.0;
        let v = pick(rng, n);
        put("staff.absence_percent", v);
    }
    if rng.chance(30) {
        let n = rng.below(40) as f64;
        let v = pick(rng, n);
        put("ed.over_12h", v);
    }
    let provider = PROVIDERS[rng.below(PROVIDERS.len() as u64) as usize];
    // Providers with sites report as a whole or by either site, in any mix.
    let sites = &rules.directory.provider(provider).expect("known").sites;
    let site = match rng.below(3) as usize {
        0 => None,
        i => sites.get(i - 1).map(|s| s.code.clone()),
    };
    let report = Report {
        provider: provider.to_owned(),
        site,
        period: Some(now.hour_start().add_hours(-(rng.below(3) as i64))),
        revision: 1 + rng.below(6) as u32,
        observed_at: Some(now),
        values,
        ..Default::default()
    };
    validate(&report, &rules.directory, &rules.catalogue, &Limits::default(), now).ok()
}

/// The scope totals counted afresh must equal the folded ones, and every derived figure's coverage must be exactly
/// the providers that reported both its inputs.
fn assert_coverage(picture: &Picture) {
    let rules = picture.rules();
    let index = rules.index();
    for (s, scope) in index.scopes.iter().enumerate() {
        let mut fresh = Totals::new(rules);
        for p in picture.providers().filter(|p| rules.in_scope(&p.provider, scope)) {
            fresh.add(rules, &counted_values(rules, p), p.stale);
        }
        assert_eq!(picture.totals()[s], fresh, "totals of {scope}");
        for (d, [a, b]) in index.inputs.iter().enumerate() {
            // Counted: providers that are not stale, with a number for both inputs from a recent enough period.
            let counts = |p: &ProviderLive, metric: &str| {
                derive::counted_readings(rules, p).any(|(c, r)| c.as_str() == metric && r.value.number().is_some())
            };
            let both = picture
                .providers()
                .filter(|p| rules.in_scope(&p.provider, scope) && !p.stale)
                .filter(|p| counts(p, &index.metrics[*a]) && counts(p, &index.metrics[*b]))
                .count();
            assert_eq!(picture.totals()[s].pairs[d].n as usize, both, "coverage of {} in {scope}", index.derived[d]);
        }
    }
}

fn fold_all(rules: &Rules, start: Cursor, states: Vec<ProviderLive>, events: &[Event]) -> Picture {
    let mut picture = Picture::from_states(rules.clone(), start, states);
    for e in events {
        picture.apply(e).expect("no gap");
    }
    picture
}

#[test]
fn any_sequence_folds_into_the_picture_counted_afresh() {
    let rules = Rules::demo();
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut model = Model::new(&rules);
        let mut now = Timestamp::parse_rfc3339("2026-11-27T08:00:00Z").unwrap();
        // A replica that folds event by event from the start, checked as it goes.
        let mut live = Picture::new(rules.clone(), Cursor::new("prop", Position(0, 0)));
        // States as a replica starting mid-way would read them: provider by provider, while the log moves on.
        let mut loaded: Option<(Cursor, BTreeMap<String, ProviderLive>)> = None;
        let steps = 120 + rng.below(120);
        for step in 0..steps {
            now = now.add_millis(rng.below(20 * 60_000) as i64);
            if rng.chance(10) {
                now = now.add_millis(rng.below(3 * 3_600_000) as i64);
                model.check_stale(now);
            } else if let Some(r) = random_report(&mut rng, &rules, now) {
                model.report(&r, now);
            }
            for e in &model.log[live.cursor().pos.0 as usize..] {
                let rollups = live.apply(e).unwrap_or_else(|gap| panic!("seed {seed}: {gap}"));
                for r in &rollups {
                    let want = live.rollups(std::slice::from_ref(&r.scope), None);
                    for m in &r.metrics {
                        let w = want[0].metrics.iter().find(|w| w.metric == m.metric);
                        assert_eq!(m.value, w.and_then(|w| w.value), "seed {seed}: event rollup of {}", m.metric);
                    }
                }
            }
            match &mut loaded {
                None if step == steps / 3 => {
                    let at = Cursor::new("prop", Position(model.log.len() as u64, 0));
                    loaded = Some((at, model.states.clone()));
                }
                // Later reads see later states of some providers.
                Some((_, states)) if rng.chance(5) => {
                    let code = PROVIDERS[rng.below(PROVIDERS.len() as u64) as usize];
                    if let Some(s) = model.states.get(code) {
                        states.insert(code.to_owned(), s.clone());
                    }
                }
                _ => {}
            }
            if step % 17 == 0 {
                assert_coverage(&live);
            }
        }
        assert!(model.states.values().any(|p| p.sites.len() > 2), "seed {seed}: a provider reported by site and whole");
        let last = Cursor::new("prop", Position(model.log.len() as u64, 0));
        let fresh = Picture::from_states(rules.clone(), last.clone(), model.states.values().cloned());
        assert_eq!(live, fresh, "seed {seed}: the folded picture is the one counted afresh");
        for p in model.states.values() {
            // Each report derives from what the previous one kept: that must be what deriving afresh gives.
            let held = crate::aid::hold::held_by_metric(&rules, &p.holds);
            let (figures, opel) = crate::derive::provider_view(&rules, &p.provider, &counted_values(&rules, p), &held);
            assert_eq!((&p.figures, &p.opel), (&figures, &opel), "seed {seed}: {}'s kept figures", p.provider);
        }
        assert_coverage(&live);
        let all = rules.scopes();
        assert_eq!(live.rollups(&all, None), fresh.rollups(&all, None), "seed {seed}: rollups");

        let second = fold_all(&rules, Cursor::new("prop", Position(0, 0)), Vec::new(), &model.log);
        assert_eq!(second, live, "seed {seed}: two replicas folding one log agree");
        // A replica with no subscribers folds without making rollups, now and then: the same picture.
        let mut quiet = Picture::new(rules.clone(), Cursor::new("prop", Position(0, 0)));
        for (i, e) in model.log.iter().enumerate() {
            match i % 3 {
                0 => quiet.apply(e).map(drop),
                _ => quiet.apply_quietly(e),
            }
            .expect("no gap");
        }
        assert_eq!(quiet, live, "seed {seed}: folding without rollups gives the same picture");
        // A writer's own tail takes the planned state of (here) every other event instead of folding it.
        let mut own = Picture::new(rules.clone(), Cursor::new("prop", Position(0, 0)));
        let mut reference = Picture::new(rules.clone(), Cursor::new("prop", Position(0, 0)));
        for (i, (e, planned)) in model.log.iter().zip(&model.planned).enumerate() {
            let mut mine = e.clone();
            if i % 2 == 0 {
                mine.planned = crate::state::Planned(planned.clone());
            }
            let rollups = own.apply(&mine).expect("no gap");
            assert_eq!(rollups, reference.apply(e).expect("no gap"), "seed {seed}: event {i}'s rollups");
        }
        assert_eq!(own, live, "seed {seed}: taking planned states gives the same picture");

        let (at, states) = loaded.expect("loaded mid-way");
        let from = at.pos.0 as usize;
        let started = fold_all(&rules, at, states.into_values().collect(), &model.log[from..]);
        assert_eq!(started, live, "seed {seed}: a replica started from states read while the log moved agrees");
    }
}

#[test]
fn free_beds_and_occupancy_count_only_providers_that_reported_both() {
    // The case seen on the demo: RRV reported 40 open adult critical care beds and no occupied figure. Its beds
    // must not appear as free in North Central London's total.
    let rules = Rules::demo();
    let mut model = Model::new(&rules);
    let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
    let report = |provider: &str, values: &[(&str, f64)]| {
        let r = Report {
            provider: provider.into(),
            period: Some(now.hour_start()),
            revision: 1,
            observed_at: Some(now),
            values: values.iter().map(|(c, v)| (c.to_string(), (*v).into())).collect(),
            ..Default::default()
        };
        validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap()
    };
    let system = rules.directory.provider("RRV").unwrap().system.clone();
    let others: Vec<String> = rules
        .directory
        .providers()
        .filter(|p| p.system == system && p.code != "RRV")
        .map(|p| p.code.clone())
        .take(2)
        .collect();
    model.report(&report(&others[0], &[("beds.cc_adult.open", 30.0), ("beds.cc_adult.occupied", 24.0)]), now);
    model.report(&report(&others[1], &[("beds.cc_adult.open", 32.0), ("beds.cc_adult.occupied", 25.0)]), now);
    model.report(&report("RRV", &[("beds.cc_adult.open", 40.0)]), now);
    let picture = fold_all(&rules, Cursor::new("prop", Position(0, 0)), Vec::new(), &model.log);
    let scope = Scope::new(crate::Level::System, system);
    let r = &picture.rollups(std::slice::from_ref(&scope), None)[0];
    let get = |m: &str| r.metrics.iter().find(|v| v.metric == m).map(|v| (v.value, v.n)).unwrap();
    assert_eq!(get("beds.cc_adult.open"), (Some(102.0), 3), "open beds of everyone who said");
    assert_eq!(get("beds.cc_adult.free"), (Some(13.0), 2), "free beds only where occupancy is known");
    assert_eq!(get("beds.cc_adult.occupancy"), (Some(4900.0 / 62.0), 2));
}

/// Each scope's strain signals, counted in one pass over the book, are what the scope's measures say.
#[test]
fn strain_signals_agree_with_the_measures() {
    use crate::aid::tests::{actor, ask, t};
    use crate::aid::{Action, RequestId};
    let rules = Rules::demo();
    let mut picture = Picture::new(rules.clone(), Cursor::new("t", Position(0, 0)));
    let book = &mut picture.aid;
    for p in ["RJ7", "RAX", "RGT", "RJ6", "RRV"] {
        book.apply(Action::Create(ask(p, 1)), &actor(p), t(0)).unwrap();
    }
    book.apply(Action::Unfulfilled { request: RequestId(2), reason: "none".into() }, &actor("RAX"), t(1)).unwrap();
    book.apply(Action::Cancel { request: RequestId(3), reason: "better".into() }, &actor("RGT"), t(1)).unwrap();
    book.apply(Action::ExpireRequest(RequestId(4)), &actor("RJ6"), t(240)).unwrap();
    let mut seen = 0;
    for scope in rules.scopes() {
        let m = crate::aid::measures(&scope.to_string(), &picture.aid, &rules.directory, t(300)).unwrap();
        let strain =
            crate::rollup::Strain { open_requests: m.open_requests as u32, unfulfilled_rate: m.unfulfilled_rate };
        let expected = (m.open_requests > 0 || m.unfulfilled_rate.is_some_and(|r| r > 0.0)).then_some(strain);
        seen += usize::from(expected.is_some());
        assert_eq!(picture.rollups(std::slice::from_ref(&scope), None)[0].strain, expected, "{scope}");
    }
    assert!(seen >= 3, "the test looks at scopes with strain");
}
