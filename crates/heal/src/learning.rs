//! Learned thresholds: each starts at its configured value and moves by a step after a false
//! alarm (up: be slower to act) or a missed episode (down: act sooner), within bounds relative
//! to the configured value, so learning can never switch detection off or make it fire on
//! everything.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::settings::Settings;

/// The thresholds in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Failure share that makes a route or pool unhealthy.
    pub error_ratio: f64,
    /// Requests with findings per client and window that make an attack.
    pub attack_findings: f64,
    /// Offenders in one prefix that make a distributed attack.
    pub prefix_offenders: f64,
    /// The last changes, newest last.
    pub changes: VecDeque<ThresholdChange>,
}

/// One move of a threshold, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChange {
    pub at_ms: u64,
    pub threshold: Threshold,
    pub from: f64,
    pub to: f64,
    pub reason: String,
}

/// Which threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    ErrorRatio,
    AttackFindings,
    PrefixOffenders,
}

/// What an outcome taught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lesson {
    /// Heal acted when it should not have: be slower.
    FalseAlarm,
    /// Heal did not act when it should have: be quicker.
    Missed,
}

const MAX_CHANGES: usize = 100;

impl Thresholds {
    pub fn from_settings(settings: &Settings) -> Self {
        Thresholds {
            error_ratio: settings.error_ratio,
            attack_findings: f64::from(settings.attack_findings),
            prefix_offenders: f64::from(settings.prefix_offenders),
            changes: VecDeque::new(),
        }
    }

    /// The configured value and bounds of one threshold.
    fn bounds(threshold: Threshold, settings: &Settings) -> (f64, f64, f64) {
        let l = &settings.learning;
        let (base, floor, ceiling) = match threshold {
            Threshold::ErrorRatio => (settings.error_ratio, 0.05, 1.0),
            Threshold::AttackFindings => (f64::from(settings.attack_findings), 1.0, f64::MAX),
            Threshold::PrefixOffenders => (f64::from(settings.prefix_offenders), 2.0, f64::MAX),
        };
        let low = (base * l.min_factor).max(floor).min(ceiling);
        let high = (base * l.max_factor).min(ceiling).max(low);
        (base, low, high)
    }

    fn slot(&mut self, threshold: Threshold) -> &mut f64 {
        match threshold {
            Threshold::ErrorRatio => &mut self.error_ratio,
            Threshold::AttackFindings => &mut self.attack_findings,
            Threshold::PrefixOffenders => &mut self.prefix_offenders,
        }
    }

    /// Brings learned values inside the bounds of (possibly changed) settings; learning off
    /// means the configured values apply as they are.
    pub fn clamp_to(&mut self, settings: &Settings) {
        for threshold in [
            Threshold::ErrorRatio,
            Threshold::AttackFindings,
            Threshold::PrefixOffenders,
        ] {
            let (base, low, high) = Self::bounds(threshold, settings);
            let slot = self.slot(threshold);
            *slot = if settings.learning.enabled && slot.is_finite() {
                slot.clamp(low, high)
            } else {
                base
            };
        }
    }

    /// Moves `threshold` after `lesson`; returns the change, if the value moved.
    pub fn learn(
        &mut self,
        threshold: Threshold,
        lesson: Lesson,
        settings: &Settings,
        at_ms: u64,
        reason: String,
    ) -> Option<ThresholdChange> {
        if !settings.learning.enabled {
            return None;
        }
        let (base, low, high) = Self::bounds(threshold, settings);
        let step = base * settings.learning.step;
        let slot = self.slot(threshold);
        let from = *slot;
        let to = match lesson {
            Lesson::FalseAlarm => from + step,
            Lesson::Missed => from - step,
        }
        .clamp(low, high);
        if (to - from).abs() < f64::EPSILON {
            return None;
        }
        *slot = to;
        let change = ThresholdChange {
            at_ms,
            threshold,
            from,
            to,
            reason,
        };
        self.changes.push_back(change.clone());
        while self.changes.len() > MAX_CHANGES {
            self.changes.pop_front();
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_move_by_step_and_stay_in_bounds() {
        let settings = Settings::default();
        let mut t = Thresholds::from_settings(&settings);
        assert_eq!(t.attack_findings, 5.0);
        let up = t
            .learn(
                Threshold::AttackFindings,
                Lesson::FalseAlarm,
                &settings,
                1,
                "test".into(),
            )
            .unwrap();
        assert_eq!((up.from, up.to), (5.0, 6.25));
        for _ in 0..100 {
            t.learn(
                Threshold::AttackFindings,
                Lesson::FalseAlarm,
                &settings,
                2,
                "x".into(),
            );
        }
        assert_eq!(t.attack_findings, 20.0, "max_factor 4 bounds it");
        for _ in 0..100 {
            t.learn(
                Threshold::AttackFindings,
                Lesson::Missed,
                &settings,
                3,
                "x".into(),
            );
        }
        assert_eq!(t.attack_findings, 2.5, "min_factor 0.5 bounds it");
        assert!(
            t.learn(
                Threshold::AttackFindings,
                Lesson::Missed,
                &settings,
                4,
                "x".into()
            )
            .is_none(),
            "at the bound nothing moves"
        );
        for _ in 0..100 {
            t.learn(
                Threshold::ErrorRatio,
                Lesson::FalseAlarm,
                &settings,
                5,
                "x".into(),
            );
        }
        assert_eq!(t.error_ratio, 1.0, "a ratio never passes 1");
        assert!(t.changes.len() <= MAX_CHANGES);
    }

    #[test]
    fn learning_off_pins_the_configured_values() {
        let mut settings = Settings::default();
        let mut t = Thresholds::from_settings(&settings);
        t.learn(
            Threshold::AttackFindings,
            Lesson::FalseAlarm,
            &settings,
            1,
            "x".into(),
        );
        settings.learning.enabled = false;
        t.clamp_to(&settings);
        assert_eq!(t.attack_findings, 5.0);
        assert!(
            t.learn(
                Threshold::AttackFindings,
                Lesson::Missed,
                &settings,
                2,
                "x".into()
            )
            .is_none()
        );
    }
}
