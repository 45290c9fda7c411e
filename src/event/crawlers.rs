//! Whether a user agent is a known crawler: isbot's patterns (hundreds of
//! regular expressions), with the verdicts of the agents seen remembered,
//! since a few browsers send most traffic. What is remembered is bounded:
//! at most [`MAX_AGENTS`] agents of at most [`MAX_AGENT_BYTES`] each.

/// Most user agents remembered.
const MAX_AGENTS: usize = 10_000;
/// Longest user agent remembered, in bytes: browsers and crawlers send a
/// few hundred, and a message may carry one of 64 KiB, so without it
/// [`MAX_AGENTS`] agents could hold 640 MiB. A longer one is judged each
/// time it comes.
const MAX_AGENT_BYTES: usize = 512;

/// The crawler patterns and the verdicts remembered.
#[derive(Default)]
pub(super) struct Crawlers {
    patterns: isbot::Bots,
    verdicts: parking_lot::Mutex<ahash::HashMap<Box<str>, bool>>,
}

impl Crawlers {
    /// True when `user_agent` is a known crawler.
    pub(super) fn judge(&self, user_agent: &str) -> bool {
        if user_agent.len() > MAX_AGENT_BYTES {
            return self.patterns.is_bot(user_agent);
        }
        if let Some(v) = self.verdicts.lock().get(user_agent) {
            return *v;
        }
        let v = self.patterns.is_bot(user_agent);
        let mut verdicts = self.verdicts.lock();
        if verdicts.len() >= MAX_AGENTS {
            verdicts.clear();
        }
        verdicts.insert(user_agent.into(), v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_user_agents_are_judged_each_time_and_not_kept() {
        // Agents as long as a message allows (the collector's header, or a
        // producer's field): when every agent was kept, these 800 held 48 MB.
        let c = Crawlers::default();
        let pad = "x".repeat(60_000);
        for i in 0..400 {
            let browser = format!("Mozilla/5.0 (X11; Linux x86_64) {i} {pad}");
            let crawler = format!("Mozilla/5.0 (compatible; Googlebot/2.1) {i} {pad}");
            assert!(!c.judge(&browser), "browser {i}");
            assert!(c.judge(&crawler), "crawler {i}");
        }
        let kept: usize = c.verdicts.lock().keys().map(|k| k.len()).sum();
        assert_eq!(kept, 0, "bytes of agents kept");
        // Usual agents are kept, with their verdicts.
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
        let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert!(!c.judge(chrome) && c.judge(google));
        assert_eq!(c.verdicts.lock().get(chrome), Some(&false));
        assert_eq!(c.verdicts.lock().get(google), Some(&true));
    }
}
