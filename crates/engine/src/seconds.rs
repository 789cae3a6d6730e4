//! A [`Duration`] in JSON as whole seconds (`#[serde(with = "crate::seconds")]`).
use std::time::Duration;

use serde::{Deserialize as _, Deserializer, Serializer};

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}
