//! Candidates: which providers a request could ask, in the order a coordinator should ask them, and why.
//!
//! A provider is a candidate when it is known to the directory, is not the requester, lies within the request's
//! constraint (`within`: its system, its region, or the nation), can isolate if the request needs isolation, is
//! not at the top escalation level (OPEL 4: it needs help itself), and has headroom for the pair
//! (`open - occupied - held`, see [`super::hold`]) of at least one. Everything else is listed as excluded, with
//! the reason, so a wallboard can say why a provider with free beds was not suggested.
//!
//! Order: nearest scope first (same system, then same region, then elsewhere in the nation); within a scope, most
//! headroom first; then the nearest by great-circle (haversine) distance when the requester and the candidate
//! both have coordinates, candidates without a distance after those with one; then by code, so the order is total
//! and repeatable.

use std::cmp::Ordering;

use super::{AidBook, Request, headroom};
use crate::Directory;
use crate::directory::Level;

/// The escalation level at which a provider is never asked to give: it needs help itself.
pub const OPEL_TOP: u8 = 4;
/// A place, as the directory gives providers and sites one.
pub use crate::directory::Location;

/// What the picture says of one provider for the request's pair: the caller reads it at one cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderStatus {
    pub provider: String,
    pub open: u32,
    pub occupied: u32,
    /// The provider's OPEL level (declared, else computed), if known.
    pub opel: Option<u8>,
    pub location: Option<Location>,
    /// Whether it can take a patient who must be isolated.
    pub isolation: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub provider: String,
    /// How near the candidate is to the requester in the directory: same system, same region, or the nation.
    pub scope: Level,
    pub headroom: i64,
    pub distance_km: Option<f64>,
    /// Why it ranks where it does, e.g. `same system QWE; headroom 3; 4.2 km`.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub provider: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Ranking {
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<Excluded>,
}

/// The candidates for `request` among `statuses` (see the module header for the rule and the order).
pub fn candidates(request: &Request, statuses: &[ProviderStatus], book: &AidBook, directory: &Directory) -> Ranking {
    let mut ranking = Ranking::default();
    let requester = &request.ask.provider;
    let own_system = directory.provider(requester).map(|p| p.system.clone());
    let own_region = own_system.as_deref().and_then(|s| directory.system(s)).map(|s| s.region.clone());
    let own_location = statuses.iter().find(|s| &s.provider == requester).and_then(|s| s.location);
    let pair = &request.ask.pair;
    for status in statuses {
        let code = &status.provider;
        let exclude = |why: String| Excluded { provider: code.clone(), why };
        if code == requester {
            continue;
        }
        let Some(provider) = directory.provider(code) else {
            ranking.excluded.push(exclude("not in the directory".to_owned()));
            continue;
        };
        let region = directory.system(&provider.system).map(|s| s.region.clone());
        let scope = if own_system.as_deref() == Some(provider.system.as_str()) {
            Level::System
        } else if own_region.is_some() && own_region == region {
            Level::Region
        } else {
            Level::Nation
        };
        if scope > request.ask.constraints.within {
            ranking.excluded.push(exclude(format!(
                "outside the request's {} (it is in system {})",
                request.ask.constraints.within.as_str(),
                provider.system
            )));
            continue;
        }
        if request.ask.constraints.isolation && !status.isolation {
            ranking.excluded.push(exclude("cannot isolate".to_owned()));
            continue;
        }
        if let Some(level) = status.opel.filter(|&l| l >= OPEL_TOP) {
            ranking.excluded.push(exclude(format!("at OPEL {level}")));
            continue;
        }
        let held = book.held(code, pair);
        let room = headroom(status.open, status.occupied, held);
        if room < 1 {
            ranking.excluded.push(exclude(format!(
                "no headroom for {pair}: {} open - {} occupied - {held} held = {room}",
                status.open, status.occupied
            )));
            continue;
        }
        let distance_km = own_location.zip(status.location).map(|(a, b)| a.distance_km(b));
        let place = match scope {
            Level::System => format!("same system {}", provider.system),
            Level::Region => format!("same region {}", region.as_deref().unwrap_or("?")),
            Level::Nation => format!("elsewhere in the nation (system {})", provider.system),
        };
        let distance = distance_km.map_or_else(|| "no distance".to_owned(), |d| format!("{d:.1} km"));
        ranking.candidates.push(Candidate {
            provider: code.clone(),
            scope,
            headroom: room,
            distance_km,
            reason: format!("{place}; headroom {room}; {distance}"),
        });
    }
    ranking.candidates.sort_by(rank);
    ranking
}

