//! The canonical proto3 JSON mapping for contract messages, so that the CLI's
//! `--output json` prints the same shapes as the gRPC API.

use prost::{Message, Name};
use prost_reflect::{DynamicMessage, SerializeOptions};

use crate::descriptor::pool;

/// Why a message could not be rendered or parsed as JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("message type `{0}` is not in the Repo Runner contracts")]
    UnknownMessage(String),
    #[error("invalid message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn descriptor<M: Name>() -> Result<prost_reflect::MessageDescriptor, JsonError> {
    let name = M::full_name();
    pool()
        .get_message_by_name(&name)
        .ok_or(JsonError::UnknownMessage(name))
}

/// Renders `msg` as a JSON value in the canonical mapping: lowerCamelCase
/// names, enums by name, 64-bit integers as strings, RFC 3339 timestamps,
/// default values left out.
pub fn to_value<M: Message + Name>(msg: &M) -> Result<serde_json::Value, JsonError> {
    let dynamic = DynamicMessage::decode(descriptor::<M>()?, msg.encode_to_vec().as_slice())?;
    let options = SerializeOptions::new();
    Ok(dynamic.serialize_with_options(serde_json::value::Serializer, &options)?)
}

/// [`to_value`], as one line of text.
pub fn to_string<M: Message + Name>(msg: &M) -> Result<String, JsonError> {
    Ok(serde_json::to_string(&to_value(msg)?)?)
}

/// [`to_value`], indented for people.
pub fn to_string_pretty<M: Message + Name>(msg: &M) -> Result<String, JsonError> {
    Ok(serde_json::to_string_pretty(&to_value(msg)?)?)
}

/// Parses a message from the canonical JSON mapping (field names in either
/// lowerCamelCase or their proto names).
pub fn from_str<M: Message + Name + Default>(text: &str) -> Result<M, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor::<M>()?, &mut deserializer)?;
    deserializer.end()?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::v1::{Environment, HostInfo, Platform, Toolchain};

    #[test]
    fn renders_canonical_names_and_enums_and_round_trips() {
        let env = Environment {
            platform: Platform::Kubernetes as i32,
            host: Some(HostInfo {
                memory_total_bytes: 8 << 30,
                cpus: 4,
                ..Default::default()
            }),
            toolchains: vec![Toolchain {
                name: "uv".into(),
                version: "0.5.1".into(),
                path: "/usr/bin/uv".into(),
            }],
            detected_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let value = to_value(&env).unwrap();
        assert_eq!(value["platform"], "PLATFORM_KUBERNETES");
        assert_eq!(value["host"]["memoryTotalBytes"], "8589934592");
        assert_eq!(value["detectedAt"], "2023-11-14T22:13:20Z");
        assert!(value.get("platformOverridden").is_none(), "defaults are left out");
        let back: Environment = from_str(&value.to_string()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn rejects_unknown_fields_with_a_message() {
        let err = from_str::<Environment>(r#"{"platfrom": "PLATFORM_AWS"}"#).unwrap_err();
        assert!(err.to_string().contains("platfrom"), "{err}");
    }
}
