//! Microsoft Entra, the first identity provider behind the provider seam
//! (`super::token::TokenProvider`): the OAuth 2.0 client-credentials grant of an app
//! registration, proven with a client secret or a certificate (`certificate`, `assertion`:
//! `private_key_jwt`), and the explanation of Entra's refusals (`aadsts`).
//!
//! Invariant: the client secret and the signed assertion go into the request body only; an
//! error names what failed (Entra's decoded AADSTS answer, or the failure below HTTP), never
//! the request.

pub mod aadsts;
pub mod assertion;
pub mod certificate;

use std::time::SystemTime;

use super::app::{ClientApp, ClientCredential};
use super::token::{IssuedToken, TokenError};
use crate::vocab::secret::Secret;
use aadsts::EntraRefusal;

/// One app registration's client-credentials grant.
#[derive(Debug)]
pub(super) struct ClientCredentialsGrant {
    endpoint: String,
    client_id: String,
    tenant_id: String,
    scope: String,
    credential: ClientCredential,
}

impl ClientCredentialsGrant {
    pub(super) fn new(app: &ClientApp) -> ClientCredentialsGrant {
        ClientCredentialsGrant {
            endpoint: app.token_endpoint.clone(),
            client_id: app.client_id.clone(),
            tenant_id: app.tenant_id.clone(),
            scope: app.scope.clone(),
            credential: app.credential.clone(),
        }
    }

    /// The token URL (`{authority}/{tenant}/oauth2/v2.0/token`).
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Why Exchange may have refused `token` for `mailbox`, read from the token's claims
    /// (audience, roles, tenant, app); `None` when the token is not a readable JWT.
    pub(super) fn refusal_diagnosis(&self, token: &str, mailbox: &str) -> Option<String> {
        let claims = super::claims::decode(token)?;
        Some(super::claims::refusal_diagnosis(
            &claims,
            &self.client_id,
            &self.tenant_id,
            &self.scope,
            mailbox,
        ))
    }

    /// One token request: the client secret, or a freshly signed client assertion.
    ///
    /// # Errors
    /// [`TokenError`]: Entra's refusal (decoded), an unreachable endpoint, an answer that is no
    /// token, or an assertion that could not be signed.
    pub(super) async fn request(&self, http: &reqwest::Client) -> Result<IssuedToken, TokenError> {
        let (key, value) = match &self.credential {
            ClientCredential::Secret(secret) => ("client_secret", Secret::new(secret.expose())),
            ClientCredential::Certificate {
                certificate,
                algorithm,
            } => {
                let assertion = certificate
                    .client_assertion(
                        *algorithm,
                        &self.client_id,
                        &self.endpoint,
                        SystemTime::now(),
                    )
                    .map_err(|e| TokenError::Credential(e.to_string()))?;
                ("client_assertion", Secret::new(assertion))
            }
            ClientCredential::ServiceAccount { .. } => {
                return Err(TokenError::Credential(
                    "a Google service account key cannot sign in to Entra".to_owned(),
                ));
            }
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            (key, value.expose()),
        ];
        if key == "client_assertion" {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let (status, body) = super::http::post_form(http, &self.endpoint, &form).await?;
        if status != 200 {
            return Err(TokenError::Refused(EntraRefusal::from_response(
                status, &body,
            )));
        }
        super::http::issued_token(&body).map_err(TokenError::BadAnswer)
    }
}
