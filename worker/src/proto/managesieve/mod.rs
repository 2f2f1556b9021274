//! ManageSieve front door up to authentication. STUB: the dialogue answers nothing and
//! closes; the real one replaces this module (issue 4).

use std::io;
use std::sync::Arc;

use postern_config::model::{Config, Listener, Protocol};

use crate::proto::dialogue::{
    Action, Backend, ClientIdentity, Dialogue, LoginRequest, Outcome, Rejection, Replay,
};
use crate::sasl::Credentials;
use crate::upstream::{Connected, DialError};

/// What one listener's ManageSieve dialogue needs; built once per listener and shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {}

impl Settings {
    pub fn new(_config: &Config, _listener: &Listener) -> Settings {
        Settings {}
    }
}

/// One client connection's ManageSieve dialogue up to authentication.
pub struct Machine {
    closed: bool,
}

impl Machine {
    pub fn new(_settings: Arc<Settings>) -> Machine {
        Machine { closed: false }
    }
}

impl Dialogue for Machine {
    fn greeting(&self) -> Vec<u8> {
        Vec::new()
    }
    fn on_bytes(&mut self, _bytes: &[u8]) -> Vec<Action> {
        self.closed = true;
        vec![Action::Close]
    }
    fn on_tls_established(&mut self) -> Vec<Action> {
        Vec::new()
    }
    fn on_login_result(&mut self, _outcome: Outcome) -> Vec<Action> {
        vec![Action::Close]
    }
    fn on_rejected(&mut self, _rejection: Rejection) -> Vec<Action> {
        vec![Action::Close]
    }
    fn is_tls(&self) -> bool {
        false
    }
    fn is_closed(&self) -> bool {
        self.closed
    }
    fn state_name(&self) -> &'static str {
        "stub"
    }
}

/// An established ManageSieve backend connection, ready for the replay.
pub struct ManageSieveBackend {}

impl Backend for ManageSieveBackend {
    const PROTOCOL: Protocol = Protocol::ManageSieve;

    async fn establish(
        connected: Connected,
        _identity: &ClientIdentity,
    ) -> Result<ManageSieveBackend, DialError> {
        Err(DialError::refused(
            connected.addr,
            "greeting",
            b"not implemented",
        ))
    }

    fn is_tls(&self) -> bool {
        false
    }

    async fn replay(
        self,
        _request: &LoginRequest,
        _credentials: &Credentials,
    ) -> io::Result<Replay> {
        Err(io::Error::other("not implemented"))
    }
}
