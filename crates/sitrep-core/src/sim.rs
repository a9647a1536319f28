//! Plausible, slowly drifting synthetic values for one provider, for the simulator and the demo.
//!
//! Deterministic for a given provider code and seed, so a demo looks the same each time and tests can rely on it.
//! Capacity is sized from the provider's kind and code; occupancy, ED crowding and handover delays follow
//! mean-reverting random walks, and the declared OPEL level follows from occupancy and ED pressure. Every value
//! it produces passes validation (occupied never exceeds open, counts are whole).

use std::collections::BTreeMap;

use crate::directory::ProviderKind;

/// A small, fast pseudo-random generator (xorshift64*). Not for anything but synthetic data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly normal with mean 0 and deviation 1 (sum of uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..6).map(|_| self.unit()).sum::<f64>() - 3.0
    }
}

fn hash(text: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A pressure that drifts around a mean: x += pull * (mean - x) * dt + spread * sqrt(dt) * noise.
#[derive(Clone, Debug)]
struct Walk {
    x: f64,
    mean: f64,
    spread: f64,
    lo: f64,
    hi: f64,
}

impl Walk {
    fn step(&mut self, rng: &mut Rng, hours: f64) {
        self.x += 0.2 * (self.mean - self.x) * hours + self.spread * hours.sqrt() * rng.normal();
        self.x = self.x.clamp(self.lo, self.hi);
    }
}

/// The synthetic state of one provider.
#[derive(Clone, Debug)]
pub struct SimProvider {
    kind: ProviderKind,
    rng: Rng,
    capacity: BTreeMap<&'static str, f64>,
    occupancy: Walk,
    ed: Walk,
    handover: Walk,
    absence: Walk,
}

const BEDS: [&str; 7] = ["ga_adult", "ga_paed", "cc_adult", "cc_paed", "cc_neonatal", "mh_adult", "escalation"];

impl SimProvider {
    pub fn new(code: &str, kind: ProviderKind, seed: u64) -> Self {
        let mut rng = Rng::new(hash(code) ^ seed);
        let size = 0.6 + rng.unit(); // 0.6 ..= 1.6
        let base: &[(&'static str, f64)] = match kind {
            ProviderKind::Acute => &[
                ("ga_adult", 650.0),
                ("ga_paed", 40.0),
                ("cc_adult", 30.0),
                ("cc_paed", 4.0),
                ("cc_neonatal", 12.0),
                ("escalation", 20.0),
                ("ventilators", 45.0),
            ],
            ProviderKind::Specialist => {
                &[("ga_paed", 200.0), ("cc_paed", 40.0), ("cc_adult", 20.0), ("ventilators", 60.0)]
            }
            ProviderKind::MentalHealth => &[("mh_adult", 280.0)],
            ProviderKind::Community => &[("ga_adult", 90.0)],
            ProviderKind::Ambulance => &[],
        };
        let capacity = base.iter().map(|(k, v)| (*k, (v * size).round().max(1.0))).collect();
        let walk = |mean: f64, spread: f64, lo: f64, hi: f64| Walk { x: mean, mean, spread, lo, hi };
        SimProvider {
            kind,
            capacity,
            occupancy: walk(0.9 + 0.05 * rng.unit(), 0.015, 0.6, 1.0),
            ed: walk(0.6 + 0.3 * rng.unit(), 0.08, 0.1, 1.6),
            handover: walk(25.0 + 20.0 * rng.unit(), 4.0, 8.0, 180.0),
            absence: walk(4.0 + 3.0 * rng.unit(), 0.3, 1.0, 20.0),
            rng,
        }
    }

    /// Advances the provider by `hours` of simulated time and returns its figures (metric code -> value) and its
    /// declared OPEL level.
    pub fn step(&mut self, hours: f64) -> (BTreeMap<String, f64>, u32) {
        let rng = &mut self.rng;
        self.occupancy.step(rng, hours);
        self.ed.step(rng, hours);
        self.handover.step(rng, hours);
        self.absence.step(rng, hours);
        let mut out = BTreeMap::new();
        for bed in BEDS {
            let Some(&open) = self.capacity.get(bed) else { continue };
            // Escalation beds open only under pressure.
            let open = if bed == "escalation" {
                (open * ((self.occupancy.x - 0.9) * 10.0).clamp(0.0, 1.0)).round()
            } else {
                open
            };
            let jitter = 1.0 + 0.02 * rng.normal();
            let occupied = (open * self.occupancy.x * jitter).round().clamp(0.0, open);
            out.insert(format!("beds.{bed}.open"), open);
            out.insert(format!("beds.{bed}.occupied"), occupied);
        }
        if let Some(&total) = self.capacity.get("ventilators") {
            out.insert("ventilators.total".into(), total);
            out.insert("ventilators.in_use".into(), (total * 0.7 * self.occupancy.x).round().min(total));
        }
        if self.kind == ProviderKind::Acute {
            let ga = self.capacity.get("ga_adult").copied().unwrap_or(300.0);
            let in_department = (ga * 0.12 * self.ed.x).round();
            let over_12h = (in_department * 0.15 * (self.ed.x - 0.4).max(0.0)).round();
            let dta = (in_department * 0.3 * self.occupancy.x).round().min(in_department);
            out.insert("ed.in_department".into(), in_department);
            out.insert("ed.over_12h".into(), over_12h.min(in_department));
            out.insert("ed.dta_waiting".into(), dta);
            let arrivals = (ga / 25.0).round();
            let late = (arrivals * (self.handover.x / 120.0).min(0.9)).round();
            out.insert("ambulance.handover_30_60".into(), (late * 0.7).round());
            out.insert("ambulance.handover_over_60".into(), (late * 0.3).round());
            out.insert("ambulance.handover_mean_minutes".into(), (self.handover.x * 10.0).round() / 10.0);
            out.insert("flow.no_criteria_to_reside".into(), (ga * 0.14 * self.occupancy.x).round());
            out.insert("flow.discharges".into(), (ga / 24.0 * (0.8 + 0.4 * rng.unit())).round());
        }
        out.insert("staff.absence_percent".into(), (self.absence.x * 10.0).round() / 10.0);
        let pressure = self.occupancy.x * 0.7 + self.ed.x * 0.3;
        let opel = match pressure {
            p if p >= 1.05 => 4,
            p if p >= 0.95 => 3,
            p if p >= 0.85 => 2,
            _ => 1,
        };
        (out, opel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{demo_directory, nhs_england_catalogue};
    use crate::{Limits, Report, Timestamp, validate};

    #[test]
    fn every_simulated_report_is_valid_and_values_drift() {
        let (dir, cat) = (demo_directory(), nhs_england_catalogue());
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        for p in dir.providers() {
            let mut sim = SimProvider::new(&p.code, p.kind, 7);
            let mut previous = None;
            let mut changed = 0;
            for hour in 0..48 {
                let (values, opel) = sim.step(1.0);
                let report = Report {
                    provider: p.code.clone(),
                    period: Some(now.hour_start().add_hours(hour - 48)),
                    revision: 1,
                    observed_at: Some(now),
                    values: values.iter().map(|(k, v)| (k.clone(), (*v).into())).collect(),
                    opel_level: Some(opel),
                    ..Default::default()
                };
                validate(&report, &dir, &cat, &Limits::default(), now).unwrap_or_else(|e| panic!("{}: {e:?}", p.code));
                if previous.as_ref().is_some_and(|v| v != &values) {
                    changed += 1;
                }
                previous = Some(values);
            }
            assert!(changed > 24, "{} values barely drift", p.code);
        }
    }

    #[test]
    fn deterministic_per_code_and_seed() {
        let a = SimProvider::new("RJ7", ProviderKind::Acute, 1).step(1.0);
        let b = SimProvider::new("RJ7", ProviderKind::Acute, 1).step(1.0);
        assert_eq!(a, b);
    }
}