fn rank(a: &Candidate, b: &Candidate) -> Ordering {
    let distance = match (a.distance_km, b.distance_km) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    a.scope.cmp(&b.scope).then(b.headroom.cmp(&a.headroom)).then(distance).then_with(|| a.provider.cmp(&b.provider))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aid::tests::{actor, ask, t};
    use crate::aid::{Action, Constraints};
    use crate::profile::demo_directory;

    fn status(provider: &str, open: u32, occupied: u32) -> ProviderStatus {
        ProviderStatus { provider: provider.into(), open, occupied, opel: Some(2), location: None, isolation: true }
    }

    fn at(mut s: ProviderStatus, latitude: f64, longitude: f64) -> ProviderStatus {
        s.location = Some(Location { latitude, longitude });
        s
    }

    fn ranked(book: &AidBook, constraints: Constraints, statuses: &[ProviderStatus]) -> Ranking {
        let mut book = book.clone();
        let mut a = ask("RJ7", 1);
        a.constraints = constraints;
        book.apply(Action::Create(a), &actor("RJ7"), t(0)).unwrap();
        let request = book.requests().last().unwrap().clone();
        candidates(&request, statuses, &book, &demo_directory())
    }

    fn codes(r: &Ranking) -> Vec<&str> {
        r.candidates.iter().map(|c| c.provider.as_str()).collect()
    }

    #[test]
    fn haversine_distance() {
        // London (St George's, Tooting) to Cambridge (Addenbrooke's): about 83 km.
        let tooting = Location { latitude: 51.4270, longitude: -0.1746 };
        let cambridge = Location { latitude: 52.1750, longitude: 0.1400 };
        let d = tooting.distance_km(cambridge);
        assert!((d - 86.0).abs() < 5.0, "{d}");
        assert_eq!(tooting.distance_km(tooting), 0.0);
    }

    #[test]
    fn nearest_scope_first_then_headroom_then_code() {
        // RJ7 is in system QWE (region Y56). RVR, RAX: QWE. RRV, RAL: QMJ (Y56). RGT: QUE (Y61).
        let statuses = [
            status("RGT", 30, 0),
            status("RRV", 20, 18),
            status("RAL", 20, 10),
            status("RAX", 10, 9),
            status("RVR", 10, 7),
            status("RJ7", 10, 10),
        ];
        let r = ranked(&AidBook::new(), Constraints::default(), &statuses);
        assert_eq!(codes(&r), ["RVR", "RAX", "RAL", "RRV", "RGT"]);
        assert_eq!(r.candidates[0].reason, "same system QWE; headroom 3; no distance");
        assert_eq!(r.candidates[2].scope, Level::Region);
        assert_eq!(r.candidates[4].reason, "elsewhere in the nation (system QUE); headroom 30; no distance");
        // Equal headroom in one scope: by code.
        let r = ranked(&AidBook::new(), Constraints::default(), &[status("RVR", 5, 3), status("RAX", 5, 3)]);
        assert_eq!(codes(&r), ["RAX", "RVR"]);
    }

    #[test]
    fn distance_breaks_ties_in_headroom_when_both_have_coordinates() {
        let statuses = [
            at(status("RJ7", 1, 1), 51.427, -0.175),
            status("RAX", 5, 3),                   // no coordinates: after those with a distance
            at(status("RVR", 5, 3), 51.60, -0.10), // ~20 km
            at(status("RJ6", 5, 3), 51.44, -0.17), // ~1.5 km
            at(status("RQY", 9, 3), 53.00, 1.00),  // far, but more headroom wins within the scope
        ];
        let r = ranked(&AidBook::new(), Constraints::default(), &statuses);
        assert_eq!(codes(&r), ["RQY", "RJ6", "RVR", "RAX"]);
        assert!(r.candidates[1].reason.ends_with(" km"), "{}", r.candidates[1].reason);
    }

    #[test]
    fn exclusions_name_their_reason() {
        let mut opel4 = status("RVR", 10, 0);
        opel4.opel = Some(4);
        let mut no_isolation = status("RAX", 10, 0);
        no_isolation.isolation = false;
        let statuses =
            [opel4, no_isolation, status("RJ6", 5, 5), status("RRV", 10, 0), status("XXX", 9, 0), status("RQY", 4, 1)];
        let r = ranked(&AidBook::new(), Constraints { within: Level::System, isolation: true }, &statuses);
        assert_eq!(codes(&r), ["RQY"]);
        let why: Vec<(&str, &str)> = r.excluded.iter().map(|e| (e.provider.as_str(), e.why.as_str())).collect();
        assert_eq!(
            why,
            [
                ("RVR", "at OPEL 4"),
                ("RAX", "cannot isolate"),
                ("RJ6", "no headroom for beds.cc_adult: 5 open - 5 occupied - 0 held = 0"),
                ("RRV", "outside the request's system (it is in system QMJ)"),
                ("XXX", "not in the directory"),
            ]
        );
        // Region reach admits RRV but not RGT.
        let r = ranked(
            &AidBook::new(),
            Constraints { within: Level::Region, isolation: false },
            &[status("RRV", 3, 0), status("RGT", 3, 0)],
        );
        assert_eq!(codes(&r), ["RRV"]);
    }

    #[test]
    fn holds_reduce_headroom_and_rank() {
        // RVR has 3 free but 2 held for an earlier request: RAX (2 free) now ranks first.
        let mut book = AidBook::new();
        book.apply(Action::Create(ask("RJ6", 2)), &actor("RJ6"), t(0)).unwrap();
        let request = book.requests().next().unwrap().id;
        book.apply(
            Action::Offer { request, provider: "RVR".into(), site: None, quantity: 2, hold_until: t(600) },
            &actor("RVR"),
            t(1),
        )
        .unwrap();
        let offer = book.offers_of(request).next().unwrap().id;
        book.apply(Action::Accept { offer, baseline_occupied: 7 }, &actor("RJ6"), t(2)).unwrap();
        let r = ranked(&book, Constraints::default(), &[status("RVR", 10, 7), status("RAX", 10, 8)]);
        assert_eq!(codes(&r), ["RAX", "RVR"]);
        assert_eq!(r.candidates[1].headroom, 1);
    }
}
