//! [`Rules`]: everything the derived picture depends on, checked together once at start-up.
//!
//! The catalogue says how metrics roll up and where their RAG thresholds lie, the directory says who belongs to
//! which system and region and which provider overrides which threshold, the OPEL framework says how a level is
//! computed, and the staleness defaults say when a quiet provider counts as stale. Each is parsed on its own; only
//! here can they be checked against each other (an override naming a metric the catalogue does not rate, a
//! framework reading a metric that does not exist), so a bad combination fails at start-up naming the culprit.

use std::sync::Arc;
use std::time::Duration;

use crate::catalogue::RagRule;
use crate::directory::{Level, Scope};
use crate::opel::Framework;
use crate::{Catalogue, Code, ConfigError, Directory};

/// The longest cadence a provider may have (the directory's `cadence`, the configuration's `staleness.cadence`):
/// 31 days. Longer ones are refused at start, naming the key, so no staleness arithmetic can overflow.
pub const MAX_CADENCE: Duration = Duration::from_secs(31 * 24 * 3600);
/// The longest grace on top of a cadence: 31 days.
pub const MAX_GRACE: Duration = Duration::from_secs(31 * 24 * 3600);

/// Checks a cadence (`key` names it in the message): above zero and at most [`MAX_CADENCE`].
pub fn check_cadence(key: &str, text: &str, d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err(format!("{key} must be above zero (rule: above_zero)"));
    }
    if d > MAX_CADENCE {
        return Err(format!("{key} {text:?} is longer than {} days (rule: at_most)", MAX_CADENCE.as_secs() / 86400));
    }
    Ok(())
}

/// Checks a grace (`key` names it in the message): at most [`MAX_GRACE`].
pub fn check_grace(key: &str, text: &str, d: Duration) -> Result<(), String> {
    if d > MAX_GRACE {
        return Err(format!("{key} {text:?} is longer than {} days (rule: at_most)", MAX_GRACE.as_secs() / 86400));
    }
    Ok(())
}

/// When a provider that has gone quiet counts as stale, unless the directory says otherwise for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staleness {
    /// How often providers are expected to report.
    pub cadence: Duration,
    /// How late a report may be on top of that.
    pub grace: Duration,
    /// How much older than a provider's latest period a reading may be and still count in its figures, ratings
    /// and its scopes' totals (a metric it stopped sending is shown with its age, and counted nowhere).
    pub value_max_age: Duration,
}

impl Default for Staleness {
    fn default() -> Self {
        Staleness {
            cadence: Duration::from_secs(3600),
            grace: Duration::from_secs(15 * 60),
            value_max_age: Duration::from_secs(2 * 3600),
        }
    }
}

/// Catalogue, directory, OPEL framework and staleness, consistent with each other. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Rules {
    pub catalogue: Arc<Catalogue>,
    pub directory: Arc<Directory>,
    /// The framework levels are computed by; `None` computes no level.
    pub opel: Option<Arc<Framework>>,
    /// The CRITCON rule table scopes' critical care levels are derived by; `None` derives none. Set with
    /// [`Rules::with_critcon`]; the picture derives scopes' levels with it ([`crate::Picture::critcon`]).
    pub critcon: Option<Arc<crate::critcon::Table>>,
    pub staleness: Staleness,
    /// Per provider: (cadence, grace) after applying the directory's overrides.
    stale_after: std::collections::BTreeMap<String, (Duration, Duration)>,
    /// How many providers each scope has (asked for by every rollup of every event).
    sizes: std::collections::BTreeMap<Scope, u32>,
    /// Positions of metrics and scopes, for the picture's running totals.
    index: Arc<Index>,
}

