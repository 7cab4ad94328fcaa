//! DNS discovery: a `dns:///host:port` endpoint stands for every address the
//! name resolves to, re-resolved on an interval.

use std::{fmt::Debug, future::Future, io, net::SocketAddr, pin::Pin};

/// The most addresses one name may add to a pool; the rest are ignored.
pub(crate) const MAX_ADDRESSES: usize = 256;

/// A boxed resolution in progress.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns a host name and port into socket addresses. The pool calls it once
/// per `client.resolve_interval` for each `dns:///` endpoint, under the
/// connect timeout.
pub trait Resolver: Debug + Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a>;
}

/// The system resolver (`getaddrinfo` through `tokio::net::lookup_host`):
/// honours `/etc/hosts` and `resolv.conf` search domains, which is what a
/// Kubernetes pod needs to turn a headless Service name into its pods' A
/// records. It sees no TTLs, hence re-resolution on an interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> Resolving<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A parsed `dns:///host:port` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DnsTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// `Some` when `endpoint` uses the `dns` scheme: the target, or why it is not
/// one.
pub(crate) fn parse_dns(endpoint: &str) -> Option<Result<DnsTarget, String>> {
    let rest = endpoint.strip_prefix("dns:")?;
    let Some(rest) = rest.strip_prefix("///") else {
        return Some(Err(
            "expected dns:///host:port (a DNS server authority is not supported)".to_owned(),
        ));
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Some(Err("expected dns:///host:port, the port is missing".to_owned()));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Some(Err(format!("`{port}` is not a port")));
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Some(Err(format!("`{host}` is not a host name")));
    }
    Some(Ok(DnsTarget {
        host: host.to_owned(),
        port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_endpoints_parse_and_bad_ones_say_why() {
        assert_eq!(parse_dns("http://a:1"), None);
        assert_eq!(
            parse_dns("dns:///analyzer.reporunner.svc.cluster.local:50051"),
            Some(Ok(DnsTarget {
                host: "analyzer.reporunner.svc.cluster.local".into(),
                port: 50051
            }))
        );
        for (bad, why) in [
            ("dns://8.8.8.8/a:1", "authority"),
            ("dns:///a", "port"),
            ("dns:///a:http", "not a port"),
            ("dns:///:1", "host name"),
            ("dns:///a b:1", "host name"),
        ] {
            let err = parse_dns(bad).and_then(Result::err).unwrap_or_default();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let addrs = SystemResolver
            .resolve("localhost", 7)
            .await
            .expect("localhost resolves");
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7),
            "{addrs:?}"
        );
        assert!(!addrs.is_empty());
    }
}
