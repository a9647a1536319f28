//! OPEL levels computed from a table-driven framework, with the reasons for each level.
//!
//! OPEL (Operational Pressures Escalation Levels) is NHS England's 1..=4 escalation scale. Providers declare a level
//! (the `opel.level` metric); sitrep also computes one so the two can be compared. The scoring rules are data, a
//! [`Framework`] parsed from TOML, because the national framework changes from year to year and a rebuild should not
//! be needed to follow it. Every computed level is an [`Assessment`] that says which parameter scored what, so
//! nobody has to trust an unexplained number. The shipped [`EXAMPLE_FRAMEWORK`] is an illustration to be replaced
//! with the current national framework, and says so.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// An example framework, clearly labelled as such (`example = true`): not the national OPEL framework.
pub const EXAMPLE_FRAMEWORK: &str = include_str!("../data/opel.example.toml");

pub fn example_framework() -> Framework {
    Framework::from_toml("built-in example OPEL framework", EXAMPLE_FRAMEWORK)
        .expect("the built-in example OPEL framework is valid (checked by tests)")
}

/// The rules that turn a provider's current values into an OPEL level.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// E.g. "Example OPEL framework (replace with the current national framework)".
    pub name: String,
    /// The framework year, e.g. "2024/25".
    pub year: String,
    /// True while the framework is an illustration rather than the national framework.
    #[serde(default)]
    pub example: bool,
    /// Fewest parameters that must have a value for a level to be computed at all.
    pub min_parameters: usize,
    #[serde(rename = "parameter")]
    pub parameters: Vec<Parameter>,
    #[serde(rename = "level")]
    pub levels: Vec<LevelBand>,
}

/// One scored measure of pressure.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Short id, e.g. "ga_occupancy". (Shared texts: every assessment names its parameters, and assessments are
    /// copied with the states and events that carry them.)
    pub code: Arc<str>,
    /// For people, e.g. "G&A bed occupancy".
    pub label: Arc<str>,
    /// The catalogue code of the metric whose value is scored, e.g. "beds.ga_adult.occupancy".
    pub metric: Arc<str>,
    /// Multiplies the points; above 0.
    #[serde(default = "one")]
    pub weight: f64,
    pub direction: Direction,
    /// Thresholds, ascending for higher_is_worse, descending for lower_is_worse. Points = 1 + how many thresholds
    /// the value reaches (>= for higher_is_worse, <= for lower_is_worse). So with 3 thresholds points are 1..=4.
    pub thresholds: Vec<f64>,
}

fn one() -> f64 {
    1.0
}

/// Which way a parameter's value moves as pressure rises: the catalogue's one definition, as for RAG ratings.
pub use crate::catalogue::Direction;

/// A level applies when the percent score is at least `min_percent` (and below the next band's).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelBand {
    pub level: u32,
    pub min_percent: f64,
}

impl Parameter {
    fn max_points(&self) -> u32 {
        1 + self.thresholds.len() as u32
    }

    fn points(&self, value: f64) -> u32 {
        let reached = self
            .thresholds
            .iter()
            .filter(|&&t| match self.direction {
                Direction::HigherIsWorse => value >= t,
                Direction::LowerIsWorse => value <= t,
            })
            .count();
        1 + reached as u32
    }
}

