//! Identifier extraction per mechanism, token claims, and post-processing.
#![allow(clippy::unwrap_used)]

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

use super::*;
use crate::sasl::{decode_login, decode_oauthbearer, decode_plain, decode_xoauth2};

fn rules() -> IdentityRules {
    IdentityRules {
        jwt_username_claim: "email".into(),
        master_user_separators: vec!["%".into()],
        normalize: Normalize::None,
    }
}

fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(b"not-a-real-signature")
    )
}

fn sw1(body: &[u8], footer: Option<&str>) -> String {
    let mut t = format!("sw1.{}", URL_SAFE_NO_PAD.encode(body));
    if let Some(f) = footer {
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(f));
    }
    t
}

fn oauthbearer(a: &str, token: &str) -> Credentials {
    decode_oauthbearer(format!("n,a={a},\x01auth=Bearer {token}\x01\x01").as_bytes()).unwrap()
}

fn xoauth2(user: &str, token: &str) -> Credentials {
    decode_xoauth2(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes()).unwrap()
}

fn id(c: &Credentials) -> Option<String> {
    routing_identifier(c, &rules()).unwrap()
}

#[test]
fn plain_routes_by_authzid_when_present_else_authcid() {
    let c = decode_plain(b"\0alice@example.com\0pw").unwrap();
    assert_eq!(id(&c).as_deref(), Some("alice@example.com"));
    let c = decode_plain(b"alice@example.com\0admin@example.com\0pw").unwrap();
    assert_eq!(id(&c).as_deref(), Some("alice@example.com"));
}

#[test]
fn login_routes_by_username() {
    let c = decode_login(b"bob@example.com", b"pw").unwrap();
    assert_eq!(id(&c).as_deref(), Some("bob@example.com"));
}

