//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! request runs, and panics only on a bug.

use prost::Message;
use reporunner_proto::{
    agents::provisioner::v1::{ProvisionRequest, ReleaseRequest},
    common::v1::BackingServiceKind,
};

use crate::{
    check_provision, check_release,
    env::{Connection, Flavor},
    host,
};

/// Decodes `data` as a `ProvisionRequest` (first byte even) or a
/// `ReleaseRequest` (odd) and runs the checks the provisioner makes before
/// it reads a run's state; for a provision, also the reading of the wanted
/// version and the variables it would hand back.
pub fn validate_request(data: &[u8]) {
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(request) = ProvisionRequest::decode(message) else {
            return;
        };
        let Ok((run_dir, service)) = check_provision(&request) else {
            return;
        };
        if let Some(dir) = run_dir {
            assert!(dir.is_absolute(), "run_dir {} is relative", dir.display());
            assert!(
                !dir.components().any(|c| c == std::path::Component::ParentDir),
                "run_dir {} climbs",
                dir.display()
            );
        }
        let _ = host::major_version(&service.version);
        let flavor = match BackingServiceKind::try_from(service.kind) {
            Ok(BackingServiceKind::Redis) => Flavor::Redis,
            Ok(BackingServiceKind::Mysql) => Flavor::Mysql,
            _ => Flavor::Postgres,
        };
        let connection = Connection {
            flavor,
            host: "127.0.0.1".to_owned(),
            port: 5432,
            user: "app".to_owned(),
            password: "secret".to_owned(),
            database: "app".to_owned(),
        };
        let env = connection.env(&service.env_vars);
        for name in &service.env_vars {
            assert!(env.contains_key(name), "the requested variable {name} is not set");
        }
    } else {
        let Ok(request) = ReleaseRequest::decode(message) else {
            return;
        };
        let _ = check_release(&request.run_id, &request.resource_ids);
    }
}
