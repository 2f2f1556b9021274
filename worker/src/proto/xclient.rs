//! The XCLIENT command that tells a POP3, ManageSieve or submission backend who the
//! client is (reference §4.3), written once. Each backend decides whether to send it;
//! this module only builds the line.
//!
//! The address forms differ by protocol, and both are kept on purpose. Submission writes
//! IPv6 as `IPV6:2001:db8::7`, the RFC 5321 address-literal form that Postfix's XCLIENT
//! expects. POP3 and ManageSieve send it bare: Dovecot's pop3-login answers
//! `-ERR Invalid parameters` and its managesieve-login answers "Error in MANAGESIEVE
//! command" to the prefixed form, which would fail the login of every IPv6 client.

use std::net::IpAddr;

use crate::proto::dialogue::ClientIdentity;

/// How an IPv6 address is written in `ADDR=` and `DESTADDR=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Form {
    /// `2001:db8::7` (POP3, ManageSieve).
    Bare,
    /// `IPV6:2001:db8::7` (SMTP).
    Prefixed,
}

/// The attributes every XCLIENT carries, in order: `ADDR PORT DESTADDR DESTPORT SESSION
/// TTL CLIENT-TRANSPORT`. IPv4-mapped IPv6 addresses are written as IPv4.
pub fn attributes(identity: &ClientIdentity, ipv6: Ipv6Form) -> [(&'static str, String); 7] {
    let client = identity.client;
    let local = identity.local;
    let transport = if identity.client_tls {
        "TLS"
    } else {
        "insecure"
    };
    [
        ("ADDR", address(client.ip(), ipv6)),
        ("PORT", client.port().to_string()),
        ("DESTADDR", address(local.ip(), ipv6)),
        ("DESTPORT", local.port().to_string()),
        ("SESSION", identity.session_id()),
        ("TTL", identity.ttl().to_string()),
        ("CLIENT-TRANSPORT", transport.to_string()),
    ]
}

/// `XCLIENT` with every attribute of [`attributes`] and bare IPv6, as POP3 and
/// ManageSieve backends take it.
pub fn command(identity: &ClientIdentity) -> String {
    line(attributes(identity, Ipv6Form::Bare))
}

/// `XCLIENT NAME=value ...\r\n`.
pub fn line(attributes: impl IntoIterator<Item = (&'static str, String)>) -> String {
    let mut line = String::from("XCLIENT");
    for (name, value) in attributes {
        line.push(' ');
        line.push_str(name);
        line.push('=');
        line.push_str(&value);
    }
    line.push_str("\r\n");
    line
}

fn address(ip: IpAddr, ipv6: Ipv6Form) -> String {
    match (ip.to_canonical(), ipv6) {
        (IpAddr::V6(v6), Ipv6Form::Prefixed) => format!("IPV6:{v6}"),
        (ip, _) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testkit::loopback::identity;

    #[test]
    fn ipv4_and_ipv4_mapped() {
        let expected = "XCLIENT ADDR=192.0.2.9 PORT=1234 DESTADDR=198.51.100.1 DESTPORT=110 \
                        SESSION=P2a TTL=6 CLIENT-TRANSPORT=insecure\r\n";
        assert_eq!(
            command(&identity("192.0.2.9:1234", "198.51.100.1:110", false)),
            expected
        );
        assert_eq!(
            command(&identity(
                "[::ffff:192.0.2.9]:1234",
                "[::ffff:198.51.100.1]:110",
                false
            )),
            expected
        );
    }

    #[test]
    fn ipv6_bare_or_prefixed() {
        let id = identity("[2001:db8::7]:50123", "[2001:db8::1]:4190", true);
        assert_eq!(
            command(&id),
            "XCLIENT ADDR=2001:db8::7 PORT=50123 DESTADDR=2001:db8::1 DESTPORT=4190 \
             SESSION=P2a TTL=6 CLIENT-TRANSPORT=TLS\r\n"
        );
        let prefixed = attributes(&id, Ipv6Form::Prefixed);
        assert_eq!(prefixed[0], ("ADDR", "IPV6:2001:db8::7".to_string()));
        assert_eq!(prefixed[2], ("DESTADDR", "IPV6:2001:db8::1".to_string()));
    }
}
