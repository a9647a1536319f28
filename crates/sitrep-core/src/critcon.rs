//! CRITCON: critical care escalation levels of systems, regions and the nation, derived by a table-driven rule and
//! explained.
//!
//! Each critical care unit (a site, or a provider reporting as a whole) declares a level from 0 to 3, the
//! `critcon.level` metric. A scope's level is derived from its members' levels: a system's members are its units,
//! a region's are its systems, the nation's are its regions. Without a rule firing, the level is the members'
//! highest, capped at [`UNIT_MAX`] (3), so levels 4 and 5 only ever come from a [`Rule`]: "a system is at 4 when at
//! least two of its units are at 3", "the nation is at 5 when two regions are at 4". The rules are data, a
//! [`Table`] parsed from TOML, because the published rule changes and a rebuild should not be needed to follow it;
//! the shipped [`EXAMPLE_TABLE`] is an illustration and says so.
//!
//! Members that are quiet are decided here, once: a **stale** member counts at its last declared level (a unit
//! that was at 3 an hour ago has most likely not recovered since) and is named as stale in the explanation; a
//! member that has **never declared** counts at no level, yet stays in the denominator of every share, so a scope
//! does not escalate because most of its units have gone silent. It is named as not declared. A scope in which no
//! member has a level gets no derived level at all.
//!
//! # Which providers are units
//! A system's units ([`units`]) are its acute and specialist providers (the kinds that run critical care), and any
//! other provider that has declared a level: each provider is one unit, or, once it declares by site, each site that
//! declared is one. A unit provider that has never declared is named as not declared. The picture derives levels on
//! demand from its providers ([`crate::Picture::critcon`]); its rollups carry them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::directory::Level;

/// An example rule table, clearly labelled as such (`example = true`): not the published CRITCON rule.
pub const EXAMPLE_TABLE: &str = include_str!("../data/critcon.example.toml");

/// The highest level a unit may declare, and the cap on a level derived without a rule.
pub const UNIT_MAX: u32 = 3;
/// The highest level a rule may derive (the nation's top level).
pub const MAX_LEVEL: u32 = 5;

pub fn example_table() -> Table {
    Table::from_toml("built-in example CRITCON rule", EXAMPLE_TABLE)
        .expect("the built-in example CRITCON rule is valid (checked by tests)")
}

/// The rules that raise a scope's derived level above its members' highest.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// E.g. "Example CRITCON rule (replace with the published rule)".
    pub name: String,
    /// True while the table is an illustration rather than the published rule.
    #[serde(default)]
    pub example: bool,
    /// No rules at all is a valid table: every level is then the members' highest, capped at 3.
    #[serde(rename = "rule", default)]
    pub rules: Vec<Rule>,
}

/// One condition that raises a scope's level: enough members at `count_at` or above, by count and/or by share.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Short id, named in explanations and errors, e.g. "system_units_at_3".
    pub code: Arc<str>,
    /// The kind of scope it applies to.
    pub scope: Level,
    /// The level it raises the scope to: above [`UNIT_MAX`], at most [`MAX_LEVEL`].
    pub level: u32,
    /// Members at this level or above are counted.
    pub count_at: u32,
    /// At least this many members counted (at least 1).
    #[serde(default)]
    pub min_count: Option<u32>,
    /// At least this fraction (above 0, at most 1) of all the scope's members counted, declared or not.
    #[serde(default)]
    pub min_share: Option<f64>,
}

impl Rule {
    /// The condition for people, e.g. "at least 2 units at level 3 or above".
    fn condition(&self, total: usize) -> String {
        let noun = member_noun(self.scope);
        let mut parts = Vec::new();
        if let Some(n) = self.min_count {
            parts.push(format!("{n} {}", plural(noun, n as usize)));
        }
        if let Some(share) = self.min_share {
            parts.push(format!("{}% of the {total} {}", percent(share), plural(noun, total)));
        }
        format!("at least {} at level {} or above", parts.join(" and at least "), self.count_at)
    }
}

