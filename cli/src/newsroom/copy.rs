//! The newsroom's words: headlines and summaries that read like a news
//! site's, no headline twice.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::Rng;

/// Headlines per section (in the order of [`super::SECTIONS`]): every subject
/// reads with every predicate, so a headline is one of each.
const HEADLINES: &[(&[&str], &[&str])] = &[
    (
        &[
            "Parliament",
            "The foreign minister",
            "The coalition",
            "The health service",
            "The central bank",
            "The election commission",
            "The climate envoy",
            "The mayor of Lisbon",
        ],
        &[
            "approves an emergency budget",
            "delays the pension vote",
            "faces questions over a leaked report",
            "calls for talks on the border",
            "promises a ban on coal by 2030",
            "wins a court fight over data",
            "sets a date for the referendum",
            "backs a plan for cheaper trains",
        ],
    ),
    (
        &[
            "The chipmaker",
            "Europe's largest airline",
            "A Nairobi fintech",
            "The stock exchange",
            "The energy regulator",
            "A car maker",
            "The oil major",
            "A grocery chain",
        ],
        &[
            "cuts its forecast for the year",
            "buys a rival for $2 billion",
            "raises prices for the third time",
            "opens a factory in Porto",
            "settles a dispute with its workers",
            "doubles its profit",
            "shelves plans for a listing",
            "bets on solar power",
        ],
    ),
    (
        &[
            "Our city",
            "The new tax",
            "Remote work",
            "The school year",
            "Public broadcasting",
            "A four-day week",
            "The housing plan",
            "The referendum",
        ],
        &[
            "needs a braver answer",
            "is worth defending",
            "deserves a second look",
            "will not fix the deficit",
            "asks too much of teachers",
            "is a test of trust",
            "should start with renters",
            "could still surprise us",
        ],
    ),
    (
        &[
            "The storm",
            "The rescue operation",
            "The investigation",
            "The river",
            "The ceasefire",
            "The wildfire",
            "The outage",
            "The strike",
        ],
        &[
            "reaches the coast overnight",
            "enters its third day",
            "widens to two ministries",
            "rises past the 1998 record",
            "holds for a second night",
            "forces thousands to leave",
            "is traced to a faulty cable",
            "closes every port in the region",
        ],
    ),
    (
        &[
            "A Hanoi noodle stall",
            "The night train to Oslo",
            "Slow travel",
            "The museum",
            "A forgotten grain",
            "The city's oldest café",
            "A weekend in Lima",
            "Winter swimming",
        ],
        &[
            "wins over the critics",
            "is back after ten years",
            "is cheaper than you think",
            "reopens with a new wing",
            "finds its way onto menus",
            "changes hands after a century",
            "makes the case for going slow",
            "is the trend of the season",
        ],
    ),
    (
        &[
            "The national team",
            "The defending champion",
            "The Busan club",
            "A 17-year-old",
            "The coach",
            "The marathon",
            "The Olympic committee",
            "The league",
        ],
        &[
            "books a place in the final",
            "stuns the favourite in five sets",
            "signs a record deal",
            "breaks the course record",
            "steps down after a losing run",
            "moves to a new stadium",
            "picks Accra for the next games",
            "bans a team for a season",
        ],
    ),
];
/// One-line summaries, by how a story stands.
const SUMMARIES: &[&str] = &[
    "What happened, who is affected and what comes next.",
    "The decision follows weeks of talks and divides opinion.",
    "Officials promise more details in the coming days.",
    "Critics say the plan leaves the hardest questions open.",
    "Our correspondent explains why it matters beyond the city.",
    "The numbers behind the story, and what they leave out.",
    "Readers have asked about it all week; here are the answers.",
    "A turning point, or a pause before the next round?",
];
/// Forms of a headline that has been used, so that none repeats.
const FOLLOW_UPS: &[&str] = &["", "Analysis: ", "Live: ", "Explained: ", "What we know: "];

/// The headlines handed out so far.
#[derive(Debug, Default)]
pub(super) struct Headlines {
    used: HashSet<String>,
}

impl Headlines {
    /// A headline of `section` not used before: a subject and a predicate
    /// drawn until the pair is new, then in follow-up forms, and at last
    /// numbered with `serial` (the article's number).
    pub(super) fn next(&mut self, rng: &mut StdRng, section: usize, serial: usize) -> String {
        let (subjects, predicates) = HEADLINES[section % HEADLINES.len()];
        for round in 0.. {
            let prefix = FOLLOW_UPS.get(round / 4).copied().unwrap_or("More: ");
            let s = subjects[rng.random_range(0..subjects.len())];
            let p = predicates[rng.random_range(0..predicates.len())];
            let mut title = format!("{prefix}{s} {p}");
            if round >= 4 * FOLLOW_UPS.len() {
                title = format!("{title} ({serial})");
            }
            if self.used.insert(title.clone()) {
                return title;
            }
        }
        unreachable!("the loop returns")
    }
}

/// A one-line summary.
pub(super) fn summary(rng: &mut StdRng) -> &'static str {
    SUMMARIES[rng.random_range(0..SUMMARIES.len())]
}
