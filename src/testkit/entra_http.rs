//! Request handling of the fake token endpoint: routing, form and HTTP Basic credential
//! parsing, the client-credentials checks (client assertions are verified in
//! `entra_assertion`), token issuance, and the HTTP responses (JSON
//! success and error bodies, 404 for other paths, injected faults).
//!
//! Invariants: every answer to a token-path request is recorded exactly once in the shared
//! stats (without the secret); the request body is capped at 64 KiB; a `client-request-id`
//! header that is a GUID is echoed as the correlation id, as Entra does.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::entra::{EntraFault, EntraShared, TokenOutcome, TokenRequestRecord};
use super::entra_assertion::{AssertionContext, check_client_assertion};
use super::entra_errors::EntraError;
use super::form::{form_value, parse_form, percent_decode};
use super::issuance::{CredentialKind, Resource, ScopeError, parse_scope};
use super::random::{is_guid, new_guid};

const MAX_BODY: usize = 64 * 1024;

use super::https_server::ConnectionDropped;

use super::https_server::HttpResponse;

/// What the client sent, minus the secret value.
struct TokenRequest {
    tenant: String,
    client_id: Option<String>,
    scope: Option<String>,
    credential: Option<CredentialKind>,
}

/// Handles one HTTP request.
///
/// # Errors
/// [`ConnectionDropped`] when a fault says to close without answering.
pub(crate) async fn handle(
    shared: Arc<EntraShared>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ConnectionDropped> {
    let Some(tenant) = token_path_tenant(request.uri().path()) else {
        return Ok(not_found(request.uri().path()));
    };
    let correlation_id = request
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_guid(v))
        .map_or_else(new_guid, str::to_ascii_lowercase);
    let mut summary = TokenRequest {
        tenant: tenant.clone(),
        client_id: None,
        scope: None,
        credential: None,
    };
    match shared.begin_token_request() {
        Some(EntraFault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(fault) => {
            record(&shared, summary, TokenOutcome::Fault(fault));
            return match fault {
                EntraFault::TemporarilyUnavailable => Ok(error_response(
                    &EntraError::temporarily_unavailable(),
                    &correlation_id,
                )),
                EntraFault::CloseWithoutResponse => Err(ConnectionDropped),
                EntraFault::ServerError | EntraFault::Delay(_) => Ok(plain_server_error()),
            };
        }
        None => {}
    }
    let outcome = process(&shared, request, &tenant, &mut summary).await;
    let response = match &outcome {
        Ok(issued) => issued.response(&correlation_id),
        Err(error) => error_response(error, &correlation_id),
    };
    let recorded = match outcome {
        Ok(issued) => TokenOutcome::Issued {
            resource: issued.resource,
            expires_in: issued.expires_in,
            roles: issued.roles,
        },
        Err(error) => TokenOutcome::Rejected {
            status: error.status,
            error: error.error.to_owned(),
            code: error.code,
        },
    };
    record(&shared, summary, recorded);
    Ok(response)
}

fn record(shared: &EntraShared, summary: TokenRequest, outcome: TokenOutcome) {
    tracing::debug!(tenant = %summary.tenant, client_id = ?summary.client_id, ?outcome, "token request");
    shared.record(TokenRequestRecord {
        at: SystemTime::now(),
        tenant: summary.tenant,
        client_id: summary.client_id,
        scope: summary.scope,
        credential: summary.credential,
        outcome,
    });
}

struct IssuedToken {
    access_token: String,
    resource: Resource,
    expires_in: u64,
    roles: Vec<String>,
}

impl IssuedToken {
    fn response(&self, correlation_id: &str) -> HttpResponse {
        let body = json!({
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "ext_expires_in": self.expires_in,
            "access_token": self.access_token,
        });
        json_response(StatusCode::OK, &body, correlation_id)
    }
}

/// The client-credentials checks, in the order documented in `entra`.
async fn process(
    shared: &EntraShared,
    request: Request<Incoming>,
    tenant: &str,
    summary: &mut TokenRequest,
) -> Result<IssuedToken, EntraError> {
    if request.method() != Method::POST {
        return Err(EntraError::only_post(request.method().as_str()));
    }
    if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str()) {
        return Err(EntraError::tenant_independent_endpoint());
    }
    let directory = &shared.directory;
    if !directory.resolves_tenant(tenant) {
        return Err(EntraError::tenant_not_found(tenant));
    }
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let basic = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(basic_credentials);
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let pairs = if is_form {
        parse_form(&body)
    } else {
        Vec::new()
    };

    let grant_type = form_value(&pairs, "grant_type")
        .ok_or_else(|| EntraError::missing_parameter("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraError::unsupported_grant_type(grant_type));
    }
    let client_id = form_value(&pairs, "client_id")
        .map(str::to_owned)
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    summary.client_id = Some(client_id.clone());
    let Some(app) = directory.app(&client_id) else {
        return Err(EntraError::app_not_found(
            &client_id,
            &directory.tenant_display_name(),
        ));
    };
    let secret = form_value(&pairs, "client_secret")
        .map(str::to_owned)
        .or_else(|| basic.map(|(_, secret)| secret));
    let assertion = form_value(&pairs, "client_assertion");
    let credential = match (&secret, assertion) {
        (_, Some(_)) => CredentialKind::Certificate,
        (Some(_), None) => CredentialKind::Secret,
        (None, None) => return Err(EntraError::no_credential()),
    };
    summary.credential = Some(credential);
    let scope =
        form_value(&pairs, "scope").ok_or_else(|| EntraError::missing_parameter("scope"))?;
    summary.scope = Some(scope.to_owned());
    let resource = parse_scope(scope).map_err(|error| match error {
        ScopeError::Missing => EntraError::missing_parameter("scope"),
        ScopeError::NotDefault(_) => EntraError::scope_not_default(scope),
        ScopeError::UnknownResource(resource) => {
            EntraError::resource_not_found(&resource, &directory.tenant_display_name())
        }
        ScopeError::MixedResources(_) => EntraError::incompatible_scopes(scope),
    })?;
    let now = SystemTime::now();
    match (credential, assertion, secret) {
        (CredentialKind::Certificate, Some(assertion), _) => {
            let context = AssertionContext {
                directory,
                app: &app,
                host: host.as_deref(),
                tenant,
                now,
            };
            let assertion_type = form_value(&pairs, "client_assertion_type");
            check_client_assertion(&context, assertion_type, assertion)?;
        }
        (_, _, Some(secret)) => {
            let matching = app.secrets.iter().find(|s| s.value == secret);
            match matching {
                None => return Err(EntraError::invalid_secret(&app.client_id)),
                Some(s) if s.is_expired(now) => {
                    return Err(EntraError::expired_secret(&app.client_id));
                }
                Some(_) => {}
            }
        }
        _ => return Err(EntraError::no_credential()),
    }
    let lifetime = shared.token_lifetime();
    let claims = directory
        .access_token_claims(&app.client_id, resource, lifetime, credential, now)
        .map_err(|_| EntraError::app_not_found(&client_id, &directory.tenant_display_name()))?;
    let roles = claims.roles.clone().unwrap_or_default();
    let access_token = directory
        .token_signer()
        .sign(&claims)
        .map_err(|_| EntraError::temporarily_unavailable())?;
    Ok(IssuedToken {
        access_token,
        resource,
        expires_in: lifetime.as_secs(),
        roles,
    })
}

/// `Authorization: Basic base64(urlencode(client_id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let (id, secret) = decoded.split_at(colon);
    Some((
        percent_decode(id),
        percent_decode(secret.get(1..).unwrap_or_default()),
    ))
}

