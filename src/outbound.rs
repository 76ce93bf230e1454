//! The outbound-address guard: calls to user-supplied URLs never reach loopback, private,
//! link-local, CGNAT, unique-local, multicast or metadata addresses (IPv4, IPv6, and IPv4
//! inside IPv6), unless the operator allows private targets. Literal addresses are checked
//! on the URL; names are checked on every address they resolve to, at connection time.
//! Webhook deliveries and tenants' own storage buckets go through [`client`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4 written inside IPv6 (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::a.b.c.d) is judged as IPv4.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return forbidden_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            let low = |hi: u16, lo: u16| {
                Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            // Local-use NAT64 (64:ff9b:1::/48) and SIIT (::ffff:0:a.b.c.d) carry the IPv4
            // address in the last 32 bits; 6to4 (2002:a.b.c.d::/48) right after the prefix.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || (s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0)
            {
                return forbidden_v4(low(s[6], s[7])).or(Some("reserved"));
            }
            if s[0] == 0x2002 {
                return forbidden_v4(low(s[1], s[2])).or(Some("6to4"));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
                return forbidden_v4(low(s[6], s[7]));
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "metadata",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_private() => "private",
        _ if a == 100 && (64..128).contains(&b) => "CGNAT",
        _ if ip.is_multicast() || ip.is_broadcast() || a >= 240 => "reserved",
        _ if a == 192 && b == 0 && ip.octets()[2] == 0 => "reserved",
        _ if a == 198 && (b == 18 || b == 19) => "benchmarking",
        _ if ip.is_documentation() => "documentation",
        // 192.88.99.0/24: the retired 6to4 relay anycast.
        _ if a == 192 && b == 88 && ip.octets()[2] == 99 => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "metadata",
        _ if first & 0xfe00 == 0xfc00 => "unique-local",
        _ if first & 0xffc0 == 0xfe80 => "link-local",
        _ if first & 0xff00 == 0xff00 => "multicast",
        _ if first & 0xffc0 == 0xfec0 => "site-local",
        // 100::/64, the discard prefix.
        _ if ip.segments()[..4] == [0x100, 0, 0, 0] => "discard",
        _ if first == 0x2001 && ip.segments()[1] == 0xdb8 => "documentation",
        // Teredo (2001::/32) and ORCHID/benchmarking (2001:2::/48, 2001:10::/28, 2001:20::/28).
        _ if first == 0x2001 && ip.segments()[1] == 0 => "teredo",
        _ if first == 0x2001
            && (ip.segments()[1] == 2 || (0x10..0x30).contains(&ip.segments()[1])) =>
        {
            "reserved"
        }
        _ => return None,
    })
}

/// A URL's host as a literal address, if it is one.
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Checks a URL at registration: http(s) only, and no forbidden literal address.
pub fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if let Some(ip) = literal_ip(&url) {
        if let Some(class) = forbidden(ip).filter(|_| !allow_private) {
            return Err(format!(
                "points to a {class} address, which outbound calls refuse \
                 (outbound.allow_private_targets = true allows it, for local testing)"
            ));
        }
    }
    if let Some(url::Host::Domain(name)) = url.host() {
        if let Some(class) = forbidden_name(name).filter(|_| !allow_private) {
            return Err(format!(
                "names a {class} host, which outbound calls refuse \
                 (outbound.allow_private_targets = true allows it, for local testing)"
            ));
        }
    }
    Ok(url)
}

/// Why a host name is refused before it is even resolved: names that mean this machine or
/// a private network wherever they are looked up (`localhost` and its subdomains,
/// `localhost.localdomain`, `.local`, `.internal` such as `metadata.google.internal`,
/// `.localdomain`, `.home.arpa`, `.intranet`, `.lan`, and names without a dot).
pub fn forbidden_name(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let under = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    Some(match () {
        _ if under("localhost") || under("localdomain") => "loopback",
        _ if under("internal") || under("local") || under("home.arpa") => "private",
        _ if under("intranet") || under("lan") || under("corp") => "private",
        _ if !name.contains('.') => "single-label",
        _ => return None,
    })
}

/// The HTTP client for calls to user-supplied URLs: the guard on every resolved address, no
/// redirects, no proxy from the environment (a proxy would resolve names past the guard),
/// and a time limit on every call.
pub fn client(timeout: Duration, allow_private: bool, user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(format!("{user_agent}/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the outbound client builds")
}

/// A DNS resolver that drops forbidden addresses (and fails when none is left).
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            if let Some(class) = forbidden_name(name.as_str()).filter(|_| !allow) {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("forbidden address: {} is a {class} name", name.as_str()).into();
                return Err(refused);
            }
            let host = format!("{}:0", name.as_str());
            let found: Vec<SocketAddr> = tokio::net::lookup_host(host).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow || forbidden(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let class = found
                    .first()
                    .and_then(|a| forbidden(a.ip()))
                    .unwrap_or("unresolvable");
                let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                    "forbidden address: {} resolves to a {class} address",
                    name.as_str()
                )
                .into();
                return Err(refused);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_internal_address_is_refused() {
        for (ip, class) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.255", "CGNAT"),
            ("224.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("fec0::1", "site-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("2002:808:808::1", "6to4"),
            ("::ffff:0:7f00:1", "loopback"),
            ("64:ff9b:1::a00:1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("100::1", "discard"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("2001:db8::1", "documentation"),
            ("2001::1", "teredo"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(class), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn registration_refuses_literal_internal_addresses_and_odd_urls() {
        for url in [
            "http://127.0.0.1/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:7f00:1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/",
            "http://100.100.100.100/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
            "http://[fec0::1]/",
            "http://[2002:7f00:1::]/",
            "http://[::ffff:0:7f00:1]/",
            "http://198.18.0.1/",
            "http://[100::1]/",
            "http://localhost.localdomain/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://api.localhost/",
            "http://printer.local/",
            "http://intranet/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
        }
        assert!(check_url("https://example.com/hooks", false).is_ok());
        assert!(
            check_url("http://127.0.0.1:9000/hook", true).is_ok(),
            "an operator may allow private targets"
        );
    }
}
