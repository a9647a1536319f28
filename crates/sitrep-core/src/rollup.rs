//! Rollups: a system's, region's or the nation's figure for each metric, from its providers, with its coverage.
//!
//! A scope keeps exact running [`Totals`]: for each reported metric the sum of its providers' numbers and how many
//! have one (and, for metrics that roll up by maximum, how many providers have each value), and for each derived
//! metric the sums of its two inputs over exactly the providers that reported **both**, with their count. A
//! provider's numbers go in and come out one report at a time, and sums are kept as integers (numbers in millionths,
//! see [`fixed`]), so no sequence of reports can make a total drift: the running totals always equal the totals
//! counted afresh from the providers' live values.
//!
//! The figures people see are made from totals by [`rollup`], by the metric's rule: a sum, a mean (sum over count),
//! a maximum, and for derived metrics the formula applied to the summed inputs of the providers that reported both,
//! so occupancy is recomputed from summed occupied and open beds, never averaged, and free beds never count open
//! beds of a provider that did not say how many are occupied. Each figure carries its coverage: how many providers
//! it counts ([`RollupValue::n`]) of the providers the directory places in the scope ([`ScopeRollup::providers`]).
//! Ratings use the catalogue's thresholds (provider overrides do not apply to a whole system).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalogue::{Formula, Rollup};
use crate::directory::Scope;
use crate::rag::{Rag, rate};
use crate::rules::{Index, Position, Rules};
use crate::{Code, Value};

/// Millionths per unit: the resolution at which totals are summed exactly.
const SCALE: f64 = 1e6;

/// A number as the integer count of millionths totals are kept in. Counts are whole numbers, so their sums are
/// exact; other numbers are rounded to a millionth, the same way every time, so adding and later removing a
/// provider's number leaves exactly what was there.
pub fn fixed(v: f64) -> i128 {
    // `as` saturates for numbers beyond i128, and sums wrap, so even absurd numbers come out again exactly.
    (v * SCALE).round() as i128
}

fn unfixed(total: i128) -> f64 {
    total as f64 / SCALE
}

/// One reported metric's totals over the providers of a scope that have a number for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    /// The sum, in millionths (see [`fixed`]).
    pub sum: i128,
    /// Providers with a number.
    pub n: u32,
    /// For metrics that roll up by maximum: how many providers have each number (empty otherwise).
    pub values: BTreeMap<i128, u32>,
}

impl Agg {
    fn add(&mut self, v: i128, by_max: bool) {
        self.sum = self.sum.wrapping_add(v);
        self.n += 1;
        if by_max {
            *self.values.entry(v).or_default() += 1;
        }
    }

    fn remove(&mut self, v: i128, by_max: bool) {
        self.sum = self.sum.wrapping_sub(v);
        self.n -= 1;
        if by_max && let Some(count) = self.values.get_mut(&v) {
            *count -= 1;
            if *count == 0 {
                self.values.remove(&v);
            }
        }
    }
}

/// A derived metric's totals: its two inputs summed over the providers that reported both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pair {
    pub a: i128,
    pub b: i128,
    /// Providers with both inputs.
    pub n: u32,
}

/// A scope's exact running totals: how many of its providers report, how many are stale, each reported metric's
/// [`Agg`] and each derived metric's [`Pair`], by their positions in the [`crate::rules::Index`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub reporting: u32,
    pub stale: u32,
    pub metrics: Vec<Agg>,
    pub pairs: Vec<Pair>,
}

impl Totals {
    /// Empty totals for the metrics of `rules`.
    pub fn new(rules: &Rules) -> Self {
        let index = rules.index();
        Totals {
            reporting: 0,
            stale: 0,
            metrics: vec![Agg::default(); index.metrics.len()],
            pairs: vec![Pair::default(); index.derived.len()],
        }
    }

    /// Adds one provider's live values that count (see [`crate::picture::counted_values`]), and whether it is
    /// stale: a stale provider counts as reporting and stale, and its values count in no total.
    pub fn add(&mut self, rules: &Rules, values: &BTreeMap<Code, Value>, stale: bool) {
        self.add_held(rules, values, &[], stale);
    }