/// One member of a scope as the caller knows it: a unit (for a system), a system (for a region) or a region (for
/// the nation), with its level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub code: Arc<str>,
    /// Its declared (unit) or derived (system, region) level; `None` when it has never had one.
    pub level: Option<u32>,
    /// Whether `level` is its last known level rather than a current one.
    pub stale: bool,
}

impl Member {
    pub fn current(code: &str, level: u32) -> Self {
        Member { code: code.into(), level: Some(level), stale: false }
    }

    pub fn stale(code: &str, level: u32) -> Self {
        Member { code: code.into(), level: Some(level), stale: true }
    }

    pub fn not_declared(code: &str) -> Self {
        Member { code: code.into(), level: None, stale: false }
    }
}

/// A member named in an explanation, with the level it counted at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    pub code: Arc<str>,
    pub level: u32,
    pub stale: bool,
}

/// The rule that set a derived level, with what it counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    pub rule: Arc<str>,
    /// The rule's condition for people, e.g. "at least 2 units at level 3 or above".
    pub condition: String,
}

/// A scope's derived CRITCON level with the reasons for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub scope: Level,
    pub level: u32,
    /// The rule that set the level; `None` when it is the members' highest (capped at 3).
    pub fired: Option<Fired>,
    /// The members that decided the level, in the caller's order: those the fired rule counted, or those at the
    /// highest level.
    pub counted: Vec<Counted>,
    /// How many members the scope has, declared or not (the denominator of shares).
    pub members: usize,
    /// The members' highest level before the cap, when no rule fired.
    pub highest: u32,
    /// Every stale member, counted at its last level, in the caller's order.
    pub stale: Vec<Counted>,
    /// Members that have never declared, in the caller's order.
    pub not_declared: Vec<Arc<str>>,
}

