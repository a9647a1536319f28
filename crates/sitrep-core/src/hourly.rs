//! The hour-by-hour view: a metric's value at each of the last N hours (control rooms look at 72), the change since
//! the hour before, the corrections each hour received and which providers reported it.
//!
//! Stores keep every revision of every period; this module reads those revisions back as plain values. A period's
//! revisions are merged in revision order, each overriding only the metrics it carries, because providers correct
//! one figure at a time and a partial correction must not blank the others. "The previous hour" is always the
//! period one hour earlier, looked up in the records, not the previous entry of the list of periods. A rollup is
//! not computed here: the caller's closure gets every provider's merged values for the hour, so that a ratio can be
//! recomputed from summed counts instead of averaging the providers' percentages. A provider that reports by site
//! has each site's revisions merged apart (a site's revision 1 is not another site's), then its sites combined by
//! the same rule as its live state ([`crate::state::roll_sites`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::{Code, Rules, Timestamp, Value};

/// One stored revision of one period of one provider (what a store's history gives back).
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodRevision {
    pub period: Timestamp,
    /// The site it came from (`None`: the provider as a whole).
    pub site: Option<String>,
    pub revision: u32,
    pub values: BTreeMap<Code, Value>,
}

impl From<crate::HistoryRecord> for PeriodRevision {
    fn from(h: crate::HistoryRecord) -> Self {
        PeriodRevision { period: h.period, site: h.site, revision: h.revision, values: h.values }
    }
}

/// The hours `[to - (hours-1) h, ..., to]`, oldest first. `to` is brought to the start of its hour first, so an
/// instant such as "now" gives the hours up to and including the current one.
pub fn hours_ending(to: Timestamp, hours: u32) -> Vec<Timestamp> {
    let last = to.hour_start();
    (0..i64::from(hours)).rev().map(|back| last.add_hours(-back)).collect()
}

/// One metric of one provider for one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderHour {
    pub period: Timestamp,
    /// Whether any revision of this period was stored (the provider reported for this hour).
    pub reported: bool,
    /// The latest revision of the period that carries `metric`, and its value; None if no revision of this hour
    /// carries it.
    pub revision: Option<u32>,
    pub value: Option<Value>,
    /// Number of revisions of this period beyond the first (all revisions of the period count, not only those
    /// carrying the metric).
    pub corrections: u32,
    /// value minus the previous hour's value, when both are numbers.
    pub change: Option<f64>,
}

/// One metric of one provider, hour by hour over `periods` (from [`hours_ending`]). `records` may be in any order
/// and may include periods outside the range: they are ignored, except that the hour just before each period is
/// read for that period's `change` (for the first hour, that hour lies outside the range).
pub fn provider_hours(
    rules: &Rules,
    records: &[PeriodRevision],
    metric: &str,
    periods: &[Timestamp],
) -> Vec<ProviderHour> {
    let merged = merge_periods(rules, records, &with_previous_hours(periods));
    let number = |period: Timestamp| match merged.get(&period).and_then(|m| m.values.get(metric)) {
        Some(Value::Number(n)) => Some(*n),
        _ => None,
    };
    periods
        .iter()
        .map(|&period| {
            let hour = merged.get(&period);
            let change = number(period).zip(number(period.add_hours(-1))).map(|(now, before)| now - before);
            ProviderHour {
                period,
                reported: hour.is_some(),
                revision: hour.and_then(|m| m.set_by.get(metric).copied()),
                value: hour.and_then(|m| m.values.get(metric).copied()),
                corrections: hour.map_or(0, |m| m.corrections),
                change,
            }
        })
        .collect()
}

/// A provider's values for the hour starting at `period`: its revisions merged (each source apart, then its sites
/// combined; see the module doc); `None` if it did not report for that hour.
pub fn merged_hour(rules: &Rules, records: &[PeriodRevision], period: Timestamp) -> Option<BTreeMap<Code, Value>> {
    merge_periods(rules, records, &BTreeSet::from([period])).remove(&period).map(|m| m.values)
}

/// One metric of one scope (a system, region or nation) for one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeHour {
    pub period: Timestamp,
    /// The rolled-up value from the providers that reported this metric for this hour; None when none did or the
    /// rollup has no value.
    pub value: Option<f64>,
    pub change: Option<f64>,
    /// Providers (codes, sorted) that reported for this hour (any revision, any metric).
    pub reported: Vec<String>,
    /// How many providers the scope expects (the `expected` list's length).
    pub expected: u32,
    /// reported.len() / expected, 0.0 when expected is 0.
    pub completeness: f64,
    /// Sum over providers of corrections of this period.
    pub corrections: u32,
}