    /// [`add`](Self::add) for a provider holding beds for mutual aid: `held` (by reported metric position, see
    /// [`crate::aid::hold::held_by_metric`]) is added to the inputs of derived metrics, as the provider's own
    /// figures add it, so a scope's free beds are its headroom.
    pub fn add_held(&mut self, rules: &Rules, values: &BTreeMap<Code, Value>, held: &[(usize, f64)], stale: bool) {
        let index = rules.index();
        let numbers: Vec<Option<i128>> = index
            .metrics
            .iter()
            .map(|code| match values.get(code.as_str()) {
                Some(Value::Number(n)) => Some(fixed(*n)),
                _ => None,
            })
            .collect();
        self.reporting += 1;
        self.stale += u32::from(stale);
        if stale {
            return;
        }
        for (m, n) in numbers.iter().enumerate() {
            if let Some(n) = n {
                self.metrics[m].add(*n, index.by_max[m]);
            }
        }
        let input = |m: usize| {
            let extra: i128 = held.iter().filter(|(h, _)| *h == m).map(|(_, q)| fixed(*q)).sum();
            numbers[m].map(|n| n + extra)
        };
        for (d, [a, b]) in index.inputs.iter().enumerate() {
            self.change_pair(d, None, input(*a).zip(input(*b)));
        }
    }

    /// Replaces one provider's number for the reported metric at position `m`.
    pub fn change_metric(&mut self, rules: &Rules, m: usize, before: Option<i128>, after: Option<i128>) {
        let by_max = rules.index().by_max[m];
        let agg = &mut self.metrics[m];
        if let Some(b) = before {
            agg.remove(b, by_max);
        }
        if let Some(a) = after {
            agg.add(a, by_max);
        }
    }

    /// Replaces one provider's pair of inputs for the derived metric at position `d` (None: not both reported).
    pub fn change_pair(&mut self, d: usize, before: Option<(i128, i128)>, after: Option<(i128, i128)>) {
        let pair = &mut self.pairs[d];
        if let Some((a, b)) = before {
            pair.a = pair.a.wrapping_sub(a);
            pair.b = pair.b.wrapping_sub(b);
            pair.n -= 1;
        }
        if let Some((a, b)) = after {
            pair.a = pair.a.wrapping_add(a);
            pair.b = pair.b.wrapping_add(b);
            pair.n += 1;
        }
    }
}

/// A scope's figure for one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollupValue {
    pub metric: Code,
    /// None when no provider of the scope has a number for it (or a ratio's denominator is zero).
    pub value: Option<f64>,
    /// Coverage: how many providers it counts (for a derived metric, those that reported both its inputs).
    pub n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<Rag>,
    /// For a derived figure: its two inputs summed over exactly the providers it counts (for free beds, the open and
    /// the occupied beds counted), so a reader sees what the figure stands on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<[f64; 2]>,
}

/// A scope's figures: every metric, or (in an event) the ones a report changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeRollup {
    pub scope: Scope,
    /// Providers the directory places in the scope: what each figure's coverage is out of.
    pub providers: u32,
    /// Of those, how many have reported, and how many of those are stale.
    pub reporting: u32,
    pub stale: u32,
    /// In metric code order.
    pub metrics: Vec<RollupValue>,
    /// Its derived CRITCON level, explained, when the deployment has a CRITCON rule and a member has a level (see
    /// [`crate::critcon`]). In an event, present only when the event may have changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critcon: Option<crate::critcon::Derived>,
    /// Mutual aid's strain signals of the scope, when there is something to say (see [`Strain`]). Snapshots carry
    /// them; events do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strain: Option<Strain>,
}

/// A scope's mutual aid strain signals ([`crate::aid::measures`] of its requesting providers): requests still
/// open, and the share of closed requests that went unmet. `None` on a rollup when no request is open and none went
/// unmet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strain {
    pub open_requests: u32,
    /// `None` when no request has closed.
    pub unfulfilled_rate: Option<f64>,
}

