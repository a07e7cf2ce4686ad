//! SSRF protection for user-supplied endpoints (`s3_endpoint`, a Redis host, …).
//!
//! With protection on (`SSRF_PROTECTION_ENABLED`, default true, as in Label Studio) a
//! target may only talk to `http(s)` endpoints whose every resolved address is public:
//! not loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
//! multicast, documentation or otherwise reserved, for IPv4 and IPv6.
//!
//! The check holds **when connecting**, not only when the storage is saved: HTTP
//! clients resolve names through [`CheckedResolver`], and other clients connect to
//! the addresses [`resolve`] returned after checking them. A name that resolved to a
//! public address yesterday and to 127.0.0.1 today is refused today.
//!
//! Messages are Label Studio's (contract §6.3).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why an endpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// It resolves to an address in a reserved block.
    #[error("URL resolves to a reserved network address (block: {0})")]
    Reserved(&'static str),
    /// The host name does not resolve.
    #[error("Can't resolve hostname {0}")]
    Unresolvable(String),
    /// Not an http(s) URL, or no host.
    #[error(
        "The provided URL was not allowed. URLs must use http:// or https://, and must not resolve to local or \
         private network addresses when SSRF protection applies."
    )]
    NotAllowed,
}

/// Reserved IPv4 blocks: (network, prefix length, as written in messages).
const V4_BLOCKS: &[(u32, u8, &str)] = &[
    (0x0000_0000, 8, "0.0.0.0/8"),
    (0x0A00_0000, 8, "10.0.0.0/8"),
    (0x6440_0000, 10, "100.64.0.0/10"),
    (0x7F00_0000, 8, "127.0.0.0/8"),
    (0xA9FE_0000, 16, "169.254.0.0/16"),
    (0xAC10_0000, 12, "172.16.0.0/12"),
    (0xC000_0000, 24, "192.0.0.0/24"),
    (0xC000_0200, 24, "192.0.2.0/24"),
    (0xC058_6300, 24, "192.88.99.0/24"),
    (0xC0A8_0000, 16, "192.168.0.0/16"),
    (0xC612_0000, 15, "198.18.0.0/15"),
    (0xC633_6400, 24, "198.51.100.0/24"),
    (0xCB00_7100, 24, "203.0.113.0/24"),
    (0xE000_0000, 4, "224.0.0.0/4"),
    (0xF000_0000, 4, "240.0.0.0/4"),
];

/// Reserved IPv6 blocks.
const V6_BLOCKS: &[(u128, u8, &str)] = &[
    (0, 128, "::/128"),
    (1, 128, "::1/128"),
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, "64:ff9b::/96"),
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64, "100::/64"),
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23, "2001::/23"),
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32, "2001:db8::/32"),
    (0x2002_0000_0000_0000_0000_0000_0000_0000, 16, "2002::/16"),
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, "fc00::/7"),
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, "fe80::/10"),
    (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, "fec0::/10"),
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, "ff00::/8"),
];

/// The reserved block `ip` lies in, if any.
pub fn reserved_block(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_block(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible addresses reach IPv4 hosts.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_block(v4);
            }
            let bits = u128::from(v6);
            V6_BLOCKS.iter().find(|(net, len, _)| (bits & mask128(*len)) == *net).map(|(_, _, name)| *name)
        }
    }
}

fn v4_block(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_BLOCKS.iter().find(|(net, len, _)| (bits & mask32(*len)) == *net).map(|(_, _, name)| *name)
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

/// Resolves `host:port` and checks every address; with `enabled` false, only resolves.
/// Callers connect to the returned addresses, never resolve again.
pub async fn resolve(host: &str, port: u16, enabled: bool) -> Result<Vec<SocketAddr>, SsrfError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        match tokio::net::lookup_host((bare, port)).await {
            Ok(found) => found.collect(),
            Err(_) => return Err(SsrfError::Unresolvable(bare.to_owned())),
        }
    };
    if addrs.is_empty() {
        return Err(SsrfError::Unresolvable(bare.to_owned()));
    }
    if enabled {
        if let Some(block) = addrs.iter().find_map(|a| reserved_block(a.ip())) {
            return Err(SsrfError::Reserved(block));
        }
    }
    Ok(addrs)
}

/// Checks an endpoint URL: `http(s)://`, a host, and (when enabled) only public addresses.
pub async fn check_url(raw: &str, enabled: bool) -> Result<url::Url, SsrfError> {
    let url = url::Url::parse(raw.trim()).map_err(|_| SsrfError::NotAllowed)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SsrfError::NotAllowed);
    }
    let host = url.host_str().ok_or(SsrfError::NotAllowed)?.to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    resolve(&host, port, enabled).await?;
    Ok(url)
}

/// A DNS resolver for `reqwest` that refuses names resolving to reserved addresses,
/// so the check holds for every connection, including reconnects and redirects.
#[derive(Debug, Clone, Copy)]
pub struct CheckedResolver;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs =
                resolve(&host, 0, true).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an IP literal host (which bypasses DNS) is allowed.
pub fn check_ip_literal(host: &str, enabled: bool) -> Result<(), SsrfError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if enabled => reserved_block(ip).map_or(Ok(()), |b| Err(SsrfError::Reserved(b))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_addresses_are_recognised_by_block() {
        let cases = [
            ("127.0.0.1", Some("127.0.0.0/8")),
            ("10.0.0.1", Some("10.0.0.0/8")),
            ("169.254.169.254", Some("169.254.0.0/16")),
            ("172.31.255.255", Some("172.16.0.0/12")),
            ("192.168.1.1", Some("192.168.0.0/16")),
            ("100.64.0.1", Some("100.64.0.0/10")),
            ("224.0.0.1", Some("224.0.0.0/4")),
            ("0.0.0.0", Some("0.0.0.0/8")),
            ("255.255.255.255", Some("240.0.0.0/4")),
            ("::1", Some("::1/128")),
            ("::", Some("::/128")),
            ("::ffff:127.0.0.1", Some("127.0.0.0/8")),
            ("fe80::1", Some("fe80::/10")),
            ("fd00::1", Some("fc00::/7")),
            ("ff02::1", Some("ff00::/8")),
            ("8.8.8.8", None),
            ("52.216.0.1", None),
            ("172.32.0.1", None),
            ("2a00:1450:4001::1", None),
        ];
        for (ip, block) in cases {
            assert_eq!(reserved_block(ip.parse().unwrap()), block, "{ip}");
        }
    }

    #[tokio::test]
    async fn urls_must_be_http_and_public() {
        assert_eq!(check_url("ftp://example.com", true).await.unwrap_err(), SsrfError::NotAllowed);
        assert_eq!(check_url("not a url", true).await.unwrap_err(), SsrfError::NotAllowed);
        assert_eq!(check_url("http://127.0.0.1:9000", true).await.unwrap_err(), SsrfError::Reserved("127.0.0.0/8"));
        assert_eq!(check_url("http://[::1]:9000", true).await.unwrap_err(), SsrfError::Reserved("::1/128"));
        assert!(check_url("http://localhost:9000", true).await.unwrap_err().to_string().contains("reserved"));
        assert!(check_url("http://127.0.0.1:9000", false).await.is_ok());
        assert_eq!(
            check_url("http://169.254.169.254/", true).await.unwrap_err().to_string(),
            "URL resolves to a reserved network address (block: 169.254.0.0/16)"
        );
    }
}
