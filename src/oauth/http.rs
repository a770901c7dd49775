//! HTTPS for token requests, whatever the identity provider: the client (one TLS provider,
//! bounded waits), a form POST, the standard success answer (RFC 6749 §5.1) and the
//! failures below HTTP, each turned into a [`TokenError`].
//!
//! Invariants: no request body (which holds the secret or the signed assertion) ever reaches an
//! error text; errors name the failure and its cause only. No answer body is held beyond
//! [`MAX_ANSWER_BYTES`] ([`bounded_body`], also used by the Graph transport): an endpoint or a
//! proxy in between that keeps sending cannot grow the relay's memory.

use std::time::Duration;

use super::token::{IssuedToken, TokenError};
use crate::vocab::secret::Secret;

/// The HTTPS client of one provider: the relay's TLS config with `extra_roots`, `timeout` per
/// request.
///
/// # Errors
/// When the client cannot be built (an unusable extra root certificate).
pub(super) fn client(
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let tls = crate::tls::client_config(extra_roots)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("smtp-oauth-relay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

/// The longest answer body read from an HTTPS endpoint the relay calls (token endpoints,
/// Graph). Their answers are small JSON; the largest, a Graph draft's resource, holds at most
/// the text of a message under Graph's 4 MB request limit.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Why an answer body could not be read whole.
#[derive(Debug)]
pub enum AnswerError {
    /// The connection failed while the body was read.
    Read(reqwest::Error),
    /// The body is longer than [`MAX_ANSWER_BYTES`]; the rest was not read.
    TooLong,
}

/// The body of `response`, read piece by piece and given up past [`MAX_ANSWER_BYTES`].
///
/// # Errors
/// [`AnswerError`].
pub async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, AnswerError> {
    let mut body = Vec::new();
    while let Some(piece) = response.chunk().await.map_err(AnswerError::Read)? {
        if body.len() + piece.len() > MAX_ANSWER_BYTES {
            return Err(AnswerError::TooLong);
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// POST `form` to `url`: the HTTP status and the body.
///
/// # Errors
/// [`TokenError::Unreachable`] or [`TokenError::UntrustedCertificate`] when no answer came.
pub(super) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(u16, String), TokenError> {
    let response = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| transport_error(&e))?;
    let status = response.status().as_u16();
    let body = match bounded_body(response).await {
        Ok(body) => body,
        Err(AnswerError::Read(e)) => return Err(transport_error(&e)),
        Err(AnswerError::TooLong) => {
            return Err(TokenError::BadAnswer(format!(
                "HTTP {status} with an answer longer than {MAX_ANSWER_BYTES} bytes (not read)"
            )));
        }
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<String>,
}

/// Read a successful token response (RFC 6749 §5.1): a bearer `access_token` and its
/// `expires_in` (a number, or a number in a string).
///
/// # Errors
/// What is missing, for [`TokenError::BadAnswer`].
pub(super) fn issued_token(body: &str) -> Result<IssuedToken, String> {
    let parsed: TokenResponse = serde_json::from_str(body).map_err(|_| "not JSON".to_owned())?;
    let value = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "no access_token".to_owned())?;
    if let Some(kind) = &parsed.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("token_type is {kind}, not Bearer"));
    }
    let lifetime = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs)
    .ok_or_else(|| "no expires_in".to_owned())?;
    Ok(IssuedToken {
        value: Secret::new(value),
        lifetime,
    })
}

/// A reqwest error in one line, without the request body (which holds the secret; reqwest
/// never prints it, but this keeps the promise explicit).
/// A failed request: a refused certificate is a configuration problem, the rest an outage.
pub(super) fn transport_error(error: &reqwest::Error) -> TokenError {
    match refused_certificate(error) {
        Some(problem) => TokenError::UntrustedCertificate(problem),
        None => TokenError::Unreachable(describe_reqwest_error(error)),
    }
}

/// The certificate error in `error`'s causes, if the TLS handshake refused the peer's
/// certificate. rustls errors arrive wrapped in (nested) `io::Error`s, whose `source` skips
/// the wrapped error, so those are opened with `get_ref`.
fn refused_certificate(error: &reqwest::Error) -> Option<String> {
    fn tls_error<'a>(
        mut error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a rustls::Error> {
        for _ in 0..8 {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            error = error.downcast_ref::<std::io::Error>()?.get_ref()?;
        }
        None
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(
            tls @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) = tls_error(inner)
        {
            return Some(tls.to_string());
        }
        source = inner.source();
    }
    None
}

fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        detail = inner.to_string();
        source = inner.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain-HTTP server on 127.0.0.1 answering one request with `200` and `body_len` bytes
    /// of JSON-ish filler, sent in pieces (it stops when the client hangs up).
    async fn answering(body_len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = vec![b' '; 64 * 1024];
            let mut left = body_len;
            while left > 0 {
                let n = left.min(piece.len());
                if stream.write_all(&piece[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
        });
        format!("http://{address}/token")
    }

    #[tokio::test]
    async fn an_answer_past_the_bound_is_refused_not_held() {
        let http = client(&[], Duration::from_secs(20)).unwrap();
        let url = answering(MAX_ANSWER_BYTES + 1).await;
        match post_form(&http, &url, &[("grant_type", "client_credentials")]).await {
            Err(TokenError::BadAnswer(text)) => assert!(text.contains("longer than"), "{text}"),
            other => panic!("expected BadAnswer, got {other:?}"),
        }
        let url = answering(MAX_ANSWER_BYTES).await;
        let (status, body) = post_form(&http, &url, &[("grant_type", "client_credentials")])
            .await
            .unwrap();
        assert_eq!((status, body.len()), (200, MAX_ANSWER_BYTES));
    }
}
