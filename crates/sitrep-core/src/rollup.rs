//! Rollups: a system's, region's or the nation's figure for each metric, from its providers.
//!
//! Stores keep raw [`Totals`] per scope (for each metric the sum, the count of providers with a number, and the
//! maximum), because those can be kept up to date one report at a time: add the new value, take away the old. The
//! figures people see are made from totals by [`rollup`], by the metric's rule: a sum, a mean (sum over count), a
//! maximum, and for derived metrics the formula applied to the summed inputs, so occupancy is recomputed from the
//! summed occupied and open beds rather than averaged. Ratings use the catalogue's thresholds (provider overrides
//! do not apply to a whole system).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalogue::{Formula, Rollup};
use crate::rag::{Rag, rate};
use crate::rules::{Rules, Scope};
use crate::{Catalogue, Value};

/// One metric's raw totals over the providers of a scope that have a number for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub sum: f64,
    /// Providers with a number.
    pub n: u32,
    /// The largest number, for metrics that roll up by maximum (None otherwise, or when there is none).
    pub max: Option<f64>,
}

/// A scope's raw totals: how many of its providers report, how many are stale, and each metric's [`Agg`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub reporting: u32,
    pub stale: u32,
    pub metrics: BTreeMap<String, Agg>,
}

impl Totals {
    /// Adds one provider's live values (and whether it is stale).
    pub fn add(&mut self, catalogue: &Catalogue, values: &BTreeMap<String, Value>, stale: bool) {
        self.reporting += 1;
        self.stale += u32::from(stale);
        for (code, value) in values {
            let (Value::Number(n), Some(metric)) = (value, catalogue.get(code)) else { continue };
            let agg = self.metrics.entry(code.clone()).or_default();
            agg.sum += n;
            agg.n += 1;
            if metric.rollup == Rollup::Max {
                agg.max = Some(agg.max.map_or(*n, |m| m.max(*n)));
            }
        }
    }
}

/// A scope's figure for one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollupValue {
    pub metric: String,
    /// None when no provider of the scope has a number for it (or a ratio's denominator is zero).
    pub value: Option<f64>,
    /// How many providers contributed.
    pub n: u32,
    pub rag: Option<Rag>,
}

/// A scope's figures: every metric, or (in an event) the ones a report changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeRollup {
    pub scope: Scope,
    /// Providers the directory places in the scope.
    pub providers: u32,
    /// Of those, how many have reported, and how many of those are stale.
    pub reporting: u32,
    pub stale: u32,
    /// In metric code order.
    pub metrics: Vec<RollupValue>,
}

/// The figure for `metric` (reported or derived) from `totals`, with the figure its `min_capacity` compares with.
fn figure(catalogue: &Catalogue, totals: &Totals, metric: &str) -> Option<(Option<f64>, u32, Option<f64>)> {
    let agg = |code: &str| totals.metrics.get(code).filter(|a| a.n > 0);
    if let Some(m) = catalogue.get(metric) {
        let Some(a) = agg(metric) else { return Some((None, 0, None)) };
        let value = match m.rollup {
            Rollup::Sum => a.sum,
            Rollup::Mean => a.sum / f64::from(a.n),
            Rollup::Max => a.max?,
        };
        let capacity = m.at_most.as_deref().and_then(agg).map(|c| c.sum);
        return Some((Some(value), a.n, capacity));
    }
    let d = catalogue.derived(metric)?;
    let [x, y] = d.formula.inputs();
    let (Some(a), Some(b)) = (agg(x), agg(y)) else { return Some((None, 0, None)) };
    let capacity = matches!(d.formula, Formula::Ratio { .. }).then_some(b.sum);
    Some((d.formula.apply(a.sum, b.sum), a.n.min(b.n), capacity))
}

