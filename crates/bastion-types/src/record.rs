//! A stored record of a manifest entity.

use serde::{Deserialize, Serialize};

use crate::{RecordId, UnixTime, UserId};

/// One record of a manifest entity (a quote, a proposal), as the store returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's id.
    pub id: RecordId,
    /// The manifest entity name, e.g. `quote`.
    pub entity: String,
    /// The user who created the record.
    pub owner_id: UserId,
    /// A JSON object of the entity's fields, validated against the manifest by the pipeline.
    pub data: serde_json::Value,
    /// Starts at 1 and grows by one per update; used for optimistic concurrency.
    pub version: i64,
    /// Creation time, seconds since the epoch.
    pub created_at: UnixTime,
    /// Last update time, seconds since the epoch.
    pub updated_at: UnixTime,
}
