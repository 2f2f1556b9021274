//! Rules that compare tables: the cross-references of `reference/stalwart-proxy.md`
//! §2.11 (default and pass-through destinations, HTTP route targets, no listeners at
//! all) and postern's own (TLS listeners need a certificate, an address is bound once,
//! a destination must not point back at postern). Each rule looks only at values that
//! were valid, so one mistake is reported once.

use std::net::SocketAddr;

use crate::model::{Protocol, TlsMode};
use crate::schema::{join, suggest, Ctx};

use super::Draft;

pub(crate) fn check(ctx: &Ctx, d: &Draft<'_>) {
    let names: Vec<&str> = d.destinations.keys().map(String::as_str).collect();
    let undeclared = |name: &str| {
        let hint = match suggest(name, &names) {
            Some(near) => format!("did you mean {near}?"),
            None if names.is_empty() => "declare it with a [destination.<name>] table".to_owned(),
            None => format!(
                "declare [destination.{name}] or use one of {}",
                names.join(", ")
            ),
        };
        format!("destination {name:?} is not declared; {hint}")
    };
    let has_leg = |dest: &str, p: Protocol| {
        d.destinations
            .get(dest)
            .is_some_and(|x| x.legs.contains_key(&p))
    };

    // Rule 1, then rule 5: interactive listeners fall back to the default destination.
    if let Some(routing) = d.routing {
        let default = routing.default_destination.as_str();
        if d.destinations.contains_key(default) {
            for l in d.listeners {
                let Some(p) = l.protocol.filter(|p| p.is_interactive()) else {
                    continue;
                };
                if !has_leg(default, p) {
                    ctx.push(
                        join(&l.path, "protocol"),
                        format!(
                            "the default destination {default:?} has no {p} leg, and clients \
                             without a mapping go there; add [destination.{default}.protocol.{p}]"
                        ),
                    );
                }
            }
        } else {
            ctx.push("routing.default_destination", undeclared(default));
        }
        passthrough(
            ctx,
            d,
            routing.smtp_passthrough_destination.as_deref(),
            &undeclared,
        );
    }

    // TLS on a listener (or the admin API) needs something to present.
    if !d.certificates_declared {
        for l in d.listeners {
            if let Some(mode @ (TlsMode::Implicit | TlsMode::Starttls)) = l.tls {
                ctx.push(
                    join(&l.path, "tls"),
                    format!(
                        "{:?} needs a certificate, but no [tls.certificate.<name>] is \
                         configured; add one, or use tls = \"plain\"",
                        mode.as_str()
                    ),
                );
            }
        }
        if d.admin.is_some_and(|a| a.tls.is_some()) {
            ctx.push(
                "admin.tls",
                "the admin API is served over HTTPS, but no [tls.certificate.<name>] is \
                 configured; add one",
            );
        }
    }

    binds(ctx, d);
    loops(ctx, d);

    // Rule 8: route targets exist and speak HTTP.
    for r in d.routes {
        for (key, target) in [("destination", &r.destination), ("fallback", &r.fallback)] {
            let Some(dest) = target.as_deref() else {
                continue;
            };
            if !d.destinations.contains_key(dest) {
                ctx.push(join(&r.path, key), undeclared(dest));
            } else if !has_leg(dest, Protocol::Http) {
                ctx.push(
                    join(&r.path, key),
                    format!(
                        "destination {dest:?} has no http leg; add \
                         [destination.{dest}.protocol.http]"
                    ),
                );
            }
        }
    }

    // Rule 13.
    if d.listeners.is_empty() && d.admin.is_none() {
        ctx.push(
            "listener",
            "no listeners configured; add a [listener.<name>] table with protocol, bind and tls",
        );
    }
}

/// Rule 6: SMTP and LMTP listeners relay to `smtp_passthrough_destination`, which must
/// declare a leg for each pass-through protocol some listener uses. (Unlike the
/// reference's 1.0.0, an LMTP-only setup needs no smtp leg.)
fn passthrough(
    ctx: &Ctx,
    d: &Draft<'_>,
    target: Option<&str>,
    undeclared: &dyn Fn(&str) -> String,
) {
    let path = "routing.smtp_passthrough_destination";
    let relayed: Vec<_> = d
        .listeners
        .iter()
        .filter(|l| l.protocol.is_some_and(Protocol::is_passthrough))
        .collect();
    let Some(dest) = target else {
        for l in relayed {
            ctx.push(
                join(&l.path, "protocol"),
                format!(
                    "{} listeners relay to {path}, which is not set; set it to a destination \
                     with an {} leg",
                    l.protocol.map_or("", Protocol::as_str),
                    l.protocol.map_or("", Protocol::as_str)
                ),
            );
        }
        return;
    };
    let Some(destination) = d.destinations.get(dest) else {
        ctx.push(path, undeclared(dest));
        return;
    };
    let mut needed: Vec<Protocol> = relayed.iter().filter_map(|l| l.protocol).collect();
    needed.sort();
    needed.dedup();
    for p in needed {
        if !destination.legs.contains_key(&p) {
            let users: Vec<&str> = relayed
                .iter()
                .filter(|l| l.protocol == Some(p))
                .map(|l| l.path.as_str())
                .collect();
            ctx.push(
                path,
                format!(
                    "destination {dest:?} has no {p} leg, which {} relays to; add \
                     [destination.{dest}.protocol.{p}]",
                    users.join(" and ")
                ),
            );
        }
    }
}

/// Two sockets cannot bind the same address; a wildcard also clashes with any specific
/// address of its family on the same port. Port 0 (any free port) never clashes.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

fn binds(ctx: &Ctx, d: &Draft<'_>) {
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    let mut all: Vec<(&str, &[(String, SocketAddr)])> = Vec::new();
    for l in d.listeners {
        if let Some(b) = &l.bind {
            all.push((l.path.as_str(), b));
        }
    }
    if let Some(b) = d.admin.and_then(|a| a.bind.as_ref()) {
        all.push(("admin", b));
    }
    for (owner, list) in all {
        for (path, addr) in list {
            if let Some((_, other)) = seen.iter().find(|(a, _)| clash(*a, *addr)) {
                ctx.push(
                    path.clone(),
                    format!("{addr} is already bound by {other}; each address may be bound once"),
                );
            } else {
                seen.push((*addr, owner.to_owned()));
            }
        }
    }
}

/// A destination leg that is one of postern's own listeners would loop forever.
fn loops(ctx: &Ctx, d: &Draft<'_>) {
    for dest in d.destinations.values() {
        let Some(ip) = dest
            .host
            .as_deref()
            .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        else {
            continue;
        };
        for leg in dest.legs.values() {
            let Some(port) = leg.port else { continue };
            let target = SocketAddr::new(ip, port);
            for l in d.listeners {
                let hit = l.bind.iter().flatten().any(|(_, b)| {
                    b.port() == port
                        && (b.ip() == ip
                            || (b.ip().is_unspecified()
                                && b.is_ipv4() == ip.is_ipv4()
                                && ip.is_loopback()))
                });
                if hit {
                    ctx.push(
                        join(&leg.path, "port"),
                        format!(
                            "{target} is postern's own {}; connections would loop back \
                             into postern",
                            l.path
                        ),
                    );
                }
            }
        }
    }
}