/// The figures of `scope` from its totals: for `metrics`, or for every metric when `None`.
pub fn rollup(rules: &Rules, scope: &Scope, totals: &Totals, metrics: Option<&BTreeSet<String>>) -> ScopeRollup {
    let catalogue = &rules.catalogue;
    let all: BTreeSet<String>;
    let codes = match metrics {
        Some(m) => m,
        None => {
            all = catalogue
                .metrics()
                .map(|m| m.code.clone())
                .chain(catalogue.derived_metrics().map(|d| d.code.clone()))
                .collect();
            &all
        }
    };
    let metrics = codes
        .iter()
        .filter_map(|code| {
            let (value, n, capacity) = figure(catalogue, totals, code)?;
            if metrics.is_none() && value.is_none() {
                return None;
            }
            let rag = match (value, catalogue.rag_rule(code)) {
                (Some(v), Some(rule)) => rate(rule, v, capacity),
                _ => None,
            };
            Some(RollupValue { metric: code.clone(), value, n, rag })
        })
        .collect();
    ScopeRollup {
        scope: scope.clone(),
        providers: rules.providers_in(scope),
        reporting: totals.reporting,
        stale: totals.stale,
        metrics,
    }
}

/// The reported metrics whose totals are needed to roll up `metrics` (themselves, and derived metrics' inputs).
pub fn inputs(catalogue: &Catalogue, metrics: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for code in metrics {
        match catalogue.derived(code) {
            Some(d) => out.extend(d.formula.inputs().map(str::to_owned)),
            None => {
                out.insert(code.clone());
                if let Some(bound) = catalogue.get(code).and_then(|m| m.at_most.clone()) {
                    out.insert(bound);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Level;

    fn values(list: &[(&str, f64)]) -> BTreeMap<String, Value> {
        list.iter().map(|(c, v)| (c.to_string(), Value::Number(*v))).collect()
    }

    fn value_of(r: &ScopeRollup, metric: &str) -> (Option<f64>, u32, Option<Rag>) {
        let v = r.metrics.iter().find(|m| m.metric == metric).unwrap_or_else(|| panic!("{metric} missing"));
        (v.value, v.n, v.rag)
    }

    #[test]
    fn each_rule_rolls_up_as_it_says() {
        let rules = Rules::demo();
        let c = &rules.catalogue;
        let mut t = Totals::default();
        // A large trust nearly full, a small one nearly empty: occupancy is 95 of 110 beds, not the mean of
        // 95% and 50%.
        t.add(
            c,
            &values(&[("beds.cc_adult.open", 100.0), ("beds.cc_adult.occupied", 90.0), ("opel.level", 2.0)]),
            false,
        );
        t.add(c, &values(&[("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 5.0), ("opel.level", 4.0)]), true);
        let mut third = values(&[("ambulance.handover_mean_minutes", 40.0), ("opel.level", 3.0)]);
        third.insert("beds.cc_adult.open".into(), Value::Absent(crate::AbsentReason::NotAvailable));
        t.add(c, &third, false);
        t.add(c, &values(&[("ambulance.handover_mean_minutes", 20.0)]), false);
        assert_eq!((t.reporting, t.stale), (4, 1));
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
        let mut t = Totals::default();
        t.add(&rules.catalogue, &values(&[("beds.cc_adult.open", 4.0), ("beds.cc_adult.occupied", 4.0)]), false);
        let r = rollup(&rules, &scope, &t, None);
        assert_eq!(value_of(&r, "beds.cc_adult.occupancy"), (Some(100.0), 1, None));
        assert_eq!(value_of(&r, "beds.cc_adult.free"), (Some(0.0), 1, Some(Rag::Red)));
        let mut t = Totals::default();
        t.add(&rules.catalogue, &values(&[("beds.cc_adult.open", 0.0), ("beds.cc_adult.occupied", 0.0)]), false);
        let only: BTreeSet<String> = ["beds.cc_adult.occupancy".to_string()].into();
        assert_eq!(value_of(&rollup(&rules, &scope, &t, Some(&only)), "beds.cc_adult.occupancy"), (None, 1, None));
    }

    #[test]
    fn inputs_of_derived_metrics() {
        let c = crate::profile::nhs_england_catalogue();
        let m: BTreeSet<String> = ["beds.cc_adult.occupancy".into(), "ed.over_12h".into()].into();
        let got: Vec<String> = inputs(&c, &m).into_iter().collect();
        assert_eq!(got, ["beds.cc_adult.occupied", "beds.cc_adult.open", "ed.in_department", "ed.over_12h"]);
    }
}