impl Framework {
    /// Parses a framework from TOML text and checks it is self-consistent; `what` names the source in errors.
    ///
    /// Metric codes are not checked here, since that needs the deployment's catalogue: call [`Framework::check`]
    /// with it as well.
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let framework: Framework =
            toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        framework.check(what, |_| true)?;
        Ok(framework)
    }

    /// Checks self-consistency and that every parameter's metric is known (`known` says whether a metric code exists).
    pub fn check(&self, what: &str, known: impl Fn(&str) -> bool) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { what: what.to_owned(), message });
        if self.parameters.is_empty() {
            return invalid("the framework has no parameters; it needs at least one [[parameter]]".to_owned());
        }
        if self.levels.is_empty() {
            return invalid("the framework has no levels; it needs at least one [[level]]".to_owned());
        }
        for (i, p) in self.parameters.iter().enumerate() {
            let code = &p.code;
            if code.is_empty() || code.chars().any(|c| c.is_whitespace() || c == '"') {
                return invalid(format!("parameter code {code:?} must be non-empty without spaces or quotes"));
            }
            if self.parameters[..i].iter().any(|q| q.code == *code) {
                return invalid(format!("parameter {code} is defined twice"));
            }
            if !known(&p.metric) {
                return invalid(format!("parameter {code}: metric {} is not in the catalogue", p.metric));
            }
            if !(p.weight.is_finite() && p.weight > 0.0) {
                return invalid(format!("parameter {code}: weight {} must be finite and above 0", p.weight));
            }
            if p.thresholds.is_empty() {
                return invalid(format!("parameter {code}: thresholds must not be empty"));
            }
            if let Some(t) = p.thresholds.iter().find(|t| !t.is_finite()) {
                return invalid(format!("parameter {code}: threshold {t} must be finite"));
            }
            for pair in p.thresholds.windows(2) {
                let (order, ok) = match p.direction {
                    Direction::HigherIsWorse => ("ascending", pair[0] < pair[1]),
                    Direction::LowerIsWorse => ("descending", pair[0] > pair[1]),
                };
                if !ok {
                    return invalid(format!(
                        "parameter {code}: thresholds must be strictly {order} for {}, but {} is followed by {}",
                        p.direction.as_str(),
                        pair[0],
                        pair[1]
                    ));
                }
            }
        }
        let first = &self.levels[0];
        if first.min_percent != 0.0 {
            return invalid(format!(
                "level {}: the first band must have min_percent 0, not {}",
                first.level, first.min_percent
            ));
        }
        // A range test rather than two comparisons, so that a NaN min_percent fails it too.
        if let Some(band) = self.levels.iter().find(|b| !(0.0..=100.0).contains(&b.min_percent)) {
            return invalid(format!(
                "level {}: min_percent {} must be from 0 to 100, or the level can never apply",
                band.level, band.min_percent
            ));
        }
        for pair in self.levels.windows(2) {
            let (below, band) = (&pair[0], &pair[1]);
            if band.level <= below.level {
                return invalid(format!(
                    "level {}: levels must be strictly ascending, but it follows level {}",
                    band.level, below.level
                ));
            }
            if band.min_percent <= below.min_percent {
                return invalid(format!(
                    "level {}: min_percent must be strictly ascending, but {} follows level {}'s {}",
                    band.level, band.min_percent, below.level, below.min_percent
                ));
            }
        }
        let n = self.parameters.len();
        if !(1..=n).contains(&self.min_parameters) {
            return invalid(format!(
                "min_parameters {} must be between 1 and the number of parameters ({n})",
                self.min_parameters
            ));
        }
        Ok(())
    }

    /// Metric codes the framework reads.
    pub fn metrics(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|p| &*p.metric)
    }

    /// The computed level for a provider whose current numeric metric values are `values` (metric code -> number;
    /// absent metrics are simply not in the map). None when fewer than min_parameters parameters have a value.
    ///
    /// A value that is not finite (NaN, infinity) counts as no value: it cannot be a real reading, and scoring NaN
    /// would silently give it the fewest points.
    pub fn assess(&self, values: &BTreeMap<String, f64>) -> Option<Assessment> {
        self.assess_with(|metric| values.get(metric).copied())
    }

    /// [`Framework::assess`] with the figures looked up by `value`.
    pub fn assess_with(&self, value: impl Fn(&str) -> Option<f64>) -> Option<Assessment> {
        let mut scored = Vec::new();
        let mut missing = Vec::new();
        for p in &self.parameters {
            match value(&p.metric).filter(|v| v.is_finite()) {
                Some(value) => scored.push(Scored {
                    parameter: p.code.clone(),
                    label: p.label.clone(),
                    metric: p.metric.clone(),
                    value,
                    points: p.points(value),
                    max_points: p.max_points(),
                    weight: p.weight,
                }),
                None => missing.push(p.code.clone()),
            }
        }
        // The emptiness test only matters for a framework that skipped check() with min_parameters 0; without it
        // the percent would be 0/0.
        if scored.is_empty() || scored.len() < self.min_parameters {
            return None;
        }
        let score: f64 = scored.iter().map(|s| f64::from(s.points) * s.weight).sum();
        let max_score: f64 = scored.iter().map(|s| f64::from(s.max_points) * s.weight).sum();
        let percent = 100.0 * score / max_score;
        let level = self.level_for(percent)?;
        Some(Assessment { level, score, max_score, percent, scored, missing })
    }

    /// The highest band whose min_percent the percent reaches; always some band once check() has passed.
    fn level_for(&self, percent: f64) -> Option<u32> {
        self.levels.iter().rev().find(|b| b.min_percent <= percent).map(|b| b.level)
    }
}

