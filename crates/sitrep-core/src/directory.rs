//! The directory: the configured hierarchy of nation, regions, systems, providers and sites.
//!
//! It answers two questions for the rest of sitrep: is this provider (or site) known, and which providers does a
//! filter of providers, systems and regions select. Parsing checks every reference resolves and every code is
//! unique, so a bad directory fails at start-up with the offending code named, never at report time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Where a rollup applies: a system, a region, or the nation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    System,
    Region,
    Nation,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::System => "system",
            Level::Region => "region",
            Level::Nation => "nation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Level::System, Level::Region, Level::Nation].into_iter().find(|l| l.as_str() == text)
    }
}

/// One system, region or the nation, e.g. `system:QWE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub level: Level,
    pub code: String,
}

impl Scope {
    pub fn new(level: Level, code: impl Into<String>) -> Self {
        Scope { level, code: code.into() }
    }

    /// Parses `level:code` as written by `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        let (level, code) = text.split_once(':')?;
        Some(Scope::new(Level::parse(level)?, code))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.code)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Org {
    pub code: String,
    pub name: String,
}

/// A provider's or a site's place: what mutual aid orders candidates by when both ends have one. Optional in the
/// directory; given as `latitude` and `longitude` in decimal degrees (WGS 84), both or neither.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

impl Location {
    /// The place of `latitude` and `longitude` as the directory gives them: `None` when neither is set; an error
    /// naming the field, the rule and the value when only one is, or one is outside its range.
    fn of(latitude: Option<f64>, longitude: Option<f64>) -> Result<Option<Location>, String> {
        match (latitude, longitude) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("latitude is set without longitude (rule: both_or_neither)".into()),
            (None, Some(_)) => Err("longitude is set without latitude (rule: both_or_neither)".into()),
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    return Err(format!("latitude {lat} is outside -90..=90 degrees (rule: range)"));
                }
                if !(-180.0..=180.0).contains(&lon) {
                    return Err(format!("longitude {lon} is outside -180..=180 degrees (rule: range)"));
                }
                Ok(Some(Location { latitude: lat, longitude: lon }))
            }
        }
    }

    /// The great-circle distance to `other` in kilometres (haversine, on a sphere of the Earth's mean radius):
    /// within 0.5% of the road-free distance, which is all an ordering of candidates needs.
    pub fn distance_km(self, other: Location) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (a, b) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = b - a;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + a.cos() * b.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// A provider's site (a hospital, a unit): its code, name and, optionally, its place.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

impl Site {
    /// Where the site is, if the directory says (checked when the directory is read).
    pub fn location(&self) -> Option<Location> {
        Location::of(self.latitude, self.longitude).ok().flatten()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub code: String,
    pub name: String,
    pub region: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Acute,
    MentalHealth,
    Community,
    Specialist,
    Ambulance,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Acute => "acute",
            ProviderKind::MentalHealth => "mental_health",
            ProviderKind::Community => "community",
            ProviderKind::Specialist => "specialist",
            ProviderKind::Ambulance => "ambulance",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Acute, Self::MentalHealth, Self::Community, Self::Specialist, Self::Ambulance]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub code: String,
    pub name: String,
    pub system: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub sites: Vec<Site>,
    /// How often the provider is expected to report (e.g. "1h"); the deployment's default when unset.
    #[serde(default)]
    pub cadence: Option<String>,
    /// How late a report may be before the provider counts as stale (e.g. "15m"); the default when unset.
    #[serde(default)]
    pub grace: Option<String>,
    /// This provider's own RAG thresholds, by metric code, replacing fields of the catalogue's (a small hospital's
    /// thresholds differ from a large one's). Checked against the catalogue by [`crate::Rules::new`].
    #[serde(default)]
    pub rag: BTreeMap<String, RagOverride>,
    /// Where the provider is (its main site, say), in decimal degrees; both or neither.
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
    /// Whether it can take patients who must be isolated (side rooms, negative pressure): what a mutual aid
    /// request's isolation constraint asks of a candidate. Unset: it cannot.
    #[serde(default)]
    pub isolation: bool,
}

impl Provider {
    /// Where the provider is, if the directory says (checked when the directory is read).
    pub fn location(&self) -> Option<Location> {
        Location::of(self.latitude, self.longitude).ok().flatten()
    }
}

