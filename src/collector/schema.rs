//! The collector's request and answer, as types for the OpenAPI document.
//! What they declare is what the decoder accepts (`crate::event::fields`):
//! ids of up to 256 characters without control characters, times after
//! 1970.

use serde::Serialize;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// `page_view` or `share`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ViewOrShareType {
    /// A page view.
    PageView,
    /// A share.
    Share,
}

/// `engagement`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EngagementType {
    /// Engaged seconds.
    Engagement,
}

/// What every behaviour event carries (DESIGN §2). The collector sets
/// `user_agent` from the request and `visitor_id` always.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Common {
    /// The article's id.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"
    )]
    pub article_id: String,
    /// When it happened: epoch milliseconds or RFC 3339 text; the
    /// receive time when absent or out of bounds (before 1970, older than
    /// `ingest.max_event_age`, ahead of the clock).
    #[schema(schema_with = occurred_at)]
    pub occurred_at: Option<i64>,
    /// Ignored: the reader is the daily visitor the collector derives
    /// (DESIGN §12), whatever is sent.
    #[schema(schema_with = ignored)]
    pub visitor_id: Option<serde_json::Value>,
    /// The producer's id of the event.
    #[schema(max_length = 256, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub event_id: Option<String>,
    /// Ignored: an article's section comes from its metadata.
    #[schema(schema_with = ignored)]
    pub section: Option<serde_json::Value>,
    /// Ignored: an article's tags come from its metadata.
    #[schema(schema_with = ignored)]
    pub tags: Option<serde_json::Value>,
}

/// A field the collector drops whatever it holds (DESIGN §12): any value.
fn ignored() -> Schema {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
        .description(Some("Ignored: any value is accepted and dropped."))
        .into()
}

/// `occurred_at`: an integer of epoch milliseconds or RFC 3339 text.
fn occurred_at() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .maximum(Some(i64::MAX)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .description(Some(
            "Epoch milliseconds or RFC 3339 text; the receive time when absent or out of bounds.",
        ))
        .examples([serde_json::json!(1694494080000_i64)])
        .into()
}

/// A page view or a share.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ViewOrShare {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: ViewOrShareType,
    /// What every event carries.
    #[serde(flatten)]
    pub common: Common,
    /// For shares: the network, e.g. `"whatsapp"`; carried along, not
    /// counted, so any value is accepted.
    pub network: Option<serde_json::Value>,
}

/// Seconds of active reading.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Engagement {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EngagementType,
    /// What every event carries.
    #[serde(flatten)]
    pub common: Common,
    /// Engaged seconds.
    #[schema(minimum = 0.0)]
    pub engaged_seconds: f64,
}

/// One event, or an array of 1 to 100 of them (the default
/// `collector.max_events_per_request`).
#[derive(Debug)]
#[allow(dead_code)]
pub enum CollectedEvents {
    /// One event.
    One,
    /// Several, all or nothing.
    Many,
}

impl PartialSchema for CollectedEvents {
    fn schema() -> RefOr<Schema> {
        let one = || {
            OneOfBuilder::new()
                .item(Ref::from_schema_name("ViewOrShare"))
                .item(Ref::from_schema_name("Engagement"))
        };
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
        schemas.push(("Common".into(), Common::schema()));
        schemas.push(("ViewOrShare".into(), ViewOrShare::schema()));
        schemas.push(("Engagement".into(), Engagement::schema()));
        schemas.push(("ViewOrShareType".into(), ViewOrShareType::schema()));
        schemas.push(("EngagementType".into(), EngagementType::schema()));
    }
}

/// `202`: the events Kafka acknowledged (crawlers' are dropped, not counted).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"accepted": 3}))]
pub struct Accepted {
    /// Events produced.
    pub accepted: usize,
}
