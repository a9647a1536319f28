//! The data that ships with sitrep: the default NHS England metric catalogue and a small demo directory.
//!
//! Both are plain TOML files in `crates/sitrep-core/data/`, compiled in so `sitrep serve` works with no
//! configuration at all. A deployment replaces them with its own files (`catalogue` and `directory` in the config).

use crate::{Catalogue, Directory};

/// The NHS England profile: beds by type (open and occupied), ventilators, ED, ambulance handovers, flow,
/// staffing and declared OPEL.
pub const NHS_ENGLAND_CATALOGUE: &str = include_str!("../data/nhs-england.catalogue.toml");

/// A demo directory: one nation, two regions, four systems and about twenty providers with ODS-style codes.
pub const DEMO_DIRECTORY: &str = include_str!("../data/demo.directory.toml");

pub fn nhs_england_catalogue() -> Catalogue {
    Catalogue::from_toml("built-in nhs-england catalogue", NHS_ENGLAND_CATALOGUE)
        .expect("the built-in catalogue is valid (checked by tests)")
}

pub fn demo_directory() -> Directory {
    Directory::from_toml("built-in demo directory", DEMO_DIRECTORY)
        .expect("the built-in directory is valid (checked by tests)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn nhs_england_profile_has_every_bed_type_with_open_and_occupied() {
        let c = nhs_england_catalogue();
        for bed in ["ga_adult", "ga_paed", "cc_adult", "cc_paed", "cc_neonatal", "mh_adult", "escalation"] {
            let open = c.get(&format!("beds.{bed}.open")).expect("open beds");
            let occupied = c.get(&format!("beds.{bed}.occupied")).expect("occupied beds");
            assert_eq!(open.kind, Kind::Count);
            assert_eq!(occupied.at_most.as_deref(), Some(open.code.as_str()));
        }
        for code in [
            "ventilators.total",
            "ventilators.in_use",
            "ed.in_department",
            "ed.over_12h",
            "ed.dta_waiting",
            "ambulance.handover_30_60",
            "ambulance.handover_over_60",
            "ambulance.handover_mean_minutes",
            "flow.no_criteria_to_reside",
            "flow.discharges",
            "staff.absence_percent",
            "opel.level",
            "critcon.level",
        ] {
            assert!(c.contains(code), "{code} missing");
        }
        assert_eq!(c.get("opel.level").unwrap().max, Some(4));
        let critcon = c.get("critcon.level").unwrap();
        assert_eq!((critcon.kind, critcon.min, critcon.max), (Kind::Level, Some(0), Some(3)));
    }

    #[test]
    fn demo_directory_shape() {
        let d = demo_directory();
        assert_eq!(d.regions().count(), 2);
        assert_eq!(d.systems().count(), 4);
        assert!((18..=26).contains(&d.providers().count()));
    }
}
