//! Checks of the names and addresses the settings hold (Kubernetes
//! namespaces and claims, egress CIDRs). Their own module so that
//! [`crate::config`] validates with them without importing the backends
//! (which import the settings).

use std::net::IpAddr;

/// Whether `name` is an RFC 1123 DNS label (namespaces, claim names).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `text` is an IPv4 or IPv6 CIDR (`10.0.0.0/8`, `::/0`).
pub fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => bits <= 32,
        Ok(IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cidrs_are_checked() {
        assert!(is_dns_label("reporunner-runs"));
        assert!(!is_dns_label("Runs"));
        assert!(!is_dns_label("-runs"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("::/0"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("10.0.0.0"));
        assert!(!is_cidr("example/8"));
    }
}
