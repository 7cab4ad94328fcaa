//! The web dashboard's files, embedded at build time from `dashboard/dist`
//! (see `build.rs`).

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/dashboard.rs"));
}

/// The dashboard, or `None` when this binary was built before
/// `make dashboard` (the HTTP/JSON API is served either way).
pub fn assets() -> Option<reporunner_gateway::Assets> {
    if embedded::FILES.is_empty() {
        tracing::info!("this binary carries no dashboard (build it with `make dashboard`, then rebuild)");
        return None;
    }
    Some(reporunner_gateway::Assets::new(embedded::FILES.iter().map(
        |(name, bytes)| ((*name).to_owned(), bytes::Bytes::from_static(bytes)),
    )))
}
