//! Logins for the line protocols next to IMAP, on the same [`Conn`]: POP3 (greeting,
//! USER, PASS, STAT, QUIT) and submission (greeting, EHLO, AUTH PLAIN, QUIT).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::imap::{within, Conn, Target};

/// Reads one POP3 reply line; fails unless it is `+OK`.
async fn pop3_ok(c: &mut Conn, what: &str) -> Result<Vec<u8>> {
    let line = c.read_line().await.with_context(|| what.to_string())?;
    if !line.starts_with(b"+OK") {
        bail!("{what}: {}", String::from_utf8_lossy(&line));
    }
    Ok(line)
}

async fn pop3_command(c: &mut Conn, what: &str, command: &str) -> Result<Vec<u8>> {
    c.send(format!("{command}\r\n").as_bytes()).await?;
    pop3_ok(c, what).await
}

/// connect, USER, PASS, STAT, QUIT.
pub async fn pop3_login(step: Duration, target: &Target, user: &str, password: &str) -> Result<()> {
    let mut c = within(step, "connect", target.open(4096)).await?;
    within(step, "greeting", pop3_ok(&mut c, "greeting")).await?;
    within(
        step,
        "USER",
        pop3_command(&mut c, "USER", &format!("USER {user}")),
    )
    .await?;
    within(
        step,
        "PASS",
        pop3_command(&mut c, "PASS", &format!("PASS {password}")),
    )
    .await?;
    within(step, "STAT", pop3_command(&mut c, "STAT", "STAT")).await?;
    within(step, "QUIT", pop3_command(&mut c, "QUIT", "QUIT")).await?;
    Ok(())
}

/// Reads one (possibly multi-line) SMTP reply; fails unless its code is `code`.
async fn smtp_reply(c: &mut Conn, what: &str, code: &[u8; 3]) -> Result<()> {
    loop {
        let line = c.read_line().await.with_context(|| what.to_string())?;
        if line.len() < 3 || &line[..3] != code {
            bail!("{what}: {}", String::from_utf8_lossy(&line));
        }
        if line.get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

async fn smtp_command(c: &mut Conn, what: &str, command: &str, code: &[u8; 3]) -> Result<()> {
    c.send(format!("{command}\r\n").as_bytes()).await?;
    smtp_reply(c, what, code).await
}

/// connect, EHLO, AUTH PLAIN (initial response), QUIT.
pub async fn submission_login(
    step: Duration,
    target: &Target,
    user: &str,
    password: &str,
) -> Result<()> {
    let mut c = within(step, "connect", target.open(4096)).await?;
    within(step, "greeting", smtp_reply(&mut c, "greeting", b"220")).await?;
    within(
        step,
        "EHLO",
        smtp_command(&mut c, "EHLO", "EHLO bench.client", b"250"),
    )
    .await?;
    let plain = base64(format!("\0{user}\0{password}").as_bytes());
    within(
        step,
        "AUTH",
        smtp_command(&mut c, "AUTH", &format!("AUTH PLAIN {plain}"), b"235"),
    )
    .await?;
    within(step, "QUIT", smtp_command(&mut c, "QUIT", "QUIT", b"221")).await?;
    Ok(())
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(b"\0bench1\0secret"), "AGJlbmNoMQBzZWNyZXQ=");
    }

    async fn serve(script: &'static [u8]) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("local addr");
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            // The replies go out at once; the client reads them in order.
            s.write_all(script).await.ok();
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut sink)
                .await
                .ok();
        });
        addr
    }

    #[tokio::test]
    async fn pop3_dialogue() {
        let addr = serve(b"+OK ready\r\n+OK\r\n+OK in\r\n+OK 0 0\r\n+OK bye\r\n").await;
        let r = pop3_login(Duration::from_secs(5), &Target::plain(addr), "u", "p").await;
        assert!(r.is_ok(), "{r:?}");
        let addr = serve(b"+OK ready\r\n+OK\r\n-ERR [AUTH] no\r\n").await;
        let r = pop3_login(Duration::from_secs(5), &Target::plain(addr), "u", "p").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn submission_dialogue() {
        let addr = serve(
            b"220 hi\r\n250-x\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n235 2.7.0 ok\r\n221 bye\r\n",
        )
        .await;
        let r = submission_login(Duration::from_secs(5), &Target::plain(addr), "u", "p").await;
        assert!(r.is_ok(), "{r:?}");
        let addr = serve(b"220 hi\r\n250 x\r\n535 5.7.8 no\r\n").await;
        let r = submission_login(Duration::from_secs(5), &Target::plain(addr), "u", "p").await;
        assert!(r.is_err());
    }
}
