//! Decoding each mechanism's response, the malformed cases, CR/LF/NUL refusal, the
//! replay bytes, and that `Debug` shows no secret.
#![allow(clippy::unwrap_used)]

use super::*;

fn plain(payload: &[u8]) -> Credentials {
    decode_plain(payload).unwrap()
}

#[test]
fn mechanism_names() {
    assert_eq!(Mechanism::from_name("xoauth2"), Some(Mechanism::XOAuth2));
    assert_eq!(
        Mechanism::from_name("OAuthBearer"),
        Some(Mechanism::OAuthBearer)
    );
    assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
    assert_eq!(Mechanism::Plain.to_string(), "PLAIN");
}

#[test]
fn plain_without_authzid() {
    let c = plain(b"\0alice@example.com\0s3cret");
    assert_eq!(c.mechanism(), Mechanism::Plain);
    assert_eq!(c.authzid(), None);
    assert_eq!(c.username(), Some("alice@example.com"));
    assert_eq!(c.password().unwrap().expose(), b"s3cret");
    assert_eq!(c.token(), None);
    assert_eq!(c.replay_mechanism(), Mechanism::Plain);
    assert_eq!(c.replay_payload().expose(), b"\0alice@example.com\0s3cret");
    let (user, pass) = c.login_args().unwrap();
    assert_eq!((user, pass.expose()), ("alice@example.com", &b"s3cret"[..]));
}

#[test]
fn plain_with_authzid_is_replayed_unchanged() {
    let c = plain(b"alice@example.com\0admin\0master-pw");
    assert_eq!(c.authzid(), Some("alice@example.com"));
    assert_eq!(c.username(), Some("admin"));
    assert_eq!(
        c.replay_payload().expose(),
        b"alice@example.com\0admin\0master-pw"
    );
    assert_eq!(
        c.replay_base64().expose(),
        encode_base64(b"alice@example.com\0admin\0master-pw").as_bytes()
    );
    assert!(c.login_args().is_none(), "LOGIN cannot carry an authzid");
}

#[test]
fn plain_keeps_spaces_and_utf8_in_the_password() {
    let c = plain("\0jörg@example.com\0pa ss wörd".as_bytes());
    assert_eq!(c.username(), Some("jörg@example.com"));
    assert_eq!(c.password().unwrap().expose(), "pa ss wörd".as_bytes());
}

#[test]
fn plain_malformed() {
    for (payload, reason) in [
        (&b""[..], "expected authzid NUL authcid NUL password"),
        (b"alice", "expected authzid NUL authcid NUL password"),
        (b"\0alice", "expected authzid NUL authcid NUL password"),
        (b"\0\0pw", "empty username"),
        (b"admin\0\0pw", "empty username"),
        (b"\0alice\0", "empty password"),
    ] {
        assert_eq!(
            decode_plain(payload),
            Err(SaslError::Malformed {
                mechanism: Mechanism::Plain,
                reason
            }),
            "{payload:?}"
        );
    }
}

#[test]
fn plain_refuses_cr_lf_nul_inside_fields() {
    let forbidden = |field| {
        Err(SaslError::ForbiddenByte {
            mechanism: Mechanism::Plain,
            field,
        })
    };
    assert_eq!(
        decode_plain(b"\0alice\0pw\0more"),
        forbidden(Field::Password)
    );
    assert_eq!(
        decode_plain(b"\0alice\0pw\r\nA1 LOGOUT"),
        forbidden(Field::Password)
    );
    assert_eq!(decode_plain(b"\0al\nice\0pw"), forbidden(Field::Username));
    assert_eq!(
        decode_plain(b"ad\rmin\0alice\0pw"),
        forbidden(Field::Authzid)
    );
}

#[test]
fn plain_usernames_must_be_utf8() {
    assert_eq!(
        decode_plain(b"\0al\xffice\0pw"),
        Err(SaslError::NotUtf8 {
            mechanism: Mechanism::Plain,
            field: Field::Username
        })
    );
    // A password is bytes: replayed as sent.
    assert_eq!(
        plain(b"\0alice\0p\xe9").password().unwrap().expose(),
        b"p\xe9"
    );
}