/// Positions of reported metrics, derived metrics and scopes, so that running totals are vectors indexed by
/// position rather than maps keyed by text. Built once with the [`Rules`]; every replica builds the same one.
#[derive(Debug, Default)]
pub struct Index {
    /// Reported metric codes, in catalogue (code) order.
    pub metrics: Vec<Code>,
    /// Derived metric codes, in code order.
    pub derived: Vec<Code>,
    /// Each derived metric's two inputs, as reported metric positions.
    pub inputs: Vec<[usize; 2]>,
    /// For each reported metric, the derived metrics that read it.
    pub feeds: Vec<Vec<usize>>,
    /// Whether each reported metric rolls up by its maximum.
    pub by_max: Vec<bool>,
    /// Each reported metric's rollup rule, the metric it is bounded by, and its RAG thresholds.
    pub metric_rules: Vec<(crate::catalogue::Rollup, Option<usize>, Option<RagRule>)>,
    /// Each derived metric's formula and RAG thresholds.
    pub derived_rules: Vec<(crate::catalogue::Formula, Option<RagRule>)>,
    /// Every metric, reported and derived, in code order, with its position. A metric's place in this list is its
    /// ordinal: per-provider figures are vectors in this order.
    pub all: Vec<(Code, Position)>,
    ordinals: rustc_hash::FxHashMap<String, usize>,
    /// The same, found by a code's pointer (no hashing of its text).
    code_ordinals: rustc_hash::FxHashMap<usize, usize>,
    /// The ordinal of each reported metric, and of each derived metric.
    pub metric_ord: Vec<usize>,
    pub derived_ord: Vec<usize>,
    /// Every scope: systems, regions, then the nation (as [`Rules::scopes`]).
    pub scopes: Vec<Scope>,
    scope_pos: rustc_hash::FxHashMap<Scope, usize>,
    /// For each provider, the positions of its system, region and nation.
    provider_scopes: rustc_hash::FxHashMap<String, Vec<usize>>,
}

/// Where a metric's totals are: a reported metric's, or a derived metric's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    Metric(usize),
    Derived(usize),
}

impl Index {
    /// The position of a reported or derived metric.
    pub fn position(&self, code: &str) -> Option<Position> {
        Some(self.all[self.ordinal(code)?].1)
    }

    /// [`Index::position`] of an interned code.
    pub fn position_of(&self, code: Code) -> Option<Position> {
        Some(self.all[self.ord(code)?].1)
    }

    /// The ordinal of a reported or derived metric (its place in [`Index::all`]).
    pub fn ordinal(&self, code: &str) -> Option<usize> {
        self.ordinals.get(code).copied()
    }

    /// [`Index::ordinal`] of an interned code.
    pub fn ord(&self, code: Code) -> Option<usize> {
        self.code_ordinals.get(&code.id()).copied()
    }

    /// The ordinal of the metric at `position`.
    pub fn ordinal_of(&self, position: Position) -> usize {
        match position {
            Position::Metric(m) => self.metric_ord[m],
            Position::Derived(d) => self.derived_ord[d],
        }
    }

    /// The code of the metric at `position`.
    pub fn code(&self, position: Position) -> Code {
        match position {
            Position::Metric(m) => self.metrics[m],
            Position::Derived(d) => self.derived[d],
        }
    }

    /// The position of a scope.
    pub fn scope(&self, scope: &Scope) -> Option<usize> {
        self.scope_pos.get(scope).copied()
    }

    /// The positions of the scopes a provider rolls up into (none for a provider not in the directory).
    pub fn scopes_of(&self, provider: &str) -> &[usize] {
        self.provider_scopes.get(provider).map_or(&[], Vec::as_slice)
    }
}

impl Rules {
    /// Checks the parts against each other; errors name the provider, metric or parameter at fault.
    pub fn new(
        catalogue: Arc<Catalogue>,
        directory: Arc<Directory>,
        opel: Option<Arc<Framework>>,
        staleness: Staleness,
    ) -> Result<Self, ConfigError> {
        let invalid = |what: &str, message: String| ConfigError::Invalid { what: what.to_owned(), message };
        let mut stale_after = std::collections::BTreeMap::new();
        for p in directory.providers() {
            let duration = |field: &str, text: &Option<String>, default: Duration| match text {
                None => Ok(default),
                Some(t) => humantime::parse_duration(t).map_err(|e| {
                    invalid(
                        "directory",
                        format!("provider {}: {field} {t:?} is not a duration like \"1h\": {e}", p.code),
                    )
                }),
            };
            let cadence = duration("cadence", &p.cadence, staleness.cadence)?;
            let grace = duration("grace", &p.grace, staleness.grace)?;
            let text = |t: &Option<String>, d: Duration| {
                t.clone().unwrap_or_else(|| humantime::format_duration(d).to_string())
            };
            check_cadence("cadence", &text(&p.cadence, cadence), cadence)
                .and_then(|()| check_grace("grace", &text(&p.grace, grace), grace))
                .map_err(|m| invalid("directory", format!("provider {}: {m}", p.code)))?;
            stale_after.insert(p.code.clone(), (cadence, grace));
            for (metric, o) in &p.rag {
                let Some(base) = catalogue.rag_rule(metric) else {
                    return Err(invalid(
                        "directory",
                        format!("provider {}: rag override for {metric:?}, which the catalogue does not rate", p.code),
                    ));
                };
                if let Some(problem) = merge(base, o).problem() {
                    return Err(invalid("directory", format!("provider {}: {metric}: {problem}", p.code)));
                }
            }
        }
        if let Some(f) = &opel {
            f.check("opel framework", |code| catalogue.knows(code))?;
        }
        let mut rules = Rules {
            catalogue,
            directory,
            opel,
            critcon: None,
            staleness,
            stale_after,
            sizes: Default::default(),
            index: Default::default(),
        };
        rules.sizes = rules
            .scopes()
            .into_iter()
            .map(|scope| {
                let n = rules.directory.providers().filter(|p| rules.in_scope(&p.code, &scope)).count() as u32;
                (scope, n)
            })
            .collect();
        rules.index = Arc::new(rules.build_index());
        Ok(rules)
    }