impl Strain {
    /// The signals of a scope with `open` requests, `unmet` of its `closed` ones unmet (cancelled ones not counted),
    /// when there is something to say.
    pub fn of_counts(open: u32, unmet: u32, closed: u32) -> Option<Strain> {
        (open > 0 || unmet > 0).then(|| Strain {
            open_requests: open,
            unfulfilled_rate: (closed > 0).then(|| f64::from(unmet) / f64::from(closed)),
        })
    }
}

impl ScopeRollup {
    /// Keeps only `metrics` (all when `None`).
    pub fn retain_metrics(&mut self, metrics: Option<&BTreeSet<String>>) {
        if let Some(set) = metrics {
            self.metrics.retain(|m| set.contains(m.metric.as_str()));
        }
    }
}

/// A figure of a scope: its value, coverage, the figure its `min_capacity` compares with, and a derived figure's
/// summed inputs.
struct Computed {
    value: Option<f64>,
    n: u32,
    capacity: Option<f64>,
    inputs: Option<[f64; 2]>,
}

/// The figure at `position` from `totals`.
fn figure(index: &Index, totals: &Totals, position: Position) -> Computed {
    let none = Computed { value: None, n: 0, capacity: None, inputs: None };
    match position {
        Position::Metric(m) => {
            let a = &totals.metrics[m];
            let (rule, bound, _) = &index.metric_rules[m];
            if a.n == 0 {
                return none;
            }
            let value = match rule {
                Rollup::Sum => Some(unfixed(a.sum)),
                Rollup::Mean => Some(unfixed(a.sum) / f64::from(a.n)),
                Rollup::Max => a.values.keys().next_back().map(|v| unfixed(*v)),
            };
            let capacity = bound.map(|b| &totals.metrics[b]).filter(|b| b.n > 0).map(|b| unfixed(b.sum));
            Computed { value, n: a.n, capacity, inputs: None }
        }
        Position::Derived(d) => {
            let p = totals.pairs[d];
            if p.n == 0 {
                return none;
            }
            let (formula, _) = &index.derived_rules[d];
            let (a, b) = (unfixed(p.a), unfixed(p.b));
            let capacity = matches!(formula, Formula::Ratio { .. }).then_some(b);
            Computed { value: formula.apply(a, b), n: p.n, capacity, inputs: Some([a, b]) }
        }
    }
}

/// The figures of `scope` from its totals at `positions` (in code order); with `listing_all`, only those that have
/// a value.
pub fn rollup_at(
    rules: &Rules,
    scope: &Scope,
    totals: &Totals,
    positions: &[Position],
    listing_all: bool,
) -> ScopeRollup {
    let index = rules.index();
    let metrics = positions
        .iter()
        .filter_map(|position| {
            let Computed { value, n, capacity, inputs } = figure(index, totals, *position);
            if listing_all && value.is_none() {
                return None;
            }
            let rule = match position {
                Position::Metric(m) => index.metric_rules[*m].2.as_ref(),
                Position::Derived(d) => index.derived_rules[*d].1.as_ref(),
            };
            let rag = value.zip(rule).and_then(|(v, rule)| rate(rule, v, capacity));
            Some(RollupValue { metric: index.code(*position), value, n, rag, inputs })
        })
        .collect();
    ScopeRollup {
        scope: scope.clone(),
        providers: rules.providers_in(scope),
        reporting: totals.reporting,
        stale: totals.stale,
        metrics,
        critcon: None,
        strain: None,
    }
}