/// Fields of a metric's RAG thresholds that one provider replaces; unset fields keep the catalogue's.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RagOverride {
    #[serde(default)]
    pub direction: Option<crate::catalogue::Direction>,
    #[serde(default)]
    pub amber: Option<f64>,
    #[serde(default)]
    pub red: Option<f64>,
    #[serde(default)]
    pub min_capacity: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    nation: Org,
    #[serde(rename = "region", default)]
    regions: Vec<Org>,
    #[serde(rename = "system", default)]
    systems: Vec<System>,
    #[serde(rename = "provider", default)]
    providers: Vec<Provider>,
    #[serde(rename = "share", default)]
    shares: Vec<Share>,
}

/// A sharing agreement, stated by the organisations whose figures it shares: the providers of `from` share their
/// figures with the readers of the organisations within `with`. Scopes are written `provider:CODE`,
/// `system:CODE`, `region:CODE` or `nation`. Examples: the systems of a region share with each other (`from` and
/// `with` the region); a mental health trust shares with its system's acute trusts (`from = "provider:RQY"`,
/// `with = "system:QWE"`). Without any, a reader sees its grant and nothing more.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub from: String,
    pub with: String,
}

/// The configured hierarchy. Immutable once built; cheap to share behind an `Arc`.
#[derive(Clone, Debug)]
pub struct Directory {
    nation: Org,
    regions: BTreeMap<String, Org>,
    systems: BTreeMap<String, System>,
    providers: BTreeMap<String, Provider>,
    shares: Vec<Share>,
}

/// A part of the directory (see [`Directory::part`]).
#[derive(Clone, Debug)]
pub struct DirectoryPart<'a> {
    pub nation: &'a Org,
    pub regions: Vec<&'a Org>,
    pub systems: Vec<&'a System>,
    pub providers: Vec<&'a Provider>,
}

/// The providers a filter selects: every provider, or a set of codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    Only(BTreeSet<String>),
}

impl Selection {
    pub fn contains(&self, provider: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(set) => set.contains(provider),
        }
    }
}

/// A filter code that the directory does not know, e.g. `systems[1]: unknown system "QXX"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: unknown {what} {code:?}")]
pub struct UnknownCode {
    pub field: String,
    pub what: &'static str,
    pub code: String,
}

