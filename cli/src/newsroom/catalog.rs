//! What the synthetic newsroom publishes about: its sections and their
//! tags (as slugs, and the names they are published with) and the demo's
//! network of sites.

/// The name a slug of [`SECTIONS`] is published with: "special-updates"
/// is "Special Updates".
pub fn display_name(slug: &str) -> String {
    slug.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sections and the tags their articles carry (slugs).
pub const SECTIONS: &[(&str, &[&str])] = &[
    (
        "news",
        &[
            "international",
            "politics",
            "elections",
            "climate",
            "health",
        ],
    ),
    ("business", &["markets", "technology", "energy", "economy"]),
    ("opinion", &["editorial", "columns", "letters"]),
    ("special-updates", &["live", "breaking", "investigation"]),
    ("lifestyle", &["food", "travel", "culture", "health"]),
    ("sport", &["football", "tennis", "olympics"]),
];

/// The demo's network, after the seed's: four sites of different sizes.
pub const DEMO_SITES: &[(&str, f64)] = &[
    ("beritasatu", 0.45),
    ("investor-daily", 0.25),
    ("jakarta-globe", 0.2),
    ("btv", 0.1),
];

/// Display names of [`DEMO_SITES`].
pub const DEMO_SITE_NAMES: &[(&str, &str)] = &[
    ("beritasatu", "BeritaSatu"),
    ("investor-daily", "Investor Daily"),
    ("jakarta-globe", "Jakarta Globe"),
    ("btv", "BTV"),
];
