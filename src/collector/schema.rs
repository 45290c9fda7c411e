//! The collector's request and answer, as types for the OpenAPI document:
//! the bounds declared here are the ones the decoder enforces
//! (`crate::event::fields`).

use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// A behaviour event as the collector takes it (DESIGN §2). The collector
/// sets `user_agent` from the request, and `visitor_id` when it is absent.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct CollectedEvent {
    /// `page_view`, `share` or `engagement`.
    #[serde(rename = "type")]
    #[schema(value_type = String, pattern = "^(page_view|share|engagement)$")]
    pub kind: String,
    /// The article's id.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub article_id: String,
    /// When it happened: RFC 3339 or epoch milliseconds; the receive time
    /// when absent or out of bounds.
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub occurred_at: Option<i64>,
    /// Who did it; a daily visitor is derived when absent.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub visitor_id: Option<String>,
    /// The producer's id of the event.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub event_id: Option<String>,
    /// Section, normalised to a slug.
    #[schema(max_length = 200)]
    pub section: Option<String>,
    /// Tags, normalised to slugs.
    #[schema(max_items = 32)]
    pub tags: Option<Vec<String>>,
    /// Engaged seconds (required for `engagement`).
    #[schema(minimum = 0.0, maximum = 86400.0)]
    pub engaged_seconds: Option<f64>,
    /// For shares: the network, e.g. `whatsapp`.
    #[schema(max_length = 64)]
    pub network: Option<String>,
}

/// One event, or an array of 1 to 100 of them (the default
/// `collector.max_events_per_request`).
#[derive(Debug)]
#[allow(dead_code)]
pub enum CollectedEvents {
    /// One event.
    One(CollectedEvent),
    /// Several, all or nothing.
    Many(Vec<CollectedEvent>),
}

impl PartialSchema for CollectedEvents {
    fn schema() -> RefOr<Schema> {
        let one = || Ref::from_schema_name("CollectedEvent");
        OneOfBuilder::new()
            .item(one())
            .item(
                ArrayBuilder::new()
                    .items(one())
                    .min_items(Some(1))
                    .max_items(Some(100)),
            )
            .into()
    }
}

impl ToSchema for CollectedEvents {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("CollectedEvent".into(), CollectedEvent::schema()));
    }
}

/// `202`: the events Kafka acknowledged (crawlers' are dropped, not counted).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Events produced.
    pub accepted: usize,
}