/// A metric for a scope, hour by hour. `histories` maps provider code -> its records; `expected` lists the scope's
/// providers (histories of others are ignored).
///
/// For each hour, `rollup` is called once with the providers that reported that hour (sorted by code), each with
/// the merged values of every metric of its period (see the module doc), and gives the scope's value. It is not
/// called for an hour nobody reported. The hour before the first period is rolled up too, for the first `change`.
pub fn scope_hours(
    rules: &Rules,
    histories: &BTreeMap<String, Vec<PeriodRevision>>,
    expected: &[String],
    periods: &[Timestamp],
    rollup: impl Fn(&[(&str, &BTreeMap<Code, Value>)]) -> Option<f64>,
) -> Vec<ScopeHour> {
    let wanted = with_previous_hours(periods);
    let expected_set: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    // Provider code -> its merged periods. A BTreeMap keeps the providers of every hour in code order.
    let providers: BTreeMap<&str, BTreeMap<Timestamp, Merged>> = histories
        .iter()
        .filter(|(code, _)| expected_set.contains(code.as_str()))
        .map(|(code, records)| (code.as_str(), merge_periods(rules, records, &wanted)))
        .collect();
    let reporting = |period: Timestamp| -> Vec<(&str, &Merged)> {
        providers.iter().filter_map(|(code, hours)| hours.get(&period).map(|m| (*code, m))).collect()
    };
    // Each wanted hour is rolled up once, even when it is both a period and the hour before another.
    let values: BTreeMap<Timestamp, Option<f64>> = wanted
        .iter()
        .map(|&period| {
            let hour = reporting(period);
            let inputs: Vec<(&str, &BTreeMap<Code, Value>)> = hour.iter().map(|(c, m)| (*c, &m.values)).collect();
            (period, if inputs.is_empty() { None } else { rollup(&inputs) })
        })
        .collect();
    let value = |period: Timestamp| values.get(&period).copied().flatten();

    let expected_count = u32::try_from(expected.len()).unwrap_or(u32::MAX);
    periods
        .iter()
        .map(|&period| {
            let hour = reporting(period);
            let reported: Vec<String> = hour.iter().map(|(code, _)| (*code).to_owned()).collect();
            let completeness =
                if expected_count == 0 { 0.0 } else { reported.len() as f64 / f64::from(expected_count) };
            ScopeHour {
                period,
                value: value(period),
                change: value(period).zip(value(period.add_hours(-1))).map(|(now, before)| now - before),
                reported,
                expected: expected_count,
                completeness,
                corrections: hour.iter().map(|(_, m)| m.corrections).sum(),
            }
        })
        .collect()
}

/// One provider's period with its revisions merged.
struct Merged {
    /// The latest value of every metric that any revision of the period carried.
    values: BTreeMap<Code, Value>,
    /// The revision that gave each entry of `values`.
    set_by: BTreeMap<Code, u32>,
    /// Distinct revisions of the period beyond the first.
    corrections: u32,
}

/// The periods, and the hour before each, which a period's `change` is measured against.
fn with_previous_hours(periods: &[Timestamp]) -> BTreeSet<Timestamp> {
    periods.iter().flat_map(|&p| [p, p.add_hours(-1)]).collect()
}

