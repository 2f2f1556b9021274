//! The validated model: defaults, forwarding resolution, value forms, and the shipped
//! example configs.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use super::tests::{edit, ok, parse, rejects, render, ADMIN, BASE, CERT};
use crate::model::*;
use crate::Issue;

// ---- the model ------------------------------------------------------------------

#[test]
fn defaults_are_applied() {
    let c = ok(BASE);
    let s = &c.server;
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(s.bridge_idle, Duration::from_secs(1800));
    assert_eq!(s.backend_timeout, Duration::from_secs(10));
    assert_eq!(s.backend_connect_retries, 1);
    assert_eq!(s.host_down_threshold, 5);
    assert_eq!(s.host_down_cooldown, Duration::from_secs(30));
    assert_eq!(s.host_down_min_clients, 2);
    assert_eq!(s.proxy_ttl, 7);
    assert_eq!(
        (s.threads, s.hostname.as_deref(), s.log_level.as_str()),
        (0, None, "info")
    );
    assert_eq!((s.user.as_str(), s.group.as_str()), ("postern", "postern"));
    assert_eq!(s.workers, None);
    assert_eq!(
        s.control_socket,
        std::path::PathBuf::from("/run/postern/control.sock")
    );
    assert_eq!(s.max_session_memory, None);
    assert_eq!(c.sandbox.seccomp, SeccompMode::Enforce);
    assert_eq!(
        c.tls.protocols,
        TlsProtocols {
            min_version: TlsVersion::Tls12,
            ignore_client_order: false,
            disable_cipher_suites: vec![]
        }
    );

    let l = &c.listeners[0];
    assert_eq!((l.max_connections, l.max_auth_attempts), (8192, 3));
    assert_eq!(l.preauth_timeout, Duration::from_secs(30));
    assert_eq!(
        (l.proxy_protocol, l.forwarded_trust),
        (ProxyProtocolIn::Off, false)
    );

    let m = &c.mapping;
    assert_eq!(
        (m.positive_ttl, m.negative_ttl),
        (Duration::from_secs(600), Duration::from_secs(30))
    );
    assert_eq!(
        (m.cache_max_entries, m.lookup_timeout),
        (1_000_000, Duration::from_secs(5))
    );
    assert_eq!(m.normalize, Normalize::None);
    assert_eq!(c.routing.master_user_separators, vec!["%"]);
    assert_eq!(c.oauth.jwt_username_claim, "email");
    assert_eq!(
        (c.http.body_extract_cap, c.http.max_head_size),
        (65_536, 65_536)
    );
    assert_eq!(
        (c.http.relay_idle, c.http.keepalive_timeout),
        (Duration::from_secs(60), Duration::from_secs(75))
    );
    assert_eq!(c.http.max_keepalive_requests, 1000);
    assert_eq!(c.admin, None);

    let caps = &c.capabilities;
    let sasl = vec!["PLAIN", "OAUTHBEARER", "XOAUTH2"];
    for auth in [
        &caps.imap.auth,
        &caps.pop3.auth,
        &caps.submission.auth,
        &caps.managesieve.auth,
    ] {
        assert_eq!(auth.sasl, sasl);
        assert!(!auth.allow_plain_auth_without_tls);
    }
    assert_eq!(
        caps.imap.advertise.join(" "),
        "IMAP4rev2 IMAP4rev1 ENABLE SASL-IR LITERAL+ ID UTF8=ACCEPT JMAPACCESS"
    );
    assert_eq!(caps.imap.banner, "Stalwart IMAP4rev2 at your service.");
    assert_eq!(caps.pop3.banner, "Stalwart POP3 at your service.");
    assert_eq!(
        caps.submission.ehlo.join(" "),
        "ENHANCEDSTATUSCODES 8BITMIME BINARYMIME SMTPUTF8 PIPELINING CHUNKING REQUIRETLS SIZE"
    );
    assert_eq!(caps.submission.banner, "at your service.");
    assert_eq!(caps.managesieve.implementation, "Stalwart ManageSieve");
    let sieve =
        "body, comparator-elbonia, comparator-i;ascii-casemap, comparator-i;ascii-numeric, \
        comparator-i;octet, convert, copy, date, duplicate, editheader, enclose, \
        encoded-character, enotify, envelope, envelope-deliverby, envelope-dsn, environment, \
        ereject, extlists, extracttext, fcc, fileinto, foreverypart, ihave, imap4flags, \
        imapsieve, include, index, mailbox, mailboxid, mboxmetadata, mime, redirect-deliverby, \
        redirect-dsn, regex, reject, relational, replace, servermetadata, spamtest, \
        spamtestplus, special-use, subaddress, vacation, vacation-seconds, variables, virustest";
    assert_eq!(caps.managesieve.sieve.join(", "), sieve);
}