impl Table {
    /// Parses a table from TOML text and checks it; `what` names the source in errors.
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let table: Table = toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        table.check(what)?;
        Ok(table)
    }

    /// Checks every rule; errors name the rule, the field and the value.
    pub fn check(&self, what: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid { what: what.to_owned(), message });
        for (i, r) in self.rules.iter().enumerate() {
            let code = &r.code;
            if code.is_empty() || code.chars().any(|c| c.is_whitespace() || c == '"') {
                return invalid(format!("rule code {code:?} must be non-empty without spaces or quotes"));
            }
            if self.rules[..i].iter().any(|q| q.code == *code) {
                return invalid(format!("rule {code} is defined twice"));
            }
            if !(UNIT_MAX + 1..=MAX_LEVEL).contains(&r.level) {
                return invalid(format!(
                    "rule {code}: level {} must be from {} to {MAX_LEVEL} (levels 0 to {UNIT_MAX} come from the \
                     members' own)",
                    r.level,
                    UNIT_MAX + 1
                ));
            }
            // Units declare at most 3, so a system rule counting at 4 could never fire.
            let top = if r.scope == Level::System { UNIT_MAX } else { MAX_LEVEL };
            if !(1..=top).contains(&r.count_at) {
                return invalid(format!(
                    "rule {code}: count_at {} must be from 1 to {top} for a {} (its {} are at 0 to {top})",
                    r.count_at,
                    r.scope.as_str(),
                    plural(member_noun(r.scope), 2)
                ));
            }
            if r.min_count.is_none() && r.min_share.is_none() {
                return invalid(format!("rule {code}: give min_count, min_share or both"));
            }
            if r.min_count == Some(0) {
                return invalid(format!("rule {code}: min_count 0 must be at least 1"));
            }
            // A range test, so that a NaN share fails it too.
            if let Some(share) = r.min_share
                && !(share > 0.0 && share <= 1.0)
            {
                return invalid(format!("rule {code}: min_share {share} must be above 0 and at most 1"));
            }
        }
        Ok(())
    }

    /// The derived level of a scope of kind `scope` whose members are `members`; `None` when no member has a
    /// level (never declared, or an empty scope).
    ///
    /// The level is the highest `level` of the rules for `scope` that fire (the first in the table on a tie), or
    /// else the members' highest level capped at [`UNIT_MAX`].
    pub fn derive(&self, scope: Level, members: &[Member]) -> Option<Derived> {
        let highest = members.iter().filter_map(|m| m.level).max()?;
        let total = members.len();
        let mut best: Option<&Rule> = None;
        for r in self.rules.iter().filter(|r| r.scope == scope) {
            let count = members.iter().filter(|m| m.level.is_some_and(|l| l >= r.count_at)).count();
            let by_count = r.min_count.is_none_or(|n| count >= n as usize);
            // A division rather than min_share * total: 0.3 * 10 is 3.0000000000000004 in floating point, which 3
            // units would not reach, while 3.0 / 10.0 is the same double as the 0.3 written in the table.
            let by_share = r.min_share.is_none_or(|s| count as f64 / total as f64 >= s);
            if by_count && by_share && best.is_none_or(|b| r.level > b.level) {
                best = Some(r);
            }
        }
        let counted_at = |at: &dyn Fn(u32) -> bool| {
            members
                .iter()
                .filter_map(|m| {
                    m.level.filter(|&l| at(l)).map(|level| Counted { code: m.code.clone(), level, stale: m.stale })
                })
                .collect()
        };
        let (level, fired, counted) = match best {
            Some(r) => (
                r.level,
                Some(Fired { rule: r.code.clone(), condition: r.condition(total) }),
                counted_at(&|l| l >= r.count_at),
            ),
            None => (highest.min(UNIT_MAX), None, counted_at(&|l| l == highest)),
        };
        Some(Derived {
            scope,
            level,
            fired,
            counted,
            members: total,
            highest,
            stale: members
                .iter()
                .filter(|m| m.stale)
                .filter_map(|m| m.level.map(|level| Counted { code: m.code.clone(), level, stale: true }))
                .collect(),
            not_declared: members.iter().filter(|m| m.level.is_none()).map(|m| m.code.clone()).collect(),
        })
    }
}