/// A computed OPEL level with the scores behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub level: u32,
    /// Sum of points * weight over the parameters with a value.
    pub score: f64,
    /// Sum of max_points * weight over the same parameters.
    pub max_score: f64,
    /// 100 * score / max_score.
    pub percent: f64,
    /// In framework parameter order.
    pub scored: Vec<Scored>,
    /// Codes of the parameters with no value, in framework order.
    pub missing: Vec<Arc<str>>,
}

/// What one parameter contributed to an assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub parameter: Arc<str>,
    pub label: Arc<str>,
    pub metric: Arc<str>,
    pub value: f64,
    pub points: u32,
    pub max_points: u32,
    pub weight: f64,
}

impl Assessment {
    /// One sentence for people, e.g. "OPEL 3 (score 17 of 28, 60.7%): G&A bed occupancy 96 scored 3 of 4 (x2); ...;
    /// not scored (no value): nctr, staff_absence".
    ///
    /// The percent is rounded down to one decimal place so that it never appears to reach a band it does not:
    /// 59.96% rounded to nearest would read "60%" beside a level whose band starts at 60.
    pub fn explain(&self) -> String {
        // Pieces pushed one by one (with itoa for the integers): `write!` went through the formatting machinery for
        // every piece, and every event that changes a provider's OPEL assessment carries this sentence.
        let mut text = String::with_capacity(64 + 64 * self.scored.len());
        let mut int = itoa::Buffer::new();
        text.push_str("OPEL ");
        text.push_str(int.format(self.level));
        text.push_str(" (score ");
        Num(self.score).push_to(&mut text);
        text.push_str(" of ");
        Num(self.max_score).push_to(&mut text);
        text.push_str(", ");
        Num((self.percent * 10.0).floor() / 10.0).push_to(&mut text);
        text.push_str("%): ");
        for (i, s) in self.scored.iter().enumerate() {
            if i > 0 {
                text.push_str("; ");
            }
            text.push_str(&s.label);
            text.push(' ');
            Num(s.value).push_to(&mut text);
            text.push_str(" scored ");
            text.push_str(int.format(s.points));
            text.push_str(" of ");
            text.push_str(int.format(s.max_points));
            if s.weight != 1.0 {
                text.push_str(" (x");
                Num(s.weight).push_to(&mut text);
                text.push(')');
            }
        }
        if !self.missing.is_empty() {
            text.push_str("; not scored (no value): ");
            text.push_str(&self.missing.join(", "));
        }
        text
    }
}

/// A number as people write it: whole numbers without a decimal point, others to at most two decimal places.
/// Made from whole hundredths with integer formatting: `format!("{x:.2}")` takes the exact (slow) float path, and every event's OPEL explanation formats a
/// dozen numbers.
struct Num(f64);

