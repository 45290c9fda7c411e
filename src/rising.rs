//! Rising (DESIGN §14): what is taking off now. An article's decayed score
//! in a profile of half-life H, times ln 2 / H, is its weighted events per
//! second as that profile sees them; for a steady stream every profile
//! sees the same rate, and a surge makes the short profile's rate leave the
//! long one's behind:
//!
//! ```text
//! rising = (rate_short − rate_long)² / max(rate_long, floor)
//!          when rate_short > rate_long and score_short ≥ min_score, else 0
//! ```
//!
//! Pure: the API reads the two scores and calls [`Rising::of`].

use crate::config::RisingSettings;
use crate::scoring::Profiles;
use crate::store::ProfileId;

/// The rising formula with its profiles and bounds, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Rising {
    /// The short profile.
    pub short: ProfileId,
    /// The long profile.
    pub long: ProfileId,
    short_half_life_s: f64,
    long_half_life_s: f64,
    floor: f64,
    min_score: f64,
}

/// One article's rise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rise {
    /// The rising score; 0 when the article is not taking off.
    pub rising: f64,
    /// Weighted events per second as the short profile sees them.
    pub rate_short: f64,
    /// Weighted events per second as the long profile sees them.
    pub rate_long: f64,
}

impl Rising {
    /// The formula over `settings`' profiles, which validation has checked
    /// exist among `profiles`.
    pub fn new(settings: &RisingSettings, profiles: &Profiles) -> Rising {
        let find = |name: &str| {
            profiles
                .iter()
                .position(|p| p.name == name)
                .expect("validated: rising names configured profiles")
        };
        let (short, long) = (find(&settings.short), find(&settings.long));
        Rising {
            short: ProfileId(short),
            long: ProfileId(long),
            short_half_life_s: profiles[short].half_life_ms / 1000.0,
            long_half_life_s: profiles[long].half_life_ms / 1000.0,
            floor: settings.floor,
            min_score: settings.min_score,
        }
    }

    /// The rise of an article whose decayed scores are `short` and `long`
    /// (None: not ranked, 0).
    pub fn of(&self, short: f64, long: Option<f64>) -> Rise {
        let ln2 = std::f64::consts::LN_2;
        let rate_short = short * ln2 / self.short_half_life_s;
        let rate_long = long.unwrap_or(0.0) * ln2 / self.long_half_life_s;
        let rising = if rate_short > rate_long && short >= self.min_score {
            (rate_short - rate_long).powi(2) / rate_long.max(self.floor)
        } else {
            0.0
        };
        Rise {
            rising,
            rate_short,
            rate_long,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn rising() -> Rising {
        let s = Settings::defaults();
        Rising::new(&s.rising, &crate::scoring::profiles(&s.scoring))
    }

    #[test]
    fn a_steady_stream_does_not_rise_and_a_surge_does() {
        let r = rising();
        // r events per second for ever: score = r · H / ln 2 in each profile.
        let rate = 0.5;
        let steady = |h_s: f64| rate * h_s / std::f64::consts::LN_2;
        let flat = r.of(steady(7_200.0), Some(steady(86_400.0)));
        assert!((flat.rate_short - rate).abs() < 1e-12);
        assert!((flat.rate_long - rate).abs() < 1e-12);
        // Equal rates, but for the last bits of a float.
        assert!(flat.rising < 1e-20, "{flat:?}");
        // 100 views in the last minutes of an article nobody read before.
        let surge = r.of(100.0, Some(100.0));
        let (s, l) = (
            100.0 * std::f64::consts::LN_2 / 7_200.0,
            100.0 * std::f64::consts::LN_2 / 86_400.0,
        );
        assert!((surge.rising - (s - l).powi(2) / l.max(1.0 / 3600.0)).abs() < 1e-12);
        assert!(surge.rising > 0.0);
        // Below min_score nothing rises; unranked in the long profile is 0.
        assert_eq!(r.of(4.9, None).rising, 0.0);
        let new = r.of(6.0, None);
        let s = 6.0 * std::f64::consts::LN_2 / 7_200.0;
        assert!((new.rising - s * s * 3600.0).abs() < 1e-12);
    }
}