#[test]
fn login_is_rebuilt_as_plain() {
    let c = decode_login(b"bob@example.com", b"hunter2").unwrap();
    assert_eq!(c.mechanism(), Mechanism::Login);
    assert_eq!(c.replay_mechanism(), Mechanism::Plain);
    assert_eq!(c.username(), Some("bob@example.com"));
    assert_eq!(c.authzid(), None);
    assert_eq!(c.replay_payload().expose(), b"\0bob@example.com\0hunter2");
    assert_eq!(
        c.replay_base64().expose(),
        b"AGJvYkBleGFtcGxlLmNvbQBodW50ZXIy"
    );
    let (u, p) = c.login_args().unwrap();
    assert_eq!((u, p.expose()), ("bob@example.com", &b"hunter2"[..]));
}

#[test]
fn login_malformed_and_forbidden() {
    let m = Mechanism::Login;
    assert_eq!(
        decode_login(b"", b"pw"),
        Err(SaslError::Malformed {
            mechanism: m,
            reason: "empty username"
        })
    );
    assert_eq!(
        decode_login(b"bob", b""),
        Err(SaslError::Malformed {
            mechanism: m,
            reason: "empty password"
        })
    );
    assert_eq!(
        decode_login(b"bob\0x", b"pw"),
        Err(SaslError::ForbiddenByte {
            mechanism: m,
            field: Field::Username
        })
    );
    assert_eq!(
        decode_login(b"bob", b"pw\n"),
        Err(SaslError::ForbiddenByte {
            mechanism: m,
            field: Field::Password
        })
    );
    assert!(matches!(
        decode(Mechanism::Login, b"\0bob\0pw"),
        Err(SaslError::Malformed { .. })
    ));
}

#[test]
fn oauthbearer_rfc7628_example() {
    let payload = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
    let c = decode_oauthbearer(payload).unwrap();
    assert_eq!(c.mechanism(), Mechanism::OAuthBearer);
    assert_eq!(c.username(), Some("user@example.com"));
    assert_eq!(
        c.token().unwrap().expose(),
        b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
    );
    assert_eq!(c.replay_mechanism(), Mechanism::OAuthBearer);
    assert_eq!(c.replay_payload().expose(), payload, "replayed unchanged");
    assert!(c.password().is_none());
    assert!(c.login_args().is_none());
}

#[test]
fn oauthbearer_variants() {
    // No authzid; key and scheme case-insensitive; extra spaces around the token.
    let c = decode_oauthbearer(b"n,,\x01AUTH=bearer   tok123 \x01\x01").unwrap();
    assert_eq!(c.username(), None);
    assert_eq!(c.token().unwrap().expose(), b"tok123");
    // `y` flag; escaped authzid; the first auth=Bearer pair counts.
    let c = decode_oauthbearer(b"y,a=we=2Cird=3Dname@x,\x01auth=Basic abc\x01auth=Bearer first\x01auth=Bearer second\x01\x01")
        .unwrap();
    assert_eq!(c.username(), Some("we,ird=name@x"));
    assert_eq!(c.token().unwrap().expose(), b"first");
    // Empty a= is no user.
    let c = decode_oauthbearer(b"n,a=,\x01auth=Bearer t\x01\x01").unwrap();
    assert_eq!(c.username(), None);
    // Through the generic entry point.
    assert!(decode(Mechanism::OAuthBearer, b"n,,\x01auth=Bearer t\x01\x01").is_ok());
}

#[test]
fn oauthbearer_malformed() {
    let reason = |payload: &[u8]| match decode_oauthbearer(payload) {
        Err(SaslError::Malformed { reason, .. }) => reason,
        other => panic!("{payload:?}: {other:?}"),
    };
    assert_eq!(reason(b""), "bad GS2 header");
    assert_eq!(reason(b"x,,\x01auth=Bearer t\x01\x01"), "bad GS2 header");
    assert_eq!(reason(b"n\x01auth=Bearer t\x01\x01"), "bad GS2 header");
    assert_eq!(
        reason(b"n,a=bob\x01auth=Bearer t\x01\x01"),
        "unterminated GS2 authzid"
    );
    assert_eq!(
        reason(b"n,a=b=2Xob,\x01auth=Bearer t\x01\x01"),
        "bad escape in GS2 authzid"
    );
    assert_eq!(
        reason(b"p=tls-unique,,\x01auth=Bearer t\x01\x01"),
        "channel binding is not supported"
    );
    assert_eq!(reason(b"n,,\x01\x01"), "no auth=Bearer <token> field");
    assert_eq!(
        reason(b"n,,\x01auth=Bearer \x01\x01"),
        "no auth=Bearer <token> field"
    );
    assert_eq!(
        reason(b"n,,\x01auth=Bearertok\x01\x01"),
        "no auth=Bearer <token> field"
    );
    assert_eq!(
        reason(b"n,,\x01auth=Basic dXNlcjpwdw==\x01\x01"),
        "no auth=Bearer <token> field"
    );
}