impl Directory {
    /// Parses a directory from TOML text; `what` names the source in errors (e.g. a file path).
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let file: DirectoryFile =
            toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        let invalid = |message: String| ConfigError::Invalid { what: what.to_owned(), message };
        let mut regions = BTreeMap::new();
        for r in file.regions {
            if regions.insert(r.code.clone(), r.clone()).is_some() {
                return Err(invalid(format!("region {} is defined twice", r.code)));
            }
        }
        let mut systems = BTreeMap::new();
        for s in file.systems {
            if !regions.contains_key(&s.region) {
                return Err(invalid(format!("system {}: unknown region {}", s.code, s.region)));
            }
            if systems.insert(s.code.clone(), s.clone()).is_some() {
                return Err(invalid(format!("system {} is defined twice", s.code)));
            }
        }
        let mut providers = BTreeMap::new();
        let mut sites = BTreeSet::new();
        for p in file.providers {
            // A provider's code names its keys in a store and its mutual aid references' index
            // ('ref:<provider>|<reference>'): plain text, as a site's code.
            if p.code.is_empty() || p.code.contains([':', '|']) || p.code.contains(char::is_whitespace) {
                return Err(invalid(format!(
                    "provider code {:?} must be non-empty, without spaces, ':' or '|'",
                    p.code
                )));
            }
            if !systems.contains_key(&p.system) {
                return Err(invalid(format!("provider {}: unknown system {}", p.code, p.system)));
            }
            if let Err(why) = Location::of(p.latitude, p.longitude) {
                return Err(invalid(format!("provider {}: {why}", p.code)));
            }
            for site in &p.sites {
                // A site's code is part of its reports' keys in history ('<period>:<revision>:<site>').
                if site.code.is_empty() || site.code.contains([':', '|']) || site.code.contains(char::is_whitespace) {
                    return Err(invalid(format!(
                        "provider {}: site code {:?} must be non-empty, without spaces, ':' or '|'",
                        p.code, site.code
                    )));
                }
                if let Err(why) = Location::of(site.latitude, site.longitude) {
                    return Err(invalid(format!("provider {}: site {}: {why}", p.code, site.code)));
                }
                if !sites.insert(site.code.clone()) {
                    return Err(invalid(format!("provider {}: site {} is defined twice", p.code, site.code)));
                }
            }
            if providers.insert(p.code.clone(), p.clone()).is_some() {
                return Err(invalid(format!("provider {} is defined twice", p.code)));
            }
        }
        let mut directory = Directory { nation: file.nation, regions, systems, providers, shares: Vec::new() };
        for (i, share) in file.shares.iter().enumerate() {
            for (field, scope) in [("from", &share.from), ("with", &share.with)] {
                if directory.members(scope).is_none() {
                    return Err(invalid(format!(
                        "share[{i}].{field}: {scope:?} is not provider:CODE, system:CODE, region:CODE or nation of \
                         this directory"
                    )));
                }
            }
        }
        directory.shares = file.shares;
        Ok(directory)
    }

    /// The part of the directory a reader of `readable` providers may see: those providers, and the systems and
    /// regions they are in (in code order). What the gRPC and JSON directories both show.
    pub fn part(&self, readable: &Selection) -> DirectoryPart<'_> {
        let providers: Vec<&Provider> = self.providers.values().filter(|p| readable.contains(&p.code)).collect();
        let systems: Vec<&System> =
            self.systems.values().filter(|s| providers.iter().any(|p| p.system == s.code)).collect();
        let regions: Vec<&Org> = self.regions.values().filter(|r| systems.iter().any(|s| s.region == r.code)).collect();
        DirectoryPart { nation: &self.nation, regions, systems, providers }
    }

    /// The sharing agreements, as configured.
    pub fn shares(&self) -> &[Share] {
        &self.shares
    }

    /// The providers of a scope written `provider:CODE`, `system:CODE`, `region:CODE` or `nation`; `None` if the
    /// directory has no such scope.
    pub fn members(&self, scope: &str) -> Option<BTreeSet<String>> {
        let of = |keep: &dyn Fn(&Provider) -> bool| {
            self.providers.values().filter(|p| keep(p)).map(|p| p.code.clone()).collect()
        };
        match scope.split_once(':') {
            _ if scope == "nation" => Some(of(&|_| true)),
            Some(("nation", code)) if code == self.nation.code => Some(of(&|_| true)),
            Some(("provider", code)) => self.providers.contains_key(code).then(|| BTreeSet::from([code.to_owned()])),
            Some(("system", code)) => self.systems.contains_key(code).then(|| of(&|p| p.system == code)),
            Some(("region", code)) => self
                .regions
                .contains_key(code)
                .then(|| of(&|p| self.systems.get(&p.system).is_some_and(|s| s.region == code))),
            _ => None,
        }
    }

    /// The providers whose figures are shared with an organisation (a scope written as for [`Directory::members`]):
    /// those of every agreement whose `with` holds all of the organisation's providers.
    pub fn shared_with(&self, organisation: &str) -> BTreeSet<String> {
        let Some(own) = self.members(organisation).filter(|m| !m.is_empty()) else { return BTreeSet::new() };
        self.shares
            .iter()
            .filter(|s| self.members(&s.with).is_some_and(|with| own.is_subset(&with)))
            .flat_map(|s| self.members(&s.from).unwrap_or_default())
            .collect()
    }

    pub fn nation(&self) -> &Org {
        &self.nation
    }

    pub fn regions(&self) -> impl Iterator<Item = &Org> {
        self.regions.values()
    }

    pub fn systems(&self) -> impl Iterator<Item = &System> {
        self.systems.values()
    }

    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    pub fn provider(&self, code: &str) -> Option<&Provider> {
        self.providers.get(code)
    }

    pub fn system(&self, code: &str) -> Option<&System> {
        self.systems.get(code)
    }

    pub fn region(&self, code: &str) -> Option<&Org> {
        self.regions.get(code)
    }

    /// The providers selected by lists of provider, system and region codes (their union); all providers when
    /// every list is empty. Unknown codes are errors, naming the list and position, so a typo in a wallboard's
    /// filter is reported rather than silently showing nothing.
    pub fn select(
        &self,
        providers: &[String],
        systems: &[String],
        regions: &[String],
    ) -> Result<Selection, UnknownCode> {
        if providers.is_empty() && systems.is_empty() && regions.is_empty() {
            return Ok(Selection::All);
        }
        let unknown = |list: &str, i: usize, what, code: &String| UnknownCode {
            field: format!("{list}[{i}]"),
            what,
            code: code.clone(),
        };
        let mut set = BTreeSet::new();
        for (i, p) in providers.iter().enumerate() {
            if !self.providers.contains_key(p) {
                return Err(unknown("providers", i, "provider", p));
            }
            set.insert(p.clone());
        }
        for (i, s) in systems.iter().enumerate() {
            if !self.systems.contains_key(s) {
                return Err(unknown("systems", i, "system", s));
            }
            set.extend(self.providers.values().filter(|p| &p.system == s).map(|p| p.code.clone()));
        }
        for (i, r) in regions.iter().enumerate() {
            if !self.regions.contains_key(r) {
                return Err(unknown("regions", i, "region", r));
            }
            set.extend(
                self.providers
                    .values()
                    .filter(|p| self.systems.get(&p.system).is_some_and(|s| &s.region == r))
                    .map(|p| p.code.clone()),
            );
        }
        Ok(Selection::Only(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::demo_directory;

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn select_is_the_union_of_providers_systems_and_regions() {
        let d = demo_directory();
        assert_eq!(d.select(&[], &[], &[]).unwrap(), Selection::All);
        let Selection::Only(set) = d.select(&codes(&["RGT"]), &codes(&["QWE"]), &[]).unwrap() else { panic!() };
        assert_eq!(set, ["RAX", "RGT", "RJ6", "RJ7", "RQY", "RVR"].iter().map(|s| s.to_string()).collect());
        let Selection::Only(london) = d.select(&[], &[], &codes(&["Y56"])).unwrap() else { panic!() };
        assert!(london.contains("RJ7") && london.contains("RAL") && !london.contains("RGT"));
        let err = d.select(&[], &codes(&["QWE", "QXX"]), &[]).unwrap_err();
        assert_eq!(err.to_string(), "systems[1]: unknown system \"QXX\"");
    }

    #[test]
    fn rejects_dangling_references_and_duplicates() {
        let base = "[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R\"\nname = \"r\"\n";
        let cases = [
            ("[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"X\"\n", "system S: unknown region X"),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"T\"\nkind = \"acute\"\n",
                "provider P: unknown system T",
            ),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P|1\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\n",
                "provider code \"P|1\" must be non-empty, without spaces, ':' or '|'",
            ),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"hospice\"\n",
                "unknown variant `hospice`",
            ),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\nlatitude = 51.5\n",
                "provider P: latitude is set without longitude (rule: both_or_neither)",
            ),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\nlatitude = 95.0\nlongitude = 0.1\n",
                "provider P: latitude 95 is outside -90..=90 degrees (rule: range)",
            ),
            (
                "[[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\n[[provider.sites]]\ncode = \"P1\"\nname = \"p1\"\nlatitude = 51.0\nlongitude = 181.0\n",
                "provider P: site P1: longitude 181 is outside -180..=180 degrees (rule: range)",
            ),
            (
                "[[share]]\nfrom = \"system:NOPE\"\nwith = \"nation\"\n",
                "share[0].from: \"system:NOPE\" is not provider:CODE, system:CODE, region:CODE or nation",
            ),
        ];
        for (extra, expected) in cases {
            let err = Directory::from_toml("t", &format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn locations_are_optional_and_distances_are_great_circles() {
        let base = "[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R\"\nname = \"r\"\n\
            [[system]]\ncode = \"S\"\nname = \"s\"\nregion = \"R\"\n";
        let text = format!(
            "{base}[[provider]]\ncode = \"P\"\nname = \"p\"\nsystem = \"S\"\nkind = \"acute\"\n\
             latitude = 51.4975\nlongitude = -0.1357\n[[provider.sites]]\ncode = \"P1\"\nname = \"p1\"\n\
             [[provider]]\ncode = \"Q\"\nname = \"q\"\nsystem = \"S\"\nkind = \"acute\"\n\
             [[provider.sites]]\ncode = \"Q1\"\nname = \"q1\"\nlatitude = 52.1750\nlongitude = 0.1403\n"
        );
        let d = Directory::from_toml("t", &text).unwrap();
        let p = d.provider("P").unwrap().location().expect("P has a place");
        assert_eq!(d.provider("P").unwrap().sites[0].location(), None);
        assert_eq!(d.provider("Q").unwrap().location(), None);
        let q1 = d.provider("Q").unwrap().sites[0].location().expect("Q1 has a place");
        // Westminster to Cambridge: about 77 km as the crow flies.
        let km = p.distance_km(q1);
        assert!((76.0..78.5).contains(&km), "{km}");
        assert_eq!(q1.distance_km(q1), 0.0);
        assert!((p.distance_km(q1) - q1.distance_km(p)).abs() < 1e-9, "symmetric");
    }
}