impl Derived {
    /// One sentence for people, e.g. "CRITCON 4 (rule system_units_at_3: at least 2 units at level 3 or above):
    /// 2 of 5 units counted: RJ701 at 3, RJ731 at 3 (stale); stale, counted at their last level: RJ731 at 3;
    /// not declared: RJ799".
    pub fn explain(&self) -> String {
        let noun = member_noun(self.scope);
        let list = |members: &[Counted]| {
            members
                .iter()
                .map(|c| format!("{} at {}{}", c.code, c.level, if c.stale { " (stale)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = format!("CRITCON {} (", self.level);
        match &self.fired {
            Some(f) => {
                text.push_str(&format!(
                    "rule {}: {}): {} of {} {} counted: ",
                    f.rule,
                    f.condition,
                    self.counted.len(),
                    self.members,
                    plural(noun, self.members)
                ));
            }
            None if self.highest > self.level => {
                text.push_str(&format!(
                    "no rule fired; highest {noun} level {}, capped at {UNIT_MAX}): ",
                    self.highest
                ));
            }
            None => text.push_str(&format!("no rule fired; highest {noun} level): ")),
        }
        text.push_str(&list(&self.counted));
        if !self.stale.is_empty() {
            let stale: Vec<Counted> = self.stale.iter().map(|c| Counted { stale: false, ..c.clone() }).collect();
            text.push_str("; stale, counted at their last level: ");
            text.push_str(&list(&stale));
        }
        if !self.not_declared.is_empty() {
            text.push_str("; not declared: ");
            text.push_str(&self.not_declared.join(", "));
        }
        text
    }
}

/// What a scope's members are called: a system's are units, a region's systems, the nation's regions.
fn member_noun(scope: Level) -> &'static str {
    match scope {
        Level::System => "unit",
        Level::Region => "system",
        Level::Nation => "region",
    }
}

fn plural(noun: &str, n: usize) -> String {
    if n == 1 { noun.to_owned() } else { format!("{noun}s") }
}

/// A share as a percentage to at most two decimal places, e.g. 0.5 -> "50", 1/3 -> "33.33".
fn percent(share: f64) -> String {
    format!("{}", (share * 10_000.0).round() / 100.0)
}

/// What a unit provider has declared, as the rule reads it: whether the provider is stale, its level as a whole,
/// and the levels of its sites that declared one (by site code). The picture reads it from a provider's live state
/// ([`crate::Picture::critcon`]), so that this rule does not depend on how live state is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Declared {
    pub stale: bool,
    pub whole: Option<u32>,
    pub sites: Vec<(String, u32)>,
}

/// A declared `critcon.level` reading as a unit's level: clamped to what a unit may declare.
pub fn unit_level(n: f64) -> u32 {
    n.clamp(0.0, UNIT_MAX as f64) as u32
}

/// The units of `system` as `state_of` knows them (see the module header): each with its declared level, stale
/// when its provider is.
pub fn units(directory: &crate::Directory, system: &str, state_of: impl Fn(&str) -> Option<Declared>) -> Vec<Member> {
    use crate::directory::ProviderKind;
    let mut members = Vec::new();
    for p in directory.providers().filter(|p| p.system == system) {
        let state = state_of(&p.code);
        let stale = state.as_ref().is_some_and(|s| s.stale);
        let member = |code: &str, level: Option<u32>| match (level, stale) {
            (Some(l), false) => Member::current(code, l),
            (Some(l), true) => Member::stale(code, l),
            (None, _) => Member::not_declared(code),
        };
        let by_site: Vec<Member> =
            state.iter().flat_map(|s| &s.sites).map(|(site, level)| member(site, Some(*level))).collect();
        if !by_site.is_empty() {
            members.extend(by_site);
            continue;
        }
        let declared = state.and_then(|s| s.whole);
        if declared.is_some() || matches!(p.kind, ProviderKind::Acute | ProviderKind::Specialist) {
            members.push(member(&p.code, declared));
        }
    }
    members
}

/// The derived level of `scope` by `table`: a system's from its [`units`], a region's from its systems' derived
/// levels, the nation's from its regions'. `None` when no member has a level.
pub fn of_scope(
    table: &Table,
    directory: &crate::Directory,
    scope: &crate::Scope,
    state_of: &dyn Fn(&str) -> Option<Declared>,
) -> Option<Derived> {
    let as_member = |code: &str, d: Option<Derived>| match d {
        Some(d) => Member {
            code: code.into(),
            level: Some(d.level),
            stale: !d.stale.is_empty() && d.stale.len() == d.counted.len(),
        },
        None => Member::not_declared(code),
    };
    let system = |code: &str| table.derive(Level::System, &units(directory, code, state_of));
    let region = |code: &str| {
        let members: Vec<Member> =
            directory.systems().filter(|s| s.region == code).map(|s| as_member(&s.code, system(&s.code))).collect();
        table.derive(Level::Region, &members)
    };
    match scope.level {
        Level::System => system(&scope.code),
        Level::Region => region(&scope.code),
        Level::Nation => {
            let members: Vec<Member> = directory.regions().map(|r| as_member(&r.code, region(&r.code))).collect();
            table.derive(Level::Nation, &members)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &str) -> Table {
        Table::from_toml("test", &format!("name = \"t\"\n{rules}")).unwrap()
    }

    fn rule(code: &str, scope: &str, level: u32, count_at: u32, extra: &str) -> String {
        format!("[[rule]]\ncode = \"{code}\"\nscope = \"{scope}\"\nlevel = {level}\ncount_at = {count_at}\n{extra}\n")
    }

    /// Units U1, U2, ... at the given levels, all current.
    fn units(levels: &[u32]) -> Vec<Member> {
        levels.iter().enumerate().map(|(i, &l)| Member::current(&format!("U{}", i + 1), l)).collect()
    }

    fn level(t: &Table, scope: Level, members: &[Member]) -> Option<u32> {
        t.derive(scope, members).map(|d| d.level)
    }

    #[test]
    fn without_a_rule_the_level_is_the_members_highest_capped_at_3() {
        let t = table("");
        let cases: [(&[u32], u32); 7] =
            [(&[0], 0), (&[0, 0, 0], 0), (&[1, 0], 1), (&[0, 2, 1], 2), (&[3, 0, 1], 3), (&[4, 1], 3), (&[5], 3)];
        for (levels, expected) in cases {
            for scope in [Level::System, Level::Region, Level::Nation] {
                let d = t.derive(scope, &units(levels)).unwrap();
                assert_eq!(d.level, expected, "{scope:?} {levels:?}");
                assert!(d.fired.is_none());
            }
        }
        assert_eq!(level(&t, Level::System, &[]), None, "an empty scope has no level");
        assert_eq!(level(&t, Level::System, &[Member::not_declared("U1")]), None, "nobody declared");
    }

    #[test]
    fn a_count_rule_fires_at_its_count_and_not_below() {
        let t = table(&rule("three_at_3", "system", 4, 3, "min_count = 3"));
        let cases: [(&[u32], u32); 6] = [
            (&[3, 3, 3], 4),
            (&[3, 3, 3, 0, 0, 0, 0, 0], 4),
            (&[3, 3, 2, 2, 2], 3),
            (&[3, 3], 3),
            (&[2, 2, 2, 2], 2),
            (&[3, 3, 3, 3], 4),
        ];
        for (levels, expected) in cases {
            assert_eq!(level(&t, Level::System, &units(levels)), Some(expected), "{levels:?}");
        }
        // The rule is for systems only.
        assert_eq!(level(&t, Level::Region, &units(&[3, 3, 3])), Some(3));
        // count_at is "at or above": with count_at 2, units at 3 count too.
        let t = table(&rule("two_at_2", "system", 4, 2, "min_count = 2"));
        assert_eq!(level(&t, Level::System, &units(&[3, 2, 0])), Some(4));
        assert_eq!(level(&t, Level::System, &units(&[3, 1, 0])), Some(3));
    }

    #[test]
    fn a_share_rule_counts_every_member_in_the_denominator() {
        let t = table(&rule("share", "system", 4, 3, "min_share = 0.3"));
        let at = |n: usize, of: usize| {
            let mut levels = vec![3; n];
            levels.resize(of, 1);
            level(&t, Level::System, &units(&levels))
        };
        // 3 of 10 is exactly 30%, which 0.3 * 10 in floating point (3.0000000000000004) would miss.
        assert_eq!(at(3, 10), Some(4));
        assert_eq!(at(2, 10), Some(3));
        assert_eq!(at(1, 3), Some(4));
        assert_eq!(at(1, 4), Some(3));
        // A unit that never declared stays in the denominator: 1 of 4 is below 30%, though 1 of the 3 declared is
        // not.
        let mut members = units(&[3, 0, 0]);
        members.push(Member::not_declared("U4"));
        assert_eq!(level(&t, Level::System, &members), Some(3));
        members.pop();
        assert_eq!(level(&t, Level::System, &members), Some(4));

        // With a count and a share, both must hold.
        let t = table(&rule("both", "system", 4, 3, "min_count = 2\nmin_share = 0.5"));
        let cases: [(&[u32], u32); 4] = [(&[3, 3, 0, 0], 4), (&[3, 3, 0, 0, 0], 3), (&[3, 0], 3), (&[3, 3, 3], 4)];
        for (levels, expected) in cases {
            assert_eq!(level(&t, Level::System, &units(levels)), Some(expected), "{levels:?}");
        }
    }

    #[test]
    fn the_example_makes_the_nation_5_from_two_regions_at_4() {
        let t = example_table();
        let regions = |levels: &[u32]| -> Vec<Member> {
            levels.iter().enumerate().map(|(i, &l)| Member::current(&format!("Y{}", 50 + i), l)).collect()
        };
        let cases: [(&[u32], u32, Option<&str>); 6] = [
            (&[4, 4], 5, Some("nation_regions_at_4")),
            (&[4, 4, 0, 0, 0, 0, 0], 5, Some("nation_regions_at_4")),
            (&[4, 3], 4, Some("nation_region_at_4")),
            (&[4, 0, 0], 4, Some("nation_region_at_4")),
            (&[3, 3], 3, None),
            (&[2, 0], 2, None),
        ];
        for (levels, expected, by) in cases {
            let d = t.derive(Level::Nation, &regions(levels)).unwrap();
            assert_eq!((d.level, d.fired.as_ref().map(|f| &*f.rule)), (expected, by), "{levels:?}");
        }
        // A region is at 4 when one of its systems is; a system at 4 when two units, or half of them, are at 3.
        assert_eq!(level(&t, Level::Region, &units(&[4, 0, 0])), Some(4));
        assert_eq!(level(&t, Level::Region, &units(&[3, 3, 3])), Some(3));
        assert_eq!(level(&t, Level::System, &units(&[3, 3, 0, 0, 0])), Some(4));
        assert_eq!(level(&t, Level::System, &units(&[3, 0])), Some(4));
        assert_eq!(level(&t, Level::System, &units(&[3, 0, 0])), Some(3));
    }

    #[test]
    fn the_highest_firing_rule_wins_and_the_first_on_a_tie() {
        let t = table(&format!(
            "{}{}{}",
            rule("one_at_4", "nation", 4, 4, "min_count = 1"),
            rule("two_at_4", "nation", 5, 4, "min_count = 2"),
            rule("half_at_4", "nation", 5, 4, "min_share = 0.5")
        ));
        let fired = |levels: &[u32]| t.derive(Level::Nation, &units(levels)).unwrap().fired.map(|f| f.rule);
        assert_eq!(fired(&[4, 0, 0]).as_deref(), Some("one_at_4"));
        assert_eq!(fired(&[4, 4, 0, 0]).as_deref(), Some("two_at_4"), "both level-5 rules fire; the first wins");
        assert_eq!(fired(&[4, 0]).as_deref(), Some("half_at_4"));
    }

    #[test]
    fn explanations_name_the_rule_and_the_members_that_counted() {
        let t = example_table();
        let members = vec![
            Member::current("RJ701", 3),
            Member::current("RJ702", 1),
            Member::stale("RJ731", 3),
            Member::stale("RJ732", 0),
            Member::not_declared("RJ799"),
        ];
        let d = t.derive(Level::System, &members).unwrap();
        assert_eq!(
            d.explain(),
            "CRITCON 4 (rule system_units_at_3: at least 2 units at level 3 or above): 2 of 5 units counted: \
             RJ701 at 3, RJ731 at 3 (stale); stale, counted at their last level: RJ731 at 3, RJ732 at 0; \
             not declared: RJ799"
        );
        let d = t.derive(Level::System, &units(&[3, 3, 0, 0])).unwrap();
        assert_eq!(
            d.explain(),
            "CRITCON 4 (rule system_units_at_3: at least 2 units at level 3 or above): 2 of 4 units counted: \
             U1 at 3, U2 at 3"
        );
        let share = table(&rule("half", "system", 4, 3, "min_share = 0.5"));
        let d = share.derive(Level::System, &units(&[3, 1])).unwrap();
        assert_eq!(
            d.explain(),
            "CRITCON 4 (rule half: at least 50% of the 2 units at level 3 or above): 1 of 2 units counted: U1 at 3"
        );
        let d = t.derive(Level::System, &units(&[2, 1, 2])).unwrap();
        assert_eq!(d.explain(), "CRITCON 2 (no rule fired; highest unit level): U1 at 2, U3 at 2");
        let d = table("").derive(Level::Nation, &[Member::current("Y56", 4), Member::stale("Y59", 1)]).unwrap();
        assert_eq!(
            d.explain(),
            "CRITCON 3 (no rule fired; highest region level 4, capped at 3): Y56 at 4; \
             stale, counted at their last level: Y59 at 1"
        );
        let d = t.derive(Level::Nation, &[Member::current("Y56", 4), Member::current("Y59", 4)]).unwrap();
        assert_eq!(
            d.explain(),
            "CRITCON 5 (rule nation_regions_at_4: at least 2 regions at level 4 or above): 2 of 2 regions counted: \
             Y56 at 4, Y59 at 4"
        );
        // A derived level travels as JSON like an OPEL assessment, and must come back whole.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Derived>(&json).unwrap(), d);
    }

    #[test]
    fn a_stale_member_counts_at_its_last_level() {
        let t = example_table();
        let members = [Member::stale("U1", 3), Member::current("U2", 3), Member::current("U3", 0)];
        assert_eq!(level(&t, Level::System, &members), Some(4));
        let only_stale = [Member::stale("U1", 2), Member::not_declared("U2")];
        let d = t.derive(Level::System, &only_stale).unwrap();
        assert_eq!((d.level, d.not_declared.len(), d.stale.len()), (2, 1, 1));
    }

    #[test]
    fn invalid_tables_are_refused_naming_rule_field_and_value() {
        let good = rule("r1", "system", 4, 3, "min_count = 2");
        let cases = [
            (good.replace("level = 4", "level = 3"), "rule r1: level 3 must be from 4 to 5"),
            (good.replace("level = 4", "level = 6"), "rule r1: level 6 must be from 4 to 5"),
            (good.replace("count_at = 3", "count_at = 4"), "rule r1: count_at 4 must be from 1 to 3 for a system"),
            (good.replace("count_at = 3", "count_at = 0"), "rule r1: count_at 0 must be from 1 to 3"),
            (
                rule("r1", "nation", 5, 6, "min_count = 1"),
                "rule r1: count_at 6 must be from 1 to 5 for a nation (its regions are at 0 to 5)",
            ),
            (good.replace("min_count = 2", ""), "rule r1: give min_count, min_share or both"),
            (good.replace("min_count = 2", "min_count = 0"), "rule r1: min_count 0 must be at least 1"),
            (good.replace("min_count = 2", "min_share = 0"), "rule r1: min_share 0 must be above 0 and at most 1"),
            (good.replace("min_count = 2", "min_share = 1.5"), "rule r1: min_share 1.5 must be above 0 and at most 1"),
            (good.replace("min_count = 2", "min_share = nan"), "rule r1: min_share NaN must be above 0"),
            (good.replace("min_count = 2", "min_share = -0.5"), "rule r1: min_share -0.5 must be above 0"),
            (format!("{good}{good}"), "rule r1 is defined twice"),
            (good.replace("\"r1\"", "\"r 1\""), "rule code \"r 1\" must be non-empty without spaces"),
            (good.replace("scope = \"system\"", "scope = \"ward\""), "unknown variant `ward`"),
            (good.replace("min_count", "min_cuont"), "unknown field `min_cuont`"),
            (good.replace("min_count = 2", "min_count = -1"), "min_count"),
        ];
        assert!(Table::from_toml("test", &format!("name = \"t\"\n{good}")).is_ok());
        for (rules, expected) in cases {
            let err = Table::from_toml("critcon.toml", &format!("name = \"t\"\n{rules}")).unwrap_err().to_string();
            assert!(err.starts_with("critcon.toml: "), "{err:?} should name the file");
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
        let err = Table::from_toml("t", "name = \"t\"\ncolour = 1\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn example_table_is_labelled_and_loads() {
        let t = example_table();
        assert!(t.example);
        assert!(t.name.contains("replace with the published rule"), "{}", t.name);
        assert!(EXAMPLE_TABLE.starts_with("# EXAMPLE CRITCON rule. This is NOT the published"));
        let rules: Vec<(&str, Level, u32, u32)> =
            t.rules.iter().map(|r| (&*r.code, r.scope, r.level, r.count_at)).collect();
        assert_eq!(
            rules,
            [
                ("system_units_at_3", Level::System, 4, 3),
                ("system_half_at_3", Level::System, 4, 3),
                ("region_system_at_4", Level::Region, 4, 4),
                ("nation_regions_at_4", Level::Nation, 5, 4),
                ("nation_region_at_4", Level::Nation, 4, 4),
            ]
        );
    }

    #[test]
    fn the_picture_derives_levels_from_its_units_and_explains_them() {
        use crate::cursor::Position;
        use crate::{Cursor, Picture, Report, Rules, Scope, Timestamp, validate};
        let rules = Rules::demo().with_critcon(Some(Arc::new(example_table()))).unwrap();
        let now = Timestamp::parse_rfc3339("2026-12-04T10:20:00Z").unwrap();
        let mut picture = Picture::new(rules.clone(), Cursor::new("t", Position(0, 0)));
        let declare = |picture: &mut Picture, provider: &str, level: f64, n: u64| {
            let r = Report {
                provider: provider.into(),
                period: Some(now.hour_start()),
                revision: n as u32,
                observed_at: Some(now),
                values: [("critcon.level".to_string(), level.into())].into_iter().collect(),
                ..Default::default()
            };
            let valid = validate(&r, &rules.directory, &rules.catalogue, &crate::Limits::default(), now).unwrap();
            let prior = picture.provider(provider).map(|p| (**p).clone());
            let mut event = crate::plan::report(&rules, prior.as_ref(), None, &valid, now, 24).event;
            event.cursor = Cursor::new("t", Position(n, 0));
            picture.apply(&event).unwrap()
        };
        let qwe = Scope::new(Level::System, "QWE");
        assert_eq!(picture.critcon(&qwe), None, "no unit has declared");
        let rollups = declare(&mut picture, "RJ7", 3.0, 1);
        let system = rollups.iter().find(|r| r.scope == qwe).and_then(|r| r.critcon.clone()).expect("in the event");
        assert_eq!((system.level, system.members), (3, 4), "one unit at 3: the highest; RQY runs no critical care");
        assert_eq!(system.not_declared.iter().map(|c| &**c).collect::<Vec<_>>(), ["RAX", "RJ6", "RVR"]);
        let rollups = declare(&mut picture, "RVR", 3.0, 2);
        let system = rollups.iter().find(|r| r.scope == qwe).and_then(|r| r.critcon.clone()).unwrap();
        assert_eq!(system.level, 4);
        assert_eq!(
            system.explain(),
            "CRITCON 4 (rule system_units_at_3: at least 2 units at level 3 or above): 2 of 4 units counted: RJ7 at 3, \
             RVR at 3; not declared: RAX, RJ6"
        );
        let region = picture.critcon(&Scope::new(Level::Region, "Y56")).unwrap();
        assert_eq!((region.level, region.fired.as_ref().map(|f| &*f.rule)), (4, Some("region_system_at_4")));
        let nation = picture.critcon(&Scope::new(Level::Nation, "ENG")).unwrap();
        assert_eq!((nation.level, nation.fired.as_ref().map(|f| &*f.rule)), (4, Some("nation_region_at_4")));
        // A report that does not change the level carries no CRITCON in its rollups; a snapshot always does.
        let rollups = declare(&mut picture, "RVR", 3.0, 3);
        assert!(rollups.iter().all(|r| r.critcon.is_none()));
        assert!(picture.rollups(&[qwe], None)[0].critcon.is_some());
    }
}
