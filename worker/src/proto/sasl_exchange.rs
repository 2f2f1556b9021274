//! One client SASL exchange, as every interactive dialogue runs it: the initial
//! response (or none), the continuations, SASL LOGIN's two prompts, lenient base64.
//! Sans-IO; each protocol wraps the challenges in its own continuation syntax (IMAP
//! `+ <b64>`, POP3 `+ <b64>`, SMTP `334 <b64>`, ManageSieve a quoted string) and
//! detects its own cancel (`*`).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::proto::dialogue::{Credentials, Redacted};
use crate::sasl::Mechanism;

/// SASL LOGIN prompts (draft-murchison-sasl-login): `Username:` and `Password:`.
pub const USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
pub const PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Base64 as clients send it: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An exchange waiting for the client's next line.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    step: Step,
}

#[derive(Debug)]
enum Step {
    /// The single response of PLAIN, OAUTHBEARER, XOAUTH2.
    Response,
    /// SASL LOGIN, after `Username:`.
    LoginUsername,
    /// SASL LOGIN, after `Password:`.
    LoginPassword { user: Redacted<Vec<u8>> },
}

/// What the dialogue does next.
#[derive(Debug)]
pub enum Next {
    /// Send this base64 challenge (empty: an empty continuation) and feed the client's
    /// answer to [`Exchange::respond`].
    Challenge(Exchange, &'static str),
    /// The exchange is complete.
    Done {
        mechanism: Mechanism,
        credentials: Credentials,
    },
    /// The client's data was not base64: refuse it (a counted failure).
    InvalidBase64,
}

impl Exchange {
    /// Starts an exchange for `mechanism`, with the client's initial response (base64
    /// text, `=` for an empty one, RFC 4959) if it sent one.
    pub fn start(mechanism: Mechanism, initial_response: Option<&[u8]>) -> Next {
        match initial_response {
            None => {
                let (step, prompt) = match mechanism {
                    Mechanism::Login => (Step::LoginUsername, USERNAME_PROMPT),
                    _ => (Step::Response, ""),
                };
                Next::Challenge(Exchange { mechanism, step }, prompt)
            }
            Some(text) => Exchange {
                mechanism,
                step: Step::Response,
            }
            .accept(text, mechanism == Mechanism::Login),
        }
    }

    #[cfg(test)]
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The client's answer to the last challenge: base64 text without its line end.
    pub fn respond(self, text: &[u8]) -> Next {
        let is_username = matches!(self.step, Step::LoginUsername);
        self.accept(text, is_username)
    }

    fn accept(self, text: &[u8], is_username: bool) -> Next {
        let Some(data) = decode_base64(text) else {
            return Next::InvalidBase64;
        };
        let data = Redacted::new(data);
        let mechanism = self.mechanism;
        if is_username {
            let step = Step::LoginPassword { user: data };
            return Next::Challenge(Exchange { mechanism, step }, PASSWORD_PROMPT);
        }
        let credentials = match self.step {
            Step::LoginPassword { user } => Credentials::UserPassword {
                user,
                password: data,
            },
            Step::Response | Step::LoginUsername => Credentials::Response(data),
        };
        Next::Done {
            mechanism,
            credentials,
        }
    }
}

/// Lenient base64 (padding optional); a lone `=` is the empty response (RFC 4959).
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    if text == b"=" {
        return Some(Vec::new());
    }
    BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(next: Next) -> Credentials {
        match next {
            Next::Done { credentials, .. } => credentials,
            other => panic!("not done: {other:?}"),
        }
    }

    fn challenge(next: Next) -> (Exchange, &'static str) {
        match next {
            Next::Challenge(e, p) => (e, p),
            other => panic!("no challenge: {other:?}"),
        }
    }

    #[test]
    fn initial_response_completes_at_once() {
        let c = done(Exchange::start(Mechanism::Plain, Some(b"AGEAYg")));
        assert_eq!(c, Credentials::Response(Redacted::new(b"\0a\0b".to_vec())));
        let c = done(Exchange::start(Mechanism::OAuthBearer, Some(b"=")));
        assert_eq!(c, Credentials::Response(Redacted::new(Vec::new())));
    }

    #[test]
    fn empty_continuation_then_response() {
        let (e, prompt) = challenge(Exchange::start(Mechanism::XOAuth2, None));
        assert_eq!(prompt, "");
        assert_eq!(e.mechanism(), Mechanism::XOAuth2);
        let c = done(e.respond(b"eA=="));
        assert_eq!(c, Credentials::Response(Redacted::new(b"x".to_vec())));
    }

    #[test]
    fn sasl_login_prompts_with_and_without_initial_response() {
        let (e, prompt) = challenge(Exchange::start(Mechanism::Login, None));
        assert_eq!(prompt, USERNAME_PROMPT);
        let (e, prompt) = challenge(e.respond(b"dXNlcg=="));
        assert_eq!(prompt, PASSWORD_PROMPT);
        let expected = Credentials::UserPassword {
            user: Redacted::new(b"user".to_vec()),
            password: Redacted::new(b"pw".to_vec()),
        };
        assert_eq!(done(e.respond(b"cHc=")), expected);

        let (e, prompt) = challenge(Exchange::start(Mechanism::Login, Some(b"dXNlcg")));
        assert_eq!(prompt, PASSWORD_PROMPT);
        assert_eq!(done(e.respond(b"cHc")), expected);
    }

    #[test]
    fn bad_base64_is_refused_at_any_step() {
        assert!(matches!(
            Exchange::start(Mechanism::Plain, Some(b"!!")),
            Next::InvalidBase64
        ));
        let (e, _) = challenge(Exchange::start(Mechanism::Login, None));
        assert!(matches!(e.respond(b"%%"), Next::InvalidBase64));
    }
}