impl Num {
    /// Appends the number to `out`.
    fn push_to(&self, out: &mut String) {
        let x = self.0;
        let hundredths = (x * 100.0).round();
        if !hundredths.is_finite() || hundredths.abs() >= 1e17 {
            let text = format!("{x:.2}");
            let text = text.trim_end_matches('0').trim_end_matches('.');
            out.push_str(if text == "-0" { "0" } else { text });
            return;
        }
        let h = hundredths as i64;
        let (whole, frac) = (h.unsigned_abs() / 100, h.unsigned_abs() % 100);
        if h < 0 {
            out.push('-');
        }
        out.push_str(itoa::Buffer::new().format(whole));
        match frac {
            0 => {}
            d if d % 10 == 0 => {
                out.push('.');
                out.push(char::from(b'0' + (d / 10) as u8));
            }
            d => {
                out.push('.');
                out.push(char::from(b'0' + (d / 10) as u8));
                out.push(char::from(b'0' + (d % 10) as u8));
            }
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        self.push_to(&mut text);
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        for (x, text) in [
            (0.0, "0"),
            (-0.0, "0"),
            (-0.001, "0"),
            (3.0, "3"),
            (91.47398843930635, "91.47"),
            (93.75, "93.75"),
            (6.5, "6.5"),
            (6.499, "6.5"),
            (0.05, "0.05"),
            (-1.5, "-1.5"),
            (-0.25, "-0.25"),
            (58.3, "58.3"),
            (1e20, "100000000000000000000"),
            // Halves round away from zero, as people round (format!("{:.2}") gave 0.12 for 0.125).
            (0.125, "0.13"),
            (-0.125, "-0.13"),
        ] {
            assert_eq!(Num(x).to_string(), text, "{x}");
        }
    }

    /// Five parameters p1..p5 on metrics m1..m5, thresholds [1, 2, 3], so a value v in 0..=3 scores v + 1 points out
    /// of 4; the example framework's bands.
    fn five() -> Framework {
        let mut text = String::from("name = \"t\"\nyear = \"t\"\nmin_parameters = 3\n");
        for i in 1..=5 {
            text.push_str(&format!(
                "[[parameter]]\ncode = \"p{i}\"\nlabel = \"P{i}\"\nmetric = \"m{i}\"\ndirection = \"higher_is_worse\"\nthresholds = [1, 2, 3]\n"
            ));
        }
        for (level, min) in [(1, 0), (2, 35), (3, 60), (4, 80)] {
            text.push_str(&format!("[[level]]\nlevel = {level}\nmin_percent = {min}\n"));
        }
        Framework::from_toml("test", &text).unwrap()
    }

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn points_at_and_either_side_of_each_boundary() {
        let higher = Parameter {
            code: "h".into(),
            label: "H".into(),
            metric: "m".into(),
            weight: 1.0,
            direction: Direction::HigherIsWorse,
            thresholds: vec![85.0, 92.0, 97.0],
        };
        let lower =
            Parameter { direction: Direction::LowerIsWorse, thresholds: vec![20.0, 10.0, 5.0], ..higher.clone() };
        let cases = [
            (&higher, -1.0, 1),
            (&higher, 84.9, 1),
            (&higher, 85.0, 2),
            (&higher, 85.1, 2),
            (&higher, 91.9, 2),
            (&higher, 92.0, 3),
            (&higher, 92.1, 3),
            (&higher, 96.9, 3),
            (&higher, 97.0, 4),
            (&higher, 97.1, 4),
            (&higher, 1e9, 4),
            (&lower, 1e9, 1),
            (&lower, 20.1, 1),
            (&lower, 20.0, 2),
            (&lower, 19.9, 2),
            (&lower, 10.1, 2),
            (&lower, 10.0, 3),
            (&lower, 9.9, 3),
            (&lower, 5.1, 3),
            (&lower, 5.0, 4),
            (&lower, 4.9, 4),
            (&lower, -1.0, 4),
        ];
        for (p, value, expected) in cases {
            assert_eq!(p.points(value), expected, "{:?} {value}", p.direction);
            assert_eq!(p.max_points(), 4);
        }
    }

    #[test]
    fn level_is_the_highest_band_reached() {
        let f = five();
        let cases =
            [(0.0, 1), (34.99, 1), (35.0, 2), (35.01, 2), (59.99, 2), (60.0, 3), (79.99, 3), (80.0, 4), (100.0, 4)];
        for (percent, level) in cases {
            assert_eq!(f.level_for(percent), Some(level), "{percent}%");
        }
        // The same boundaries reached through whole assessments: five parameters out of 4 each, so a total of s
        // points is 5 * s percent.
        let cases = [
            ([0.0, 0.0, 0.0, 0.0, 0.0], 5.0, 25.0, 1),
            ([1.0, 0.0, 0.0, 0.0, 0.0], 6.0, 30.0, 1),
            ([1.0, 1.0, 0.0, 0.0, 0.0], 7.0, 35.0, 2),
            ([2.0, 2.0, 1.0, 1.0, 0.0], 11.0, 55.0, 2),
            ([2.0, 2.0, 1.0, 1.0, 1.0], 12.0, 60.0, 3),
            ([3.0, 3.0, 2.0, 1.0, 1.0], 15.0, 75.0, 3),
            ([3.0, 3.0, 2.0, 2.0, 1.0], 16.0, 80.0, 4),
            ([3.0, 3.0, 3.0, 3.0, 3.0], 20.0, 100.0, 4),
        ];
        for (vs, score, percent, level) in cases {
            let map: BTreeMap<String, f64> = vs.iter().enumerate().map(|(i, &v)| (format!("m{}", i + 1), v)).collect();
            let a = f.assess(&map).unwrap();
            assert_eq!((a.score, a.max_score, a.percent, a.level), (score, 20.0, percent, level), "{vs:?}");
        }
    }

    #[test]
    fn no_level_below_min_parameters_and_missing_parameters_are_left_out() {
        let f = five();
        // Values given, then the expected score, maximum and missing parameters (None: no level at all).
        type Case<'a> = (&'a [(&'a str, f64)], Option<(f64, f64, &'a [&'a str])>);
        let cases: [Case<'_>; 6] = [
            (&[], None),
            (&[("m1", 3.0)], None),
            (&[("m1", 3.0), ("m5", 3.0)], None),
            // Metrics the framework does not read do not count towards min_parameters.
            (&[("m1", 3.0), ("m5", 3.0), ("other", 3.0)], None),
            // A value that is not a number is no value.
            (&[("m1", 3.0), ("m2", f64::NAN), ("m5", 3.0)], None),
            (&[("m1", 3.0), ("m3", 0.0), ("m5", 2.0)], Some((8.0, 12.0, &["p2", "p4"]))),
        ];
        for (pairs, expected) in cases {
            let got = f.assess(&values(pairs)).map(|a| {
                assert_eq!(a.scored.len() + a.missing.len(), 5);
                (a.score, a.max_score, a.missing)
            });
            let expected = expected.map(|(s, m, missing)| (s, m, missing.iter().map(|c| Arc::from(*c)).collect()));
            assert_eq!(got, expected, "{pairs:?}");
        }
    }

    #[test]
    fn weights_multiply_points_and_maximum() {
        let mut f = five();
        f.parameters[0].weight = 2.0;
        f.parameters[1].weight = 0.5;
        f.parameters[2].direction = Direction::LowerIsWorse;
        f.parameters[2].thresholds = vec![3.0, 2.0, 1.0];
        // p1: 4 points x2, p2: 1 point x0.5, p3 (lower is worse): value 2 reaches 3 and 2, so 3 points x1.
        let a = f.assess(&values(&[("m1", 5.0), ("m2", 0.0), ("m3", 2.0)])).unwrap();
        let points: Vec<(u32, f64)> = a.scored.iter().map(|s| (s.points, s.weight)).collect();
        assert_eq!(points, [(4, 2.0), (1, 0.5), (3, 1.0)]);
        assert_eq!((a.score, a.max_score), (8.0 + 0.5 + 3.0, 8.0 + 2.0 + 4.0));
        assert_eq!(a.level, 4, "{}% is in the 80% band", a.percent);
    }

    #[test]
    fn explain_names_every_parameter() {
        let f = example_framework();
        let a = f
            .assess(&values(&[
                ("beds.ga_adult.occupancy", 96.0),
                ("beds.cc_adult.occupancy", 85.0),
                ("ed.over_12h", 20.0),
                ("ambulance.handover_over_60", 0.0),
                ("ambulance.handover_mean_minutes", 47.5),
            ]))
            .unwrap();
        assert_eq!(
            a.explain(),
            "OPEL 3 (score 17 of 28, 60.7%): G&A bed occupancy 96 scored 3 of 4 (x2); \
             Critical care bed occupancy 85 scored 2 of 4 (x2); Patients in ED over 12 hours 20 scored 3 of 4; \
             Ambulance handovers over 60 minutes 0 scored 1 of 4; Mean ambulance handover time 47.5 scored 3 of 4; \
             not scored (no value): nctr, staff_absence"
        );
        // The assessment travels as JSON (to the wallboard, in events) and must come back whole.
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Assessment>(&json).unwrap(), a);
    }

    #[test]
    fn explain_never_rounds_up_into_a_band() {
        let a = Assessment {
            level: 2,
            score: 59.96,
            max_score: 100.0,
            percent: 59.96,
            scored: vec![],
            missing: vec!["x".into()],
        };
        assert!(a.explain().starts_with("OPEL 2 (score 59.96 of 100, 59.9%): "), "{}", a.explain());
    }

    #[test]
    fn check_rejects_inconsistent_frameworks() {
        type Break = fn(&mut Framework);
        let cases: [(Break, &str); 18] = [
            (|f| f.parameters.clear(), "no parameters"),
            (|f| f.levels.clear(), "no levels"),
            (|f| f.parameters[1].code = "p1".into(), "parameter p1 is defined twice"),
            (|f| f.parameters[1].code = "p 2".into(), "parameter code \"p 2\" must be non-empty without spaces"),
            (|f| f.parameters[1].metric = "nope".into(), "parameter p2: metric nope is not in the catalogue"),
            (|f| f.parameters[1].weight = 0.0, "parameter p2: weight 0 must be finite and above 0"),
            (|f| f.parameters[1].weight = -1.0, "parameter p2: weight -1 must be finite and above 0"),
            (|f| f.parameters[1].weight = f64::INFINITY, "parameter p2: weight inf must be finite and above 0"),
            (|f| f.parameters[1].thresholds.clear(), "parameter p2: thresholds must not be empty"),
            (|f| f.parameters[1].thresholds[2] = f64::NAN, "parameter p2: threshold NaN must be finite"),
            (
                |f| f.parameters[1].thresholds = vec![1.0, 2.0, 2.0],
                "parameter p2: thresholds must be strictly ascending for higher_is_worse, but 2 is followed by 2",
            ),
            (
                |f| f.parameters[1].direction = Direction::LowerIsWorse,
                "parameter p2: thresholds must be strictly descending for lower_is_worse, but 1 is followed by 2",
            ),
            (|f| f.levels[0].min_percent = 5.0, "level 1: the first band must have min_percent 0, not 5"),
            (|f| f.levels[2].level = 2, "level 2: levels must be strictly ascending, but it follows level 2"),
            (
                |f| f.levels[2].min_percent = 35.0,
                "level 3: min_percent must be strictly ascending, but 35 follows level 2's 35",
            ),
            (|f| f.levels[3].min_percent = 120.0, "level 4: min_percent 120 must be from 0 to 100"),
            (|f| f.levels[3].min_percent = f64::NAN, "level 4: min_percent NaN must be from 0 to 100"),
            (|f| f.min_parameters = 0, "min_parameters 0 must be between 1 and the number of parameters (5)"),
        ];
        let known = |m: &str| m.starts_with('m');
        assert!(five().check("test", known).is_ok());
        for (spoil, expected) in cases {
            let mut f = five();
            spoil(&mut f);
            let err = f.check("test", known).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
            let err = err.to_string();
            assert!(err.starts_with("test: ") && err.contains(expected), "{err:?} should contain {expected:?}");
        }
        let mut f = five();
        f.min_parameters = 6;
        let err = f.check("test", known).unwrap_err().to_string();
        assert!(err.contains("min_parameters 6 must be between 1 and the number of parameters (5)"), "{err}");
    }

    #[test]
    fn from_toml_rejects_unknown_fields_and_runs_the_checks() {
        let cases = [
            (EXAMPLE_FRAMEWORK.replace("example = true", "colour = 1"), "unknown field `colour`"),
            (EXAMPLE_FRAMEWORK.replace("weight = 2", "wieght = 2"), "unknown field `wieght`"),
            (
                EXAMPLE_FRAMEWORK.replace("direction = \"higher_is_worse\"", "direction = \"up\""),
                "unknown variant `up`",
            ),
            (EXAMPLE_FRAMEWORK.replace("min_parameters = 3", "min_parameters = 8"), "min_parameters 8"),
            (
                EXAMPLE_FRAMEWORK.replace("[85, 92, 97]", "[85, 97, 92]"),
                "parameter ga_occupancy: thresholds must be strictly ascending",
            ),
        ];
        for (text, expected) in cases {
            let err = Framework::from_toml("test", &text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn example_framework_is_labelled_and_consistent() {
        let f = example_framework();
        assert!(f.example);
        assert!(f.name.contains("replace with the current national framework"), "{}", f.name);
        assert!(EXAMPLE_FRAMEWORK.starts_with("# EXAMPLE OPEL framework. This is NOT the national framework"));
        // Written out rather than taken from the framework, so a changed metric code shows up here. Some of these
        // are derived metrics that the catalogue may not have yet, which is why `known` is this list.
        let expected = [
            "beds.ga_adult.occupancy",
            "beds.cc_adult.occupancy",
            "ed.over_12h",
            "ambulance.handover_over_60",
            "ambulance.handover_mean_minutes",
            "flow.no_criteria_to_reside",
            "staff.absence_percent",
        ];
        assert_eq!(f.metrics().collect::<Vec<_>>(), expected);
        f.check("example", |m| expected.contains(&m)).unwrap();
        assert_eq!((f.min_parameters, f.parameters.len()), (3, 7));
        let bands: Vec<(u32, f64)> = f.levels.iter().map(|b| (b.level, b.min_percent)).collect();
        assert_eq!(bands, [(1, 0.0), (2, 35.0), (3, 60.0), (4, 80.0)]);
        // Everything at its worst is OPEL 4; everything at its best is OPEL 1.
        let worst: BTreeMap<String, f64> = expected.iter().map(|m| (m.to_string(), 1e6)).collect();
        let best: BTreeMap<String, f64> = expected.iter().map(|m| (m.to_string(), 0.0)).collect();
        assert_eq!(f.assess(&worst).map(|a| (a.level, a.percent)), Some((4, 100.0)));
        assert_eq!(f.assess(&best).map(|a| (a.level, a.percent)), Some((1, 25.0)));
    }
}