    /// These rules with a CRITCON rule table (or none). A table needs the catalogue's `critcon.level`, the level
    /// units declare, as a level up to [`crate::critcon::UNIT_MAX`]: without it no scope could ever have a level.
    pub fn with_critcon(mut self, table: Option<Arc<crate::critcon::Table>>) -> Result<Self, ConfigError> {
        if let Some(t) = &table {
            t.check("critcon rules")?;
            let metric = crate::catalogue::CRITCON_METRIC;
            let fits = self.catalogue.get(metric).is_some_and(|m| {
                m.kind == crate::Kind::Level && m.max.is_some_and(|max| max <= crate::critcon::UNIT_MAX)
            });
            if !fits {
                let message = format!(
                    "the CRITCON rules need the metric {metric} in the catalogue {}, as a level of at most {}",
                    self.catalogue.profile,
                    crate::critcon::UNIT_MAX
                );
                return Err(ConfigError::Invalid { what: "critcon rules".into(), message });
            }
        }
        self.critcon = table;
        Ok(self)
    }

    fn build_index(&self) -> Index {
        let c = &self.catalogue;
        let metrics: Vec<Code> = c.metrics().map(|m| Code::new(&m.code)).collect();
        let metric_pos: rustc_hash::FxHashMap<String, usize> =
            metrics.iter().enumerate().map(|(i, m)| (m.to_string(), i)).collect();
        let derived: Vec<Code> = c.derived_metrics().map(|d| Code::new(&d.code)).collect();
        let mut feeds = vec![Vec::new(); metrics.len()];
        let inputs: Vec<[usize; 2]> = c
            .derived_metrics()
            .enumerate()
            .map(|(i, d)| {
                // The catalogue checks that a derived metric reads two reported metrics.
                let [a, b] = d.formula.inputs().map(|code| metric_pos[code]);
                feeds[a].push(i);
                if b != a {
                    feeds[b].push(i);
                }
                [a, b]
            })
            .collect();
        let by_max = c.metrics().map(|m| m.rollup == crate::catalogue::Rollup::Max).collect();
        let metric_rules =
            c.metrics().map(|m| (m.rollup, m.at_most.as_deref().map(|b| metric_pos[b]), m.rag.clone())).collect();
        let derived_rules = c.derived_metrics().map(|d| (d.formula.clone(), d.rag.clone())).collect();
        let mut all: Vec<(Code, Position)> = metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, Position::Metric(i)))
            .chain(derived.iter().enumerate().map(|(i, d)| (*d, Position::Derived(i))))
            .collect();
        all.sort();
        let ordinals: rustc_hash::FxHashMap<String, usize> =
            all.iter().enumerate().map(|(i, (code, _))| (code.to_string(), i)).collect();
        let code_ordinals = all.iter().enumerate().map(|(i, (code, _))| (code.id(), i)).collect();
        let metric_ord = metrics.iter().map(|m| ordinals[m.as_str()]).collect();
        let derived_ord = derived.iter().map(|d| ordinals[d.as_str()]).collect();
        let scopes = self.scopes();
        let scope_pos: rustc_hash::FxHashMap<Scope, usize> =
            scopes.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        let provider_scopes = self
            .directory
            .providers()
            .map(|p| (p.code.clone(), self.scopes_of(&p.code).iter().map(|s| scope_pos[s]).collect()))
            .collect();
        Index {
            metrics,
            derived,
            inputs,
            feeds,
            by_max,
            metric_rules,
            derived_rules,
            all,
            ordinals,
            code_ordinals,
            metric_ord,
            derived_ord,
            scopes,
            scope_pos,
            provider_scopes,
        }
    }

    /// Positions of metrics and scopes.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The shipped catalogue and demo directory with the example OPEL framework, the example CRITCON rule and
    /// default staleness.
    pub fn demo() -> Self {
        Rules::new(
            Arc::new(crate::profile::nhs_england_catalogue()),
            Arc::new(crate::profile::demo_directory()),
            Some(Arc::new(crate::opel::example_framework())),
            Staleness::default(),
        )
        .and_then(|r| r.with_critcon(Some(Arc::new(crate::critcon::example_table()))))
        .expect("the shipped profile is consistent (checked by tests)")
    }

    /// The RAG thresholds for `metric`: the catalogue's, with `provider`'s overrides when given.
    pub fn rag_rule(&self, provider: Option<&str>, metric: &str) -> Option<RagRule> {
        let base = self.catalogue.rag_rule(metric)?;
        let o = provider.and_then(|p| self.directory.provider(p)).and_then(|p| p.rag.get(metric));
        Some(match o {
            Some(o) => merge(base, o),
            None => base.clone(),
        })
    }

    /// How long after its last report a provider becomes stale: its cadence plus its grace.
    pub fn stale_after(&self, provider: &str) -> Duration {
        let (c, g) = self.stale_after.get(provider).copied().unwrap_or((self.staleness.cadence, self.staleness.grace));
        // Bounded when the rules are made; saturating all the same, so no configuration can make this panic.
        c.saturating_add(g)
    }

    /// The provider's expected cadence and grace.
    pub fn cadence(&self, provider: &str) -> (Duration, Duration) {
        self.stale_after.get(provider).copied().unwrap_or((self.staleness.cadence, self.staleness.grace))
    }

    /// The system, region and nation a provider rolls up into (empty for a provider not in the directory).
    pub fn scopes_of(&self, provider: &str) -> Vec<Scope> {
        let Some(p) = self.directory.provider(provider) else { return Vec::new() };
        let mut out = vec![Scope::new(Level::System, &p.system)];
        if let Some(s) = self.directory.system(&p.system) {
            out.push(Scope::new(Level::Region, &s.region));
        }
        out.push(Scope::new(Level::Nation, &self.directory.nation().code));
        out
    }

    /// Every scope: each system, each region, then the nation.
    pub fn scopes(&self) -> Vec<Scope> {
        let d = &self.directory;
        let mut out: Vec<Scope> = d.systems().map(|s| Scope::new(Level::System, &s.code)).collect();
        out.extend(d.regions().map(|r| Scope::new(Level::Region, &r.code)));
        out.push(Scope::new(Level::Nation, &d.nation().code));
        out
    }

    /// The scopes a snapshot of `selection` carries rollups for: every scope a selected provider rolls up into.
    pub fn scopes_for(&self, selection: &crate::Selection) -> Vec<Scope> {
        let mut scopes = self.scopes();
        if let crate::Selection::Only(set) = selection {
            scopes.retain(|scope| set.iter().any(|p| self.in_scope(p, scope)));
        }
        scopes
    }

    /// Whether `provider` rolls up into `scope`.
    pub fn in_scope(&self, provider: &str, scope: &Scope) -> bool {
        let Some(p) = self.directory.provider(provider) else { return false };
        match scope.level {
            Level::Nation => scope.code == self.directory.nation().code,
            Level::System => p.system == scope.code,
            Level::Region => self.directory.system(&p.system).is_some_and(|s| s.region == scope.code),
        }
    }

    /// How many providers the directory places in `scope`.
    pub fn providers_in(&self, scope: &Scope) -> u32 {
        self.sizes.get(scope).copied().unwrap_or(0)
    }

    /// A scope's name for people, e.g. "South West London ICB".
    pub fn scope_name<'a>(&'a self, scope: &'a Scope) -> &'a str {
        let d = &self.directory;
        match scope.level {
            Level::System => d.system(&scope.code).map(|s| s.name.as_str()),
            Level::Region => d.region(&scope.code).map(|r| r.name.as_str()),
            Level::Nation => Some(d.nation().name.as_str()),
        }
        .unwrap_or(&scope.code)
    }
}

