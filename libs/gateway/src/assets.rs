//! The dashboard's files, served on `GET` by the gateway.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tonic::body::Body;

/// One file: its bytes and media type.
#[derive(Clone, Debug)]
pub struct Asset {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// A single-page app's files by path (`/index.html`, `/assets/app-3f2a.js`):
/// a path with no file extension that is not a file gets `/index.html`, so
/// the app's own routes (`/runs/<id>`) load it.
#[derive(Clone, Debug, Default)]
pub struct Assets {
    files: HashMap<String, Asset>,
}

/// The media type of a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

impl Assets {
    /// Files by their path under the app's root, such as `index.html` or
    /// `assets/index-3f2a.js`.
    pub fn new(files: impl IntoIterator<Item = (String, Bytes)>) -> Self {
        let files = files
            .into_iter()
            .map(|(name, bytes)| {
                let path = format!("/{}", name.trim_start_matches('/'));
                let content_type = content_type(&path);
                (path, Asset { bytes, content_type })
            })
            .collect();
        Self { files }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The answer to `GET path`, or `None` when it names no file (a 404).
    pub(crate) fn answer(&self, path: &str, _headers: &HeaderMap) -> Option<Response<Body>> {
        let (path, asset) = match self.files.get_key_value(path) {
            Some((path, asset)) => (path.as_str(), asset),
            None => {
                let last = path.rsplit('/').next().unwrap_or("");
                if last.contains('.') {
                    return None;
                }
                self.files
                    .get_key_value("/index.html")
                    .map(|(p, a)| (p.as_str(), a))?
            }
        };
        let mut response = Response::new(Body::new(Full::new(asset.bytes.clone())));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        // Built files under assets/ carry a content hash in their name.
        let cache = if path.starts_with("/assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        Some(response)
    }
}