#[test]
fn forwarding_is_resolved_per_leg() {
    let text = format!(
        "{BASE}\n[destination.old.protocol.pop3]\nport = 110\ntls = \"starttls\"\nforwarding = \"xclient\"\n\
         [destination.old.protocol.http]\nport = 443\ntls = \"implicit\"\n\
         [destination.b]\nhost = \"b.example.com\"\nproxy_protocol = false\n[destination.b.protocol.imap]\nport = 993\ntls = \"implicit\"\n\
         [destination.c]\nhost = \"c.example.com\"\nproxy_protocol = false\nforwarding = \"xclient\"\n\
         [destination.c.protocol.imap]\nport = 993\ntls = \"implicit\"\n\
         [destination.c.protocol.http]\nport = 443\ntls = \"implicit\"\nforwarding = \"proxy\"\n"
    );
    let c = ok(&text);
    let fwd = |d: &str, p: Protocol| c.destinations[d].leg(p).unwrap().forwarding;
    assert_eq!(
        fwd("old", Protocol::Imap),
        Forwarding::Proxy,
        "proxy_protocol defaults to true"
    );
    assert_eq!(
        fwd("old", Protocol::Pop3),
        Forwarding::Xclient,
        "the leg's own setting wins"
    );
    assert_eq!(
        fwd("old", Protocol::Http),
        Forwarding::None,
        "HTTP legs send PROXY only when asked"
    );
    assert_eq!(fwd("b", Protocol::Imap), Forwarding::None);
    assert_eq!(
        fwd("c", Protocol::Imap),
        Forwarding::Xclient,
        "the destination's setting"
    );
    assert_eq!(fwd("c", Protocol::Http), Forwarding::Proxy);
}

#[test]
fn xclient_on_a_passthrough_leg_is_an_error() {
    let text = format!("{BASE}\n[destination.old.protocol.smtp]\nport = 25\ntls = \"plain\"\nforwarding = \"xclient\"\n");
    rejects(
        &text,
        "destination.old.protocol.smtp.forwarding",
        "XCLIENT cannot be sent on a pass-through relay",
    );
}

#[test]
fn proxy_trusted_accepts_bare_addresses() {
    let text = edit(BASE, "listener.imap", "proxy_protocol = \"optional\"\nproxy_trusted = [\"10.1.2.3\", \"2001:db8::/32\", \"192.168.1.7/24\"]");
    let l = &ok(&text).listeners[0];
    let nets: Vec<String> = l.proxy_trusted.iter().map(ToString::to_string).collect();
    assert_eq!(nets, vec!["10.1.2.3/32", "2001:db8::/32", "192.168.1.0/24"]);
    assert!(l.trusts_proxy_from("::ffff:10.1.2.3".parse().unwrap()));
    let text = edit(BASE, "listener.imap", "proxy_trusted = [\"10.0.0.0/33\"]");
    rejects(
        &text,
        "listener.imap.proxy_trusted[0]",
        "neither an IP address nor a CIDR range",
    );
}

#[test]
fn forwarded_trust_is_for_http_listeners() {
    let text = format!("{BASE}\n[listener.web]\nprotocol = \"http\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\nforwarded = \"trust\"\n");
    assert!(ok(&text).listener("web").unwrap().forwarded_trust);
    rejects(
        &edit(BASE, "listener.imap", "forwarded = \"trust\""),
        "listener.imap.forwarded",
        "only applies to http listeners",
    );
}

#[test]
fn listeners_and_certificates_are_sorted_by_name() {
    let text = format!(
        "{BASE}\n[listener.a-imap]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n\
         [tls.certificate.zeta]\ncert = \"/z.pem\"\nkey = \"/z.key\"\n\
         [tls.certificate.alpha]\ncert = \"/a.pem\"\nkey = \"/a.key\"\ndefault = true\nsubjects = [\"Mail.Example.com\"]\n"
    );
    let c = ok(&text);
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["a-imap", "imap"]);
    let certs: Vec<&str> = c.tls.certificates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(certs, ["alpha", "zeta"]);
    assert!(c.tls.certificates[0].default);
    assert_eq!(
        c.tls.certificates[0].subjects.as_deref(),
        Some(&["Mail.Example.com".to_owned()][..])
    );
}

#[test]
fn only_one_default_certificate() {
    let text = format!("{BASE}{CERT}default = true\n[tls.certificate.other]\ncert = \"/o.pem\"\nkey = \"/o.key\"\ndefault = true\n");
    rejects(
        &text,
        "tls.certificate.other.default",
        "tls.certificate.main is already the default",
    );
}

#[test]
fn certificate_paths_are_required_and_absolute() {
    let text = format!("{BASE}\n[tls.certificate.main]\ncert = \"cert.pem\"\n");
    rejects(
        &text,
        "tls.certificate.main.cert",
        "is not an absolute path",
    );
    rejects(&text, "tls.certificate.main.key", "required key is missing");
}