/// The figures of `scope` from its totals: for `metrics`, or for every metric that has a value when `None`.
pub fn rollup(rules: &Rules, scope: &Scope, totals: &Totals, metrics: Option<&BTreeSet<String>>) -> ScopeRollup {
    let index = rules.index();
    match metrics {
        Some(codes) => {
            let positions: Vec<Position> = codes.iter().filter_map(|c| index.position(c)).collect();
            rollup_at(rules, scope, totals, &positions, false)
        }
        None => {
            let positions: Vec<Position> = index.all.iter().map(|(_, p)| *p).collect();
            rollup_at(rules, scope, totals, &positions, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Level;

    fn values(list: &[(&str, f64)]) -> BTreeMap<Code, Value> {
        list.iter().map(|(c, v)| (Code::new(c), Value::Number(*v))).collect()
    }

    fn value_of(r: &ScopeRollup, metric: &str) -> (Option<f64>, u32, Option<Rag>) {
        let v = r.metrics.iter().find(|m| m.metric == metric).unwrap_or_else(|| panic!("{metric} missing"));
        (v.value, v.n, v.rag)
    }

    #[test]
    fn each_rule_rolls_up_as_it_says() {
        let rules = Rules::demo();
        let mut t = Totals::new(&rules);
        // A large trust nearly full, a small one nearly empty: occupancy is 95 of 110 beds, not the mean of
        // 95% and 50%.
        t.add(
            &rules,
            &values(&[("beds.cc_adult.open", 100.0), ("beds.cc_adult.occupied", 90.0), ("opel.level", 2.0)]),
            false,
        );
        t.add(
            &rules,
            &values(&[("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 5.0), ("opel.level", 4.0)]),
            false,
        );
        // A stale provider counts as reporting (and stale), and its numbers in no total.
        t.add(&rules, &values(&[("beds.cc_adult.open", 500.0), ("opel.level", 1.0)]), true);
        let mut third = values(&[("ambulance.handover_mean_minutes", 40.0), ("opel.level", 3.0)]);
        third.insert("beds.cc_adult.open".into(), Value::Absent(crate::AbsentReason::NotAvailable));
        t.add(&rules, &third, false);
        t.add(&rules, &values(&[("ambulance.handover_mean_minutes", 20.0)]), false);
        assert_eq!((t.reporting, t.stale), (5, 1));
        let scope = Scope::new(Level::System, "QWE");
        let r = rollup(&rules, &scope, &t, None);
        assert_eq!(r.providers, 5);
        let cases: [(&str, Option<f64>, u32, Option<Rag>); 6] = [
            ("beds.cc_adult.open", Some(110.0), 2, None),
            ("beds.cc_adult.occupied", Some(95.0), 2, None),
            ("beds.cc_adult.occupancy", Some(9500.0 / 110.0), 2, Some(Rag::Amber)),
            ("beds.cc_adult.free", Some(15.0), 2, Some(Rag::Green)),
            ("opel.level", Some(4.0), 3, Some(Rag::Red)),
            ("ambulance.handover_mean_minutes", Some(30.0), 2, Some(Rag::Amber)),
        ];
        for (metric, value, n, rag) in cases {
            assert_eq!(value_of(&r, metric), (value, n, rag), "{metric}");
        }
        assert!(r.metrics.iter().all(|m| m.value.is_some()), "only metrics with a value when listing all");
        // Asked for explicitly, a metric nobody reports is listed with no value.
        let only: BTreeSet<String> = ["flow.discharges".to_string()].into();
        assert_eq!(value_of(&rollup(&rules, &scope, &t, Some(&only)), "flow.discharges"), (None, 0, None));
    }

    #[test]
    fn small_denominators_are_not_rated_and_zero_denominators_have_no_ratio() {
        let rules = Rules::demo();
        let scope = Scope::new(Level::System, "QWE");
        let mut t = Totals::new(&rules);
        t.add(&rules, &values(&[("beds.cc_adult.open", 4.0), ("beds.cc_adult.occupied", 4.0)]), false);
        let r = rollup(&rules, &scope, &t, None);
        assert_eq!(value_of(&r, "beds.cc_adult.occupancy"), (Some(100.0), 1, None));
        assert_eq!(value_of(&r, "beds.cc_adult.free"), (Some(0.0), 1, Some(Rag::Red)));
        let mut t = Totals::new(&rules);
        t.add(&rules, &values(&[("beds.cc_adult.open", 0.0), ("beds.cc_adult.occupied", 0.0)]), false);
        let only: BTreeSet<String> = ["beds.cc_adult.occupancy".to_string()].into();
        assert_eq!(value_of(&rollup(&rules, &scope, &t, Some(&only)), "beds.cc_adult.occupancy"), (None, 1, None));
    }
}