/// Merges the revisions of each `wanted` period, in revision order, each source (site, or the provider as a
/// whole) apart, then combines the sources (see the module doc); records of other periods are skipped.
fn merge_periods(
    rules: &Rules,
    records: &[PeriodRevision],
    wanted: &BTreeSet<Timestamp>,
) -> BTreeMap<Timestamp, Merged> {
    let mut grouped: BTreeMap<Timestamp, BTreeMap<Option<&str>, Vec<&PeriodRevision>>> = BTreeMap::new();
    for record in records.iter().filter(|r| wanted.contains(&r.period)) {
        grouped.entry(record.period).or_default().entry(record.site.as_deref()).or_default().push(record);
    }
    grouped
        .into_iter()
        .map(|(period, sources)| {
            let mut merged: BTreeMap<Option<&str>, Merged> =
                sources.into_iter().map(|(site, revisions)| (site, merge_revisions(revisions))).collect();
            let whole = merged.remove(&None);
            if merged.is_empty() {
                return (period, whole.expect("a period has a source"));
            }
            let sites: Vec<Merged> = merged.into_values().collect();
            let mut out = Merged {
                values: BTreeMap::new(),
                set_by: BTreeMap::new(),
                corrections: whole.iter().chain(&sites).map(|m| m.corrections).sum(),
            };
            let codes: BTreeSet<Code> = whole.iter().chain(&sites).flat_map(|m| m.values.keys().copied()).collect();
            for code in codes {
                let by_site = || sites.iter().filter(|m| m.values.contains_key(&code));
                match crate::state::roll_sites(rules, code, by_site().map(|m| m.values[&code])) {
                    Some(v) => {
                        out.values.insert(code, v);
                        out.set_by.insert(code, by_site().map(|m| m.set_by[&code]).max().expect("some site"));
                    }
                    None => {
                        let whole = whole.as_ref().expect("only the whole has it");
                        out.values.insert(code, whole.values[&code]);
                        out.set_by.insert(code, whole.set_by[&code]);
                    }
                }
            }
            (period, out)
        })
        .collect()
}

