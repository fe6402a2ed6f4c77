//! Documents. Bodies stay raw JSON (`Box<RawValue>`): the server stores and relays them
//! untouched. [`DocumentMeta`] reads the system fields a server needs for conflict handling.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::decode::{expect_object, json_error_text};

/// `_vclock`: `{[nodeId]: counter}`.
pub type VClock = BTreeMap<String, u64>;

/// The system fields of a document: `{_id, _rev?, _deleted?, _createdAt?, _updatedAt?, _vclock?}`.
/// A present `null` reads as absent. Everything else in the body (the user fields) is ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DocumentMeta {
    #[serde(rename = "_id", default)]
    pub id: Option<String>,
    #[serde(rename = "_rev", default)]
    pub rev: Option<String>,
    #[serde(rename = "_deleted", default)]
    pub deleted: Option<bool>,
    /// Milliseconds; any JSON number.
    #[serde(rename = "_createdAt", default)]
    pub created_at: Option<f64>,
    /// Milliseconds; any JSON number. Last-write-wins compares it.
    #[serde(rename = "_updatedAt", default)]
    pub updated_at: Option<f64>,
    #[serde(rename = "_vclock", default)]
    pub vclock: Option<VClock>,
}

impl DocumentMeta {
    /// Reads the system fields of a document body. Fails when the body is not an object or a
    /// system field has the wrong type (`_rev` not a string, a `_vclock` counter that is not a
    /// non-negative integer, …). `field` names the body in the error (`changes[0].document`).
    pub fn parse(body: &RawValue, field: &str) -> Result<Self, String> {
        expect_object(body, field)?;
        serde_json::from_str(body.get()).map_err(|e| format!("{field}: {}", json_error_text(&e)))
    }

    /// `_deleted === true`.
    pub fn is_deleted(&self) -> bool {
        self.deleted == Some(true)
    }
}

/// A `_rev` of the form `^(\d+)-([A-Za-z0-9]+)$` (rule 4 of the conflict rules), split into its generation number
/// and suffix. `None` when it does not have that form.
pub fn parse_rev(rev: &str) -> Option<(f64, &str)> {
    let (number, suffix) = rev.split_once('-')?;
    let well_formed = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
    // f64, like JavaScript's parseInt: "01" and "1" are the same generation.
    well_formed.then(|| (number.parse::<f64>().ok().unwrap_or(f64::INFINITY), suffix))
}