/// `Some(tenant)` for `/{tenant}/oauth2/v2.0/token`.
fn token_path_tenant(path: &str) -> Option<String> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let tenant = segments.next()?;
    let rest: Vec<&str> = segments.collect();
    (!tenant.is_empty() && rest == ["oauth2", "v2.0", "token"]).then(|| tenant.to_owned())
}

fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    correlation_id: &str,
) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(correlation_id) {
        headers.insert("client-request-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&new_guid()) {
        headers.insert("x-ms-request-id", value);
    }
    response
}

fn error_response(error: &EntraError, correlation_id: &str) -> HttpResponse {
    let trace_id = new_guid();
    let body = error.body(&trace_id, correlation_id, SystemTime::now());
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &body, correlation_id);
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-ms-request-id", value);
    }
    response
}

fn plain_server_error() -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Internal Server Error")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn not_found(path: &str) -> HttpResponse {
    let body = json!({
        "error": "not_found",
        "error_description": format!("The path '{path}' does not exist on this endpoint."),
    });
    let mut response = json_response(StatusCode::NOT_FOUND, &body, &new_guid());
    response.headers_mut().remove("client-request-id");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_paths_are_recognised() {
        assert_eq!(
            token_path_tenant("/contoso.onmicrosoft.com/oauth2/v2.0/token").as_deref(),
            Some("contoso.onmicrosoft.com")
        );
        assert_eq!(token_path_tenant("/common/oauth2/token"), None);
        assert_eq!(token_path_tenant("//oauth2/v2.0/token"), None);
        assert_eq!(token_path_tenant("/x/oauth2/v2.0/token/extra"), None);
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let value =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("app:a%2Bb%3Ac"))).unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("app".to_owned(), "a+b:c".to_owned()))
        );
    }
}