#[test]
fn oauthbearer_refuses_cr_lf_nul() {
    let field = |payload: &[u8]| match decode_oauthbearer(payload) {
        Err(SaslError::ForbiddenByte { field, .. }) => field,
        other => panic!("{payload:?}: {other:?}"),
    };
    assert_eq!(field(b"n,a=bob\r@x,\x01auth=Bearer t\x01\x01"), Field::User);
    assert_eq!(
        field(b"n,,\x01auth=Bearer t\nA1 LOGOUT\x01\x01"),
        Field::Token
    );
    assert_eq!(
        field(b"n,,\x01host=a\0b\x01auth=Bearer t\x01\x01"),
        Field::Payload
    );
}

#[test]
fn xoauth2() {
    let payload = b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
    let c = decode_xoauth2(payload).unwrap();
    assert_eq!(c.mechanism(), Mechanism::XOAuth2);
    assert_eq!(c.username(), Some("someuser@example.com"));
    assert_eq!(
        c.token().unwrap().expose(),
        b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    );
    assert_eq!(c.replay_mechanism(), Mechanism::XOAuth2);
    assert_eq!(c.replay_payload().expose(), payload);

    // user= missing or empty: no username; token still required.
    let c = decode_xoauth2(b"auth=Bearer tok\x01\x01").unwrap();
    assert_eq!(c.username(), None);
    let c = decode_xoauth2(b"user=\x01auth=Bearer tok\x01\x01").unwrap();
    assert_eq!(c.username(), None);
    assert!(matches!(
        decode_xoauth2(b"user=bob@x\x01\x01"),
        Err(SaslError::Malformed {
            mechanism: Mechanism::XOAuth2,
            ..
        })
    ));
    assert_eq!(
        decode_xoauth2(b"user=bob\n@x\x01auth=Bearer t\x01\x01"),
        Err(SaslError::ForbiddenByte {
            mechanism: Mechanism::XOAuth2,
            field: Field::User
        })
    );
    assert_eq!(
        decode_xoauth2(b"user=bob@x\x01auth=Bearer t\r\x01\x01"),
        Err(SaslError::ForbiddenByte {
            mechanism: Mechanism::XOAuth2,
            field: Field::Token
        })
    );
}

#[test]
fn base64_helpers() {
    assert_eq!(decode_base64(b"AGJvYgBwdw==").unwrap(), b"\0bob\0pw");
    assert_eq!(
        decode_base64(b"AGJvYgBwdw").unwrap(),
        b"\0bob\0pw",
        "padding optional"
    );
    assert_eq!(decode_base64(b"=").unwrap(), b"", "SASL-IR empty response");
    assert_eq!(decode_base64(b"not base64!"), Err(SaslError::Base64));
    assert_eq!(decode_base64(&[0x01]), Err(SaslError::Base64));
    assert_eq!(encode_base64(b"\x01"), OAUTH_ERROR_ACK_BASE64);
    assert_eq!(plain_payload("", "u", b"p").expose(), b"\0u\0p");
}

#[test]
fn debug_never_shows_secrets() {
    let all = [
        decode_plain(b"admin@x\0alice@x\0PASSWORD-1").unwrap(),
        decode_login(b"bob@x", b"PASSWORD-2").unwrap(),
        decode_oauthbearer(b"n,a=carol@x,\x01auth=Bearer TOKEN-3\x01\x01").unwrap(),
        decode_xoauth2(b"user=dave@x\x01auth=Bearer TOKEN-4\x01\x01").unwrap(),
    ];
    for c in &all {
        let shown = format!(
            "{c:?} {c:#?} {:?} {:?}",
            c.replay_payload(),
            c.replay_base64()
        );
        for secret in ["PASSWORD", "TOKEN", "UEFTU1dPUkQ", "VE9LRU4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    assert!(
        format!("{:?}", all[0]).contains("alice@x"),
        "usernames are shown"
    );
    // Errors carry no byte of the input.
    let e = decode_plain(b"\0alice\0PASSWORD\r\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "PLAIN password contains a CR, LF or NUL byte"
    );
    assert_eq!(e.side(), Side::Client);
}
