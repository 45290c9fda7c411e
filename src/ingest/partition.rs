//! A partition of a topic, named once: `topic/partition` is how fences and
//! saved filters name it in the store, and how logs show it.

use std::fmt;
use std::sync::Arc;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    topic: Arc<str>,
    partition: i32,
    /// `topic/partition`, made once.
    name: Arc<str>,
}

impl PartitionId {
    /// Partition `partition` of `topic`.
    pub fn new(topic: &str, partition: i32) -> PartitionId {
        PartitionId {
            topic: topic.into(),
            partition,
            name: format!("{topic}/{partition}").into(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition's number in its topic.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// `topic/partition`: the name of its fences and saved filter.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when this is partition `partition` of `topic`.
    pub fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && *self.topic == *topic
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_named_topic_slash_number() {
        let p = PartitionId::new("page-views", 7);
        assert_eq!(p.name(), "page-views/7");
        assert_eq!(p.to_string(), "page-views/7");
        assert!(p.is("page-views", 7));
        assert!(!p.is("page-views", 8));
        assert_eq!(p, PartitionId::new("page-views", 7));
    }
}