fn merge(base: &RagRule, o: &crate::directory::RagOverride) -> RagRule {
    RagRule {
        direction: o.direction.unwrap_or(base.direction),
        amber: o.amber.unwrap_or(base.amber),
        red: o.red.unwrap_or(base.red),
        min_capacity: o.min_capacity.or(base.min_capacity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(extra: &str) -> Directory {
        let text = format!(
            "[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R\"\nname = \"r\"\n\
             [[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n\
             [[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\n{extra}"
        );
        Directory::from_toml("t", &text).unwrap()
    }

    fn rules(extra: &str) -> Result<Rules, String> {
        let catalogue = Arc::new(crate::profile::nhs_england_catalogue());
        Rules::new(catalogue, Arc::new(directory(extra)), None, Staleness::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn provider_overrides_replace_only_the_fields_they_name() {
        let r = rules("[provider.rag.\"beds.cc_adult.occupancy\"]\nred = 100\namber = 90\n").unwrap();
        let own = r.rag_rule(Some("P"), "beds.cc_adult.occupancy").unwrap();
        assert_eq!((own.amber, own.red, own.min_capacity), (90.0, 100.0, Some(6.0)));
        let base = r.rag_rule(None, "beds.cc_adult.occupancy").unwrap();
        assert_eq!((base.amber, base.red), (85.0, 95.0));
        assert!(r.rag_rule(Some("P"), "flow.discharges").is_none(), "not rated");
    }

    #[test]
    fn inconsistent_overrides_and_durations_are_rejected_by_name() {
        let cases = [
            ("[provider.rag.\"flow.discharges\"]\nred = 3\n", "provider P: rag override for \"flow.discharges\""),
            ("[provider.rag.\"beds.cc_adult.occupancy\"]\nred = 50\n", "beds.cc_adult.occupancy: rag: with direction"),
            ("cadence = \"soon\"\n", "provider P: cadence \"soon\" is not a duration"),
            ("cadence = \"0s\"\n", "provider P: cadence must be above zero"),
            ("cadence = \"32days\"\n", "provider P: cadence \"32days\" is longer than 31 days (rule: at_most)"),
            (
                "cadence = \"18446744073709551615s\"\ngrace = \"1s\"\n",
                "provider P: cadence \"18446744073709551615s\" is longer than 31 days",
            ),
            ("grace = \"1000years\"\n", "provider P: grace \"1000years\" is longer than 31 days (rule: at_most)"),
        ];
        for (extra, expected) in cases {
            let err = rules(extra).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn durations_past_the_bounds_never_overflow() {
        // A deployment default past the bounds is refused for every provider that takes it, naming the key.
        let catalogue = Arc::new(crate::profile::nhs_england_catalogue());
        let directory = Arc::new(crate::profile::demo_directory());
        let huge = Staleness { cadence: Duration::MAX, grace: Duration::MAX, value_max_age: Duration::MAX };
        let err = Rules::new(catalogue, directory, None, huge).unwrap_err().to_string();
        assert!(err.contains(": cadence \"") && err.contains("is longer than 31 days"), "{err}");
        // And the sum saturates rather than panics, whatever a caller builds.
        assert_eq!(Duration::MAX.saturating_add(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn staleness_uses_the_providers_cadence_and_grace() {
        let r = rules("cadence = \"30m\"\n").unwrap();
        assert_eq!(r.stale_after("P"), Duration::from_secs(45 * 60));
        assert_eq!(r.stale_after("unknown"), Duration::from_secs(75 * 60));
    }

    #[test]
    fn critcon_rules_need_the_critcon_level_metric() {
        let table = Some(Arc::new(crate::critcon::example_table()));
        let r = rules("").unwrap().with_critcon(table.clone()).unwrap();
        assert!(r.critcon.as_ref().is_some_and(|t| t.example));
        assert!(Rules::demo().critcon.is_some_and(|t| t.example), "the demo carries the example, labelled");
        let text =
            crate::profile::NHS_ENGLAND_CATALOGUE.replace("code = \"critcon.level\"", "code = \"critcon.other\"");
        let catalogue = Arc::new(Catalogue::from_toml("test", &text).unwrap());
        let without = Rules::new(catalogue, Arc::new(directory("")), None, Staleness::default()).unwrap();
        let err = without.clone().with_critcon(table).unwrap_err().to_string();
        assert!(
            err.contains("critcon rules: the CRITCON rules need the metric critcon.level in the catalogue nhs-england"),
            "{err}"
        );
        assert!(without.with_critcon(None).unwrap().critcon.is_none(), "no table needs no metric");
    }

    #[test]
    fn scopes_of_a_provider_and_the_demo() {
        let r = Rules::demo();
        let names: Vec<String> = r.scopes_of("RJ7").iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["system:QWE", "region:Y56", "nation:ENG"]);
        assert_eq!(r.scopes().len(), 4 + 2 + 1);
        assert_eq!(r.providers_in(&Scope::new(Level::Nation, "ENG")) as usize, r.directory.providers().count());
        assert_eq!(Scope::parse("region:Y56"), Some(Scope::new(Level::Region, "Y56")));
        assert_eq!(r.scope_name(&Scope::new(Level::System, "QWE")), "South West London ICB");
    }
}
