//! RAG ratings: red, amber or green for a figure, from thresholds with a direction.
//!
//! Boundaries are inclusive in the worsening direction: with higher-is-worse thresholds amber 85 and red 95, 85 is
//! amber and 95 is red; with lower-is-worse amber 2 and red 0, 2 free beds is amber and 0 is red. A figure whose
//! capacity is below the rule's `min_capacity` is not rated at all (`None`), so small units do not change colour
//! on a single patient; neither is a figure with no value.

use serde::{Deserialize, Serialize};

use crate::catalogue::RagRule;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rag {
    Green,
    Amber,
    Red,
}

impl Rag {
    pub fn as_str(self) -> &'static str {
        match self {
            Rag::Green => "green",
            Rag::Amber => "amber",
            Rag::Red => "red",
        }
    }
}

/// The rating of `value` under `rule`; `capacity` is what `min_capacity` is compared with (None: not applicable).
pub fn rate(rule: &RagRule, value: f64, capacity: Option<f64>) -> Option<Rag> {
    if !value.is_finite() {
        return None;
    }
    if let (Some(min), Some(cap)) = (rule.min_capacity, capacity)
        && cap < min
    {
        return None;
    }
    Some(if rule.direction.reaches(value, rule.red) {
        Rag::Red
    } else if rule.direction.reaches(value, rule.amber) {
        Rag::Amber
    } else {
        Rag::Green
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Direction::{HigherIsWorse, LowerIsWorse};

    #[test]
    fn boundaries_in_both_directions_and_small_denominators() {
        let up = RagRule { direction: HigherIsWorse, amber: 85.0, red: 95.0, min_capacity: Some(6.0) };
        let down = RagRule { direction: LowerIsWorse, amber: 2.0, red: 0.0, min_capacity: None };
        let g = Some(Rag::Green);
        let a = Some(Rag::Amber);
        let r = Some(Rag::Red);
        let cases: [(&RagRule, f64, Option<f64>, Option<Rag>); 14] = [
            (&up, 84.999, Some(20.0), g),
            (&up, 85.0, Some(20.0), a),
            (&up, 94.999, Some(20.0), a),
            (&up, 95.0, Some(20.0), r),
            (&up, 100.0, Some(20.0), r),
            (&up, 0.0, Some(20.0), g),
            // Capacity at the minimum is rated; below it is not, whatever the value.
            (&up, 100.0, Some(6.0), r),
            (&up, 100.0, Some(5.0), None),
            (&up, 100.0, None, r),
            (&up, f64::NAN, Some(20.0), None),
            (&down, 3.0, None, g),
            (&down, 2.0, None, a),
            (&down, 1.0, None, a),
            (&down, 0.0, None, r),
        ];
        for (rule, value, capacity, expected) in cases {
            assert_eq!(rate(rule, value, capacity), expected, "{value} with capacity {capacity:?} under {rule:?}");
        }
    }
}
