//! The lists an article's events reach: its groups (every article, its
//! section, its tags, the tags), in the network and in its site.

/// A group of rankings: the lists of one scope (every article, a section,
/// a tag, the tags), in the network or one of its sites.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// Every article.
    All,
    /// Articles of one section.
    Section(String),
    /// Articles carrying one tag.
    Tag(String),
    /// Tags themselves, ranked by the events of their articles.
    Tags,
    /// The group restricted to one site of a network (DESIGN §11): the
    /// group itself is the network's. Never holds a `Site`.
    Site(String, Box<Group>),
}

impl Group {
    /// This network group restricted to `site`; itself for `None`.
    pub fn of_site(self, site: Option<&str>) -> Group {
        match site {
            Some(site) => Group::Site(site.to_string(), Box::new(self)),
            None => self,
        }
    }
}

/// Where an event of an article lands: each group with the member it bumps
/// there (the article, or the tag in the tags ranking). Computed once per
/// article and flush, so adding an event allocates nothing.
/// In a network, `site` names the article's site: every group is then
/// written twice, the network's and the site's, so that both lists are
/// one sorted set each and exact (Popular Tags sums a tag over sites).
pub fn destinations(
    article_id: &str,
    site: Option<&str>,
    section: Option<&str>,
    tags: &[String],
) -> Vec<(Group, String)> {
    let mut out = Vec::with_capacity(2 * (2 + 2 * tags.len()));
    out.push((Group::All, article_id.to_string()));
    if let Some(s) = section {
        out.push((Group::Section(s.to_string()), article_id.to_string()));
    }
    for t in tags {
        out.push((Group::Tag(t.clone()), article_id.to_string()));
        out.push((Group::Tags, t.clone()));
    }
    if let Some(site) = site {
        for i in 0..out.len() {
            let (g, member) = out[i].clone();
            out.push((g.of_site(Some(site)), member));
        }
    }
    out
}