/// One source's revisions of one period, merged in revision order.
fn merge_revisions(mut revisions: Vec<&PeriodRevision>) -> Merged {
    // A store treats a repeated (period, revision) as a duplicate of the first, so if one is handed back twice the
    // first copy must win: sort stably, and skip later copies of a revision already applied.
    revisions.sort_by_key(|r| r.revision);
    revisions.dedup_by_key(|r| r.revision);
    let mut merged = Merged {
        values: BTreeMap::new(),
        set_by: BTreeMap::new(),
        corrections: u32::try_from(revisions.len() - 1).unwrap_or(u32::MAX),
    };
    for r in revisions {
        for (code, value) in &r.values {
            merged.values.insert(*code, *value);
            merged.set_by.insert(*code, r.revision);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::AbsentReason;

    const OPEN: &str = "beds.ga_adult.open";
    const OCCUPIED: &str = "beds.ga_adult.occupied";

    /// The last hour of every test's range.
    fn t() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-27T14:00:00Z").unwrap()
    }

    fn rev(hours_from_t: i64, revision: u32, values: &[(&str, Value)]) -> PeriodRevision {
        PeriodRevision {
            period: t().add_hours(hours_from_t),
            site: None,
            revision,
            values: values.iter().map(|(code, v)| (Code::new(code), *v)).collect(),
        }
    }

    fn n(x: f64) -> Value {
        Value::Number(x)
    }

    const GONE: Value = Value::Absent(AbsentReason::NotAvailable);

    #[test]
    fn hours_ending_is_oldest_first_and_hour_aligned() {
        let cases = [
            ("2026-11-27T14:00:00Z", 3, vec!["2026-11-27T12:00:00Z", "2026-11-27T13:00:00Z", "2026-11-27T14:00:00Z"]),
            ("2026-11-27T14:35:10Z", 2, vec!["2026-11-27T13:00:00Z", "2026-11-27T14:00:00Z"]),
            ("2026-11-28T00:59:59.999Z", 2, vec!["2026-11-27T23:00:00Z", "2026-11-28T00:00:00Z"]),
            ("2026-11-27T14:00:00Z", 1, vec!["2026-11-27T14:00:00Z"]),
            ("2026-11-27T14:00:00Z", 0, vec![]),
        ];
        for (to, hours, expected) in cases {
            let got: Vec<String> =
                hours_ending(Timestamp::parse_rfc3339(to).unwrap(), hours).iter().map(|p| p.to_string()).collect();
            assert_eq!(got, expected, "{to} x {hours}");
        }
        let day = hours_ending(t(), 72);
        assert_eq!(day.len(), 72);
        assert!(day.iter().all(|p| p.is_hour_aligned()));
        assert!(day.windows(2).all(|w| w[1] == w[0].add_hours(1)));
    }

    /// What a test expects of one hour: (reported, revision, value, corrections, change).
    type Row = (bool, Option<u32>, Option<Value>, u32, Option<f64>);

    #[test]
    fn provider_hours_merge_revisions_and_measure_change() {
        const NOTHING: Row = (false, None, None, 0, None);
        let cases: Vec<(&str, &str, Vec<PeriodRevision>, [Row; 3])> = vec![
            (
                "the latest revision wins, whatever the order, and every revision beyond the first is a correction",
                OCCUPIED,
                vec![
                    rev(0, 1, &[(OCCUPIED, n(10.0))]),
                    rev(0, 3, &[(OCCUPIED, n(12.0))]),
                    rev(0, 2, &[(OCCUPIED, n(11.0))]),
                ],
                [NOTHING, NOTHING, (true, Some(3), Some(n(12.0)), 2, None)],
            ),
            (
                "a partial correction keeps the earlier value of a metric it omits",
                OCCUPIED,
                vec![rev(0, 1, &[(OPEN, n(20.0)), (OCCUPIED, n(10.0))]), rev(0, 2, &[(OPEN, n(22.0))])],
                [NOTHING, NOTHING, (true, Some(1), Some(n(10.0)), 1, None)],
            ),
            (
                "the same correction, seen from the metric it carries",
                OPEN,
                vec![rev(0, 1, &[(OPEN, n(20.0)), (OCCUPIED, n(10.0))]), rev(0, 2, &[(OPEN, n(22.0))])],
                [NOTHING, NOTHING, (true, Some(2), Some(n(22.0)), 1, None)],
            ),
            (
                "a correction may make a number absent",
                OCCUPIED,
                vec![rev(0, 1, &[(OCCUPIED, n(10.0))]), rev(0, 2, &[(OCCUPIED, GONE)])],
                [NOTHING, NOTHING, (true, Some(2), Some(GONE), 1, None)],
            ),
            (
                "a report that does not carry the metric still counts as reported",
                OCCUPIED,
                vec![rev(0, 1, &[(OPEN, n(20.0))])],
                [NOTHING, NOTHING, (true, None, None, 0, None)],
            ),
            (
                "a repeated revision is one revision, and its first copy is the one stored",
                OCCUPIED,
                vec![rev(0, 1, &[(OCCUPIED, n(10.0))]), rev(0, 1, &[(OCCUPIED, n(99.0))])],
                [NOTHING, NOTHING, (true, Some(1), Some(n(10.0)), 0, None)],
            ),
            (
                "change from hour to hour",
                OCCUPIED,
                vec![
                    rev(-2, 1, &[(OCCUPIED, n(10.0))]),
                    rev(-1, 1, &[(OCCUPIED, n(12.0))]),
                    rev(0, 1, &[(OCCUPIED, n(9.0))]),
                ],
                [
                    (true, Some(1), Some(n(10.0)), 0, None),
                    (true, Some(1), Some(n(12.0)), 0, Some(2.0)),
                    (true, Some(1), Some(n(9.0)), 0, Some(-3.0)),
                ],
            ),
            (
                "no change into or out of an absent value",
                OCCUPIED,
                vec![
                    rev(-2, 1, &[(OCCUPIED, n(10.0))]),
                    rev(-1, 1, &[(OCCUPIED, GONE)]),
                    rev(0, 1, &[(OCCUPIED, n(9.0))]),
                ],
                [
                    (true, Some(1), Some(n(10.0)), 0, None),
                    (true, Some(1), Some(GONE), 0, None),
                    (true, Some(1), Some(n(9.0)), 0, None),
                ],
            ),
            (
                "hours without a report have no value and no change, nor does the hour after them",
                OCCUPIED,
                vec![rev(-2, 1, &[(OCCUPIED, n(10.0))]), rev(0, 1, &[(OCCUPIED, n(9.0))])],
                [(true, Some(1), Some(n(10.0)), 0, None), NOTHING, (true, Some(1), Some(n(9.0)), 0, None)],
            ),
            (
                "records outside the range are ignored, except the hour before the first, for its change",
                OCCUPIED,
                vec![
                    rev(-4, 1, &[(OCCUPIED, n(1.0))]),
                    rev(-3, 1, &[(OCCUPIED, n(8.0))]),
                    rev(-3, 2, &[(OCCUPIED, n(7.0))]),
                    rev(-2, 1, &[(OCCUPIED, n(10.0))]),
                    rev(1, 1, &[(OCCUPIED, n(50.0))]),
                ],
                [(true, Some(1), Some(n(10.0)), 0, Some(3.0)), NOTHING, NOTHING],
            ),
            ("no records at all", OCCUPIED, vec![], [NOTHING, NOTHING, NOTHING]),
        ];
        let periods = hours_ending(t(), 3);
        for (what, metric, records, expected) in cases {
            let hours = provider_hours(&Rules::demo(), &records, metric, &periods);
            assert_eq!(hours.iter().map(|h| h.period).collect::<Vec<_>>(), periods, "{what}");
            let got: Vec<Row> =
                hours.iter().map(|h| (h.reported, h.revision, h.value, h.corrections, h.change)).collect();
            assert_eq!(got, expected, "{what}");
        }
    }

    fn histories(entries: Vec<(&str, Vec<PeriodRevision>)>) -> BTreeMap<String, Vec<PeriodRevision>> {
        entries.into_iter().map(|(code, records)| (code.to_owned(), records)).collect()
    }

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    /// Occupancy recomputed from the counts: 100 * sum(occupied) / sum(open), over providers that gave both.
    fn occupancy(providers: &[(&str, &BTreeMap<Code, Value>)]) -> Option<f64> {
        let (mut occupied, mut open) = (0.0, 0.0);
        for (_, values) in providers {
            if let (Some(Value::Number(occ)), Some(Value::Number(op))) = (values.get(OCCUPIED), values.get(OPEN)) {
                occupied += occ;
                open += op;
            }
        }
        (open > 0.0).then(|| 100.0 * occupied / open)
    }

    /// The mistake `occupancy` avoids: the mean of each provider's own percentage.
    fn mean_of_percentages(providers: &[(&str, &BTreeMap<Code, Value>)]) -> Option<f64> {
        let percentages: Vec<f64> = providers
            .iter()
            .filter_map(|(_, values)| match (values.get(OCCUPIED), values.get(OPEN)) {
                (Some(Value::Number(occ)), Some(Value::Number(op))) if *op > 0.0 => Some(100.0 * occ / op),
                _ => None,
            })
            .collect();
        (!percentages.is_empty()).then(|| percentages.iter().sum::<f64>() / percentages.len() as f64)
    }

    #[test]
    fn scope_hours_count_who_reported_and_ignore_the_unexpected() {
        let counts = |occ: f64| [(OPEN, n(100.0)), (OCCUPIED, n(occ))];
        let h = histories(vec![
            ("RAL", vec![rev(-1, 1, &counts(50.0)), rev(0, 1, &counts(59.0)), rev(0, 2, &counts(60.0))]),
            ("RJ7", vec![rev(0, 1, &counts(70.0))]),
            ("RKE", vec![rev(0, 1, &[(OPEN, n(100.0))]), rev(0, 2, &[(OPEN, n(100.0))]), rev(0, 3, &counts(80.0))]),
            // Not in the scope: its reports must not count towards any hour, nor reach the rollup.
            ("RM1", vec![rev(-2, 1, &counts(99.0)), rev(0, 1, &counts(99.0)), rev(0, 2, &counts(99.0))]),
        ]);
        let expected = codes(&["RAL", "RJ7", "RKE"]);
        let calls = Cell::new(0);
        let hours = scope_hours(&Rules::demo(), &h, &expected, &hours_ending(t(), 3), |providers| {
            calls.set(calls.get() + 1);
            assert!(providers.iter().all(|(code, _)| *code != "RM1"), "RM1 is not expected");
            assert!(providers.windows(2).all(|w| w[0].0 < w[1].0), "providers come sorted by code");
            occupancy(providers)
        });
        // (reported, completeness, corrections, value, change)
        type ScopeRow = (Vec<String>, f64, u32, Option<f64>, Option<f64>);
        let rows: Vec<ScopeRow> =
            hours.iter().map(|h| (h.reported.clone(), h.completeness, h.corrections, h.value, h.change)).collect();
        assert_eq!(
            rows,
            vec![
                (vec![], 0.0, 0, None, None),
                (codes(&["RAL"]), 1.0 / 3.0, 0, Some(50.0), None),
                // Corrections at T: one from RAL, two from RKE (and RM1's do not count).
                (codes(&["RAL", "RJ7", "RKE"]), 1.0, 3, Some(70.0), Some(20.0)),
            ]
        );
        assert!(hours.iter().all(|h| h.expected == 3));
        assert_eq!(calls.get(), 2, "the rollup runs once per hour that someone reported, and never for empty hours");
    }

    #[test]
    fn scope_hours_hand_the_rollup_merged_values_so_ratios_are_recomputed() {
        // RAL is nearly full on a small ward; its correction at T restates occupied only, so open must survive
        // from revision 1. RJ7 is half full on a big one.
        let h = histories(vec![
            ("RAL", vec![rev(0, 1, &[(OPEN, n(10.0)), (OCCUPIED, n(5.0))]), rev(0, 2, &[(OCCUPIED, n(9.0))])]),
            ("RJ7", vec![rev(0, 1, &[(OPEN, n(90.0)), (OCCUPIED, n(45.0))])]),
        ]);
        let expected = codes(&["RAL", "RJ7"]);
        let periods = [t()];
        let seen = std::cell::RefCell::new(Vec::new());
        let ratio = scope_hours(&Rules::demo(), &h, &expected, &periods, |providers| {
            seen.borrow_mut().extend(providers.iter().map(|(code, values)| (code.to_string(), (*values).clone())));
            occupancy(providers)
        });
        let merged_ral: BTreeMap<Code, Value> = [(Code::new(OPEN), n(10.0)), (Code::new(OCCUPIED), n(9.0))].into();
        assert_eq!(seen.borrow()[0], ("RAL".to_owned(), merged_ral));
        // 100 * (9 + 45) / (10 + 90) = 54, where the mean of 90 % and 50 % would say 70.
        assert_eq!(ratio[0].value, Some(54.0));
        assert_eq!(ratio[0].corrections, 1);
        let averaged = scope_hours(&Rules::demo(), &h, &expected, &periods, mean_of_percentages);
        assert_eq!(averaged[0].value, Some(70.0));
    }

    #[test]
    fn scope_change_reads_the_hour_before_the_range() {
        let h = histories(vec![(
            "RAL",
            vec![
                rev(-2, 1, &[(OPEN, n(10.0)), (OCCUPIED, n(4.0))]),
                rev(-1, 1, &[(OPEN, n(10.0)), (OCCUPIED, n(5.0))]),
                rev(0, 1, &[(OPEN, n(10.0)), (OCCUPIED, GONE)]),
                rev(1, 1, &[(OPEN, n(10.0)), (OCCUPIED, n(1.0))]),
            ],
        )]);
        let hours = scope_hours(&Rules::demo(), &h, &codes(&["RAL"]), &hours_ending(t(), 2), occupancy);
        let got: Vec<(Option<f64>, Option<f64>)> = hours.iter().map(|h| (h.value, h.change)).collect();
        // T-1 changes from T-2 (outside the range); at T occupied is absent, so the rollup has no value.
        assert_eq!(got, vec![(Some(50.0), Some(10.0)), (None, None)]);
    }

    #[test]
    fn scope_with_no_expected_providers_is_empty_not_a_division_by_zero() {
        let h = histories(vec![("RAL", vec![rev(0, 1, &[(OPEN, n(10.0))])])]);
        let hours = scope_hours(&Rules::demo(), &h, &[], &[t()], |_| panic!("nobody in the scope reported"));
        assert_eq!(
            hours,
            vec![ScopeHour {
                period: t(),
                value: None,
                change: None,
                reported: vec![],
                expected: 0,
                completeness: 0.0,
                corrections: 0,
            }]
        );
    }

    /// By site: each site's revisions merge apart (two sites' revision 1 are both kept), then the sites roll up by
    /// the metric's rule; what no site reports comes from the provider as a whole.
    #[test]
    fn sites_merge_apart_then_roll_up() {
        let at = |site: Option<&str>, revision: u32, values: &[(&str, Value)]| PeriodRevision {
            site: site.map(str::to_owned),
            ..rev(0, revision, values)
        };
        let records = vec![
            at(None, 1, &[(OPEN, n(99.0)), ("ed.over_12h", n(4.0))]),
            at(Some("RJ701"), 1, &[(OPEN, n(20.0))]),
            at(Some("RJ731"), 1, &[(OPEN, n(12.0))]),
            at(Some("RJ731"), 2, &[(OPEN, n(13.0))]),
        ];
        let rules = Rules::demo();
        let open = provider_hours(&rules, &records, OPEN, &[t()]);
        assert_eq!((open[0].value, open[0].revision, open[0].corrections), (Some(n(33.0)), Some(2), 1));
        let ed = provider_hours(&rules, &records, "ed.over_12h", &[t()]);
        assert_eq!(ed[0].value, Some(n(4.0)), "the whole's own where no site reports it");
    }
}