#[test]
fn admin_bind_accepts_a_string_or_a_list() {
    let tail = "bearer_token_file = \"/etc/postern/admin.token\"\n";
    let one = ok(&format!("{BASE}{CERT}{ADMIN}{tail}")).admin.unwrap();
    let list = ADMIN.replace("\"127.0.0.1:9443\"", "[\"127.0.0.1:9443\", \"[::1]:9443\"]");
    let two = ok(&format!("{BASE}{CERT}{list}{tail}")).admin.unwrap();
    assert_eq!(one.bind.len(), 1);
    assert_eq!(
        two.bind,
        vec![
            "127.0.0.1:9443".parse::<SocketAddr>().unwrap(),
            "[::1]:9443".parse().unwrap()
        ]
    );
    rejects(
        &format!("{BASE}{CERT}\n[admin]\n{tail}"),
        "admin.bind",
        "required key is missing",
    );
}

#[test]
fn admin_alone_is_enough_to_start() {
    let text = BASE.replace(
        "[listener.imap]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"plain\"\n",
        "",
    );
    ok(&format!("{text}{CERT}{ADMIN}bearer_token_file = \"/t\"\n"));
}

#[test]
fn max_session_memory_accepts_bytes_or_units() {
    let mem = |v: &str| {
        ok(&format!("{BASE}\n[server]\nmax_session_memory = {v}\n"))
            .server
            .max_session_memory
    };
    assert_eq!(mem("1048576"), Some(1 << 20));
    assert_eq!(mem("\"512MiB\""), Some(512 << 20));
    assert_eq!(mem("\"1GiB\""), Some(1 << 30));
    assert_eq!(mem("\"64M\""), Some(64 << 20));
    rejects(
        &format!("{BASE}\n[server]\nmax_session_memory = \"lots\"\n"),
        "server.max_session_memory",
        "is not a size",
    );
    rejects(
        &format!("{BASE}\n[server]\nmax_session_memory = 0\n"),
        "server.max_session_memory",
        "must be more than 0",
    );
}

#[test]
fn sandbox_seccomp_modes() {
    assert_eq!(
        ok(&format!("{BASE}\n[sandbox]\nseccomp = \"log\"\n"))
            .sandbox
            .seccomp,
        SeccompMode::Log
    );
    assert_eq!(
        ok(&format!("{BASE}\n[sandbox]\nseccomp = \"off\"\n"))
            .sandbox
            .seccomp,
        SeccompMode::Off
    );
    rejects(
        &format!("{BASE}\n[sandbox]\nseccomp = \"strict\"\n"),
        "sandbox.seccomp",
        "is not one of enforce, log, off",
    );
}

#[test]
fn mapping_stores_are_checked() {
    let text = BASE.replace("source = \"file\"", "source = \"sql\"")
        + "\n[mapping.sql]\nurl = \"oracle://x\"\nquery = \"SELECT d FROM r\"\n";
    rejects(&text, "mapping.sql.url", "must start with postgres://");
    rejects(&text, "mapping.sql.query", "does not bind the identifier");
    let text = BASE.replace("source = \"file\"", "source = \"sql\"")
        + "\n[mapping.sql]\nurl = \"sqlite:///var/lib/postern/map.db\"\nquery = \"SELECT d FROM r WHERE id = ?\"\n";
    assert!(matches!(
        ok(&text).mapping.source,
        MappingSource::Sql { pool_size: 16, .. }
    ));
    rejects(
        &BASE.replace("path = \"/etc/postern/mappings.tsv\"", ""),
        "mapping.file.path",
        "required key is missing",
    );
}

#[test]
fn banners_cannot_break_the_protocol() {
    let text = format!("{BASE}\n[capabilities.imap]\nbanner = \"hi\\r\\n* BYE\"\n");
    rejects(&text, "capabilities.imap.banner", "one line of text");
}

#[test]
fn the_model_round_trips_through_the_codec() {
    let c = ok(BASE);
    let bytes = bincode::serde::encode_to_vec(&c, bincode::config::standard()).unwrap();
    let (back, _): (Config, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, c);
}

// ---- shipped examples -----------------------------------------------------------

#[test]
fn minimal_example_validates() {
    let c = ok(include_str!("../../../packaging/postern.minimal.toml"));
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].protocol, Protocol::Lmtp);
}

#[test]
fn complete_example_validates() {
    let c = ok(include_str!("../../../packaging/postern.example.toml"));
    assert!(!c.listeners.is_empty());
}

#[test]
fn every_key_in_the_complete_example_is_known() {
    // Uncomment every commented-out table and key: the result may break rules (it
    // declares listeners the example's destinations cannot serve), but every key must
    // be one postern knows, with a value of the right type.
    let text: String = include_str!("../../../packaging/postern.example.toml")
        .lines()
        .map(|line| {
            let rest = line.strip_prefix('#').unwrap_or(line);
            let is_code = rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
            if is_code {
                rest
            } else {
                line
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("\n[admin]\n") && text.contains("\n[[http.route]]\n"));
    let issues = parse(&text).unwrap_err();
    let odd: Vec<&Issue> = issues
        .iter()
        .filter(|i| i.message.contains("unknown key") || i.message.starts_with("expected "))
        .collect();
    assert!(odd.is_empty(), "{}", render(&issues));
}
