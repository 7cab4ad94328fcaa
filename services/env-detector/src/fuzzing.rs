//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! request runs, and panics only on a bug.

use prost::Message;
use reporunner_proto::{agents::env_detector::v1::DetectRequest, common::v1::Platform};

use crate::platform::{parse_platform_name, parse_platform_override};

/// Decodes `data` as a `DetectRequest` (first byte even) and reads its
/// platform override as `Detect` does, or (odd) reads the rest as a
/// platform name as the command line and the configuration give it.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(request) = DetectRequest::decode(message) else {
            return;
        };
        match parse_platform_override(request.platform_override) {
            Ok(Some(platform)) => assert_eq!(platform as i32, request.platform_override),
            Ok(None) => assert_eq!(request.platform_override, Platform::Unspecified as i32),
            Err(_) => assert!(Platform::try_from(request.platform_override).is_err()),
        }
    } else if let Ok(name) = std::str::from_utf8(message)
        && let Ok(platform) = parse_platform_name(name)
    {
        assert_ne!(platform, Platform::Unspecified, "{name:?} names no platform");
    }
}
