//! The dashboard's files, served on `GET` by the gateway.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tonic::body::Body;

/// One file: its bytes and media type, and its gzip when that is smaller.
#[derive(Clone, Debug)]
pub struct Asset {
    pub bytes: Bytes,
    pub content_type: &'static str,
    pub gzip: Option<Bytes>,
}

/// Files this small are sent as they are.
const GZIP_FROM: usize = 1024;

fn gzip(bytes: &[u8]) -> Option<Bytes> {
    use std::io::Write as _;
    if bytes.len() < GZIP_FROM {
        return None;
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    let packed = encoder.finish().ok()?;
    (packed.len() < bytes.len()).then(|| Bytes::from(packed))
}

/// Whether the request takes a gzip body.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
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
                let gzip = gzip(&bytes);
                (
                    path,
                    Asset {
                        bytes,
                        content_type,
                        gzip,
                    },
                )
            })
            .collect();
        Self { files }
    }

    /// The answer to `GET path`, or `None` when it names no file (a 404).
    pub(crate) fn answer(&self, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
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
        let packed = asset.gzip.as_ref().filter(|_| accepts_gzip(headers));
        let body = packed.unwrap_or(&asset.bytes).clone();
        let mut response = Response::new(Body::new(Full::new(body)));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        if asset.gzip.is_some() {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if packed.is_some() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get(assets: &Assets, path: &str, encoding: Option<&str>) -> Option<Response<Body>> {
        let mut headers = HeaderMap::new();
        if let Some(encoding) = encoding {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        }
        assets.answer(path, &headers)
    }

    #[test]
    fn files_app_routes_and_gzip_only_for_those_who_take_it() {
        let script = "console.log('hello');\n".repeat(200);
        let assets = Assets::new([
            ("index.html".to_owned(), Bytes::from_static(b"<!doctype html>")),
            ("assets/app-1a2b.js".to_owned(), Bytes::from(script.clone())),
        ]);
        let plain = get(&assets, "/assets/app-1a2b.js", None).unwrap();
        assert_eq!(
            plain.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(
            plain.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let packed = get(&assets, "/assets/app-1a2b.js", Some("br, gzip;q=0.8")).unwrap();
        assert_eq!(packed.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(packed.headers()[header::VARY], "accept-encoding");
        let refused = get(&assets, "/assets/app-1a2b.js", Some("gzip;q=0, identity")).unwrap();
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
        // The app's own routes load the app; a missing file is not the app.
        let route = get(&assets, "/runs/42", None).unwrap();
        assert_eq!(route.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(get(&assets, "/assets/missing.js", None).is_none());
    }
}