#[test]
fn oauth_user_field_is_used_only_with_an_at_sign() {
    let token = jwt(r#"{"email":"from-token@example.com"}"#);
    assert_eq!(
        id(&oauthbearer("user@example.com", &token)).as_deref(),
        Some("user@example.com")
    );
    assert_eq!(
        id(&oauthbearer("user", &token)).as_deref(),
        Some("from-token@example.com")
    );
    assert_eq!(
        id(&xoauth2("someone@example.com", &token)).as_deref(),
        Some("someone@example.com")
    );
    assert_eq!(
        id(&xoauth2("someone", &token)).as_deref(),
        Some("from-token@example.com")
    );
    let c = decode_xoauth2(format!("auth=Bearer {token}\x01\x01").as_bytes()).unwrap();
    assert_eq!(id(&c).as_deref(), Some("from-token@example.com"));
}

#[test]
fn opaque_token_has_no_identifier() {
    assert_eq!(id(&xoauth2("someone", "ya29.opaque-google-token")), None);
    assert_eq!(id(&oauthbearer("", "opaque")), None);
}

#[test]
fn jwt_claims_are_tried_in_order() {
    let claim =
        |claims: &str, configured: &str| token_identifier(jwt(claims).as_bytes(), configured);
    let all = r#"{"sub":"s@x","unique_name":"un@x","upn":"upn@x","preferred_username":"pu@x","email":"e@x","mail":"m@x"}"#;
    assert_eq!(
        claim(all, "mail").as_deref(),
        Some("m@x"),
        "configured claim first"
    );
    assert_eq!(claim(all, "email").as_deref(), Some("e@x"));
    assert_eq!(claim(all, "absent").as_deref(), Some("e@x"));
    let rest = [
        (
            r#"{"sub":"s@x","unique_name":"un@x","upn":"upn@x","preferred_username":"pu@x"}"#,
            "pu@x",
        ),
        (
            r#"{"sub":"s@x","unique_name":"un@x","upn":"upn@x"}"#,
            "upn@x",
        ),
        (r#"{"sub":"s@x","unique_name":"un@x"}"#, "un@x"),
        (r#"{"sub":"s@x"}"#, "s@x"),
    ];
    for (claims, want) in rest {
        assert_eq!(claim(claims, "email").as_deref(), Some(want), "{claims}");
    }
}

#[test]
fn jwt_values_without_at_or_not_strings_are_skipped() {
    let claim = |claims: &str| token_identifier(jwt(claims).as_bytes(), "email");
    assert_eq!(
        claim(r#"{"email":"no-at-sign","preferred_username":42,"upn":["a@x"],"sub":"s@x"}"#)
            .as_deref(),
        Some("s@x")
    );
    assert_eq!(claim(r#"{"email":"alice","sub":"1234567890"}"#), None);
    assert_eq!(
        claim(r#"{"other":"x@y"}"#),
        None,
        "unlisted claims are not scanned"
    );
    assert_eq!(claim(r#"["a@x"]"#), None, "payload is not an object");
}

#[test]
fn malformed_jwts_have_no_identifier() {
    let payload = URL_SAFE_NO_PAD.encode(r#"{"email":"a@x"}"#);
    assert_eq!(
        token_identifier(format!("h.{payload}").as_bytes(), "email"),
        None
    );
    assert_eq!(
        token_identifier(format!("h.{payload}.s.t").as_bytes(), "email"),
        None
    );
    assert_eq!(token_identifier(b"h.!!!.s", "email"), None);
    let not_json = URL_SAFE_NO_PAD.encode("email=a@x");
    assert_eq!(
        token_identifier(format!("h.{not_json}.s").as_bytes(), "email"),
        None
    );
    assert_eq!(token_identifier(b"\xff\xfe", "email"), None);
    // Padded base64url and an empty signature (alg none) are fine.
    let padded = URL_SAFE.encode(r#"{"email":"a@x"}"#);
    assert_eq!(
        token_identifier(format!("h.{padded}.").as_bytes(), "email").as_deref(),
        Some("a@x")
    );
}

#[test]
fn sw1_tokens_use_the_footer() {
    let with = sw1(b"nonce-and-ciphertext", Some("alice@example.com"));
    assert_eq!(
        token_identifier(with.as_bytes(), "email").as_deref(),
        Some("alice@example.com")
    );
    // The footer need not contain `@`: it is the account name.
    let plain_name = sw1(b"body", Some("alice"));
    assert_eq!(
        token_identifier(plain_name.as_bytes(), "email").as_deref(),
        Some("alice")
    );
    // No footer: no identifier, even if the body would decode as JSON.
    let without = sw1(br#"{"email":"a@x"}"#, None);
    assert_eq!(token_identifier(without.as_bytes(), "email"), None);
    assert_eq!(
        token_identifier(b"sw1.body.", "email"),
        None,
        "empty footer"
    );
    assert_eq!(
        token_identifier(b"sw1.body.@@@", "email"),
        None,
        "bad base64"
    );
    // Through a whole login.
    assert_eq!(
        id(&xoauth2("x", &with)).as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(id(&oauthbearer("", &without)), None);
}

#[test]
fn master_user_separator_cuts_at_the_earliest() {
    let r = IdentityRules {
        master_user_separators: vec!["*".into(), "%".into(), "".into()],
        ..rules()
    };
    let pp = |raw: &str| post_process(raw, &r).unwrap();
    assert_eq!(pp("alice@x%admin").as_deref(), Some("alice@x"));
    assert_eq!(pp("alice@x*admin%z").as_deref(), Some("alice@x"));
    assert_eq!(pp("alice@x%admin*z").as_deref(), Some("alice@x"));
    assert_eq!(pp("alice@x").as_deref(), Some("alice@x"));
    assert_eq!(pp("%admin"), None, "nothing left: no identifier");
    // The full login is still what the credentials hold.
    let c = decode_login(b"alice@x%admin", b"pw").unwrap();
    assert_eq!(id(&c).as_deref(), Some("alice@x"));
    assert_eq!(c.username(), Some("alice@x%admin"));
    // Multi-character separators.
    let r = IdentityRules {
        master_user_separators: vec!["::".into()],
        ..rules()
    };
    assert_eq!(post_process("a:b::c", &r).unwrap().as_deref(), Some("a:b"));
    // No separators configured.
    let r = IdentityRules {
        master_user_separators: Vec::new(),
        ..rules()
    };
    assert_eq!(post_process("a%b", &r).unwrap().as_deref(), Some("a%b"));
}

#[test]
fn safety_check_refuses_control_space_and_quote() {
    for bad in [
        "a b@x", "a\"b@x", "a\tb@x", "a\x7fb@x", "a\x01b@x", "a\x1fb@x",
    ] {
        assert_eq!(
            post_process(bad, &rules()),
            Err(IdentityError::Unsafe),
            "{bad:?}"
        );
    }
    // Checked after the cut: what follows the separator does not matter.
    assert_eq!(
        post_process("alice@x%ad min", &rules()).unwrap().as_deref(),
        Some("alice@x")
    );
    // Non-ASCII is fine.
    assert_eq!(
        post_process("jörg@exämple.de", &rules())
            .unwrap()
            .as_deref(),
        Some("jörg@exämple.de")
    );
    let c = decode_login(b"bad user@x", b"pw").unwrap();
    assert_eq!(routing_identifier(&c, &rules()), Err(IdentityError::Unsafe));
    // An unsafe claim refuses the login too.
    let token = jwt(r#"{"email":"evil \"x\"@y"}"#);
    assert_eq!(
        routing_identifier(&xoauth2("n", &token), &rules()),
        Err(IdentityError::Unsafe)
    );
    let long = format!("{}@x", "a".repeat(MAX_IDENTIFIER_LEN));
    assert_eq!(post_process(&long, &rules()), Err(IdentityError::TooLong));
    assert_eq!(IdentityError::Unsafe.side(), Side::Client);
}

#[test]
fn normalize_lowercases_after_the_cut() {
    let r = IdentityRules {
        normalize: Normalize::Lowercase,
        ..rules()
    };
    assert_eq!(
        post_process("Alice@Example.COM%Admin", &r)
            .unwrap()
            .as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        post_process("JÖRG@X", &r).unwrap().as_deref(),
        Some("jörg@x")
    );
    assert_eq!(
        post_process("Alice@Example.COM", &rules())
            .unwrap()
            .as_deref(),
        Some("Alice@Example.COM"),
        "normalize = none keeps the case"
    );
}

#[test]
fn rules_from_config() {
    let mut config = crate::testutil::config(Vec::new(), Vec::new());
    config.routing.master_user_separators = vec!["%".into(), String::new(), "*".into()];
    config.oauth.jwt_username_claim = "mail".into();
    config.mapping.normalize = Normalize::Lowercase;
    let r = IdentityRules::from_config(&config);
    assert_eq!(r.master_user_separators, vec!["%", "*"]);
    assert_eq!(r.jwt_username_claim, "mail");
    assert_eq!(r.normalize, Normalize::Lowercase);
}
