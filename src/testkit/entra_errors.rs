//! The AADSTS error catalogue of the fake token endpoint and the JSON error body Entra sends
//! (exchange-online.md §1.5, §1.6): `error`, `error_description` (`AADSTSnnnn: text` followed
//! by `Trace ID`, `Correlation ID` and `Timestamp` lines joined by `\r\n`), `error_codes`,
//! `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
//!
//! Invariant: this file is the only place that knows HTTP status, OAuth `error` class and
//! AADSTS number of each rejection; the request handler only picks a constructor. Texts are
//! paraphrases of Entra's; relays must branch on `error` and `error_codes[0]`, never on text.

use std::time::SystemTime;

use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

/// One rejection of a token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntraError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
}

impl EntraError {
    fn new(status: u16, error: &'static str, code: u32, message: String) -> EntraError {
        EntraError {
            status,
            error,
            code,
            message,
        }
    }

    pub fn only_post(method: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            900_561,
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        )
    }

    pub fn tenant_not_found(tenant: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    pub fn tenant_independent_endpoint() -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            9_001_023,
            "The grant type is not supported over the /common or /consumers endpoints. Please \
             use the /organizations or tenant-specific endpoint."
                .to_owned(),
        )
    }

    pub fn missing_parameter(name: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            900_144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn unsupported_grant_type(grant_type: &str) -> EntraError {
        EntraError::new(
            400,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
    }

    pub fn app_not_found(client_id: &str, tenant_name: &str) -> EntraError {
        EntraError::new(
            400,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant_name}'. This can happen if the application has not been installed by \
                 the administrator of the tenant or consented to by any user in the tenant. You \
                 may have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn no_credential() -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'."
                .to_owned(),
        )
    }

    pub fn invalid_secret(client_id: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            7_000_215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
    }

    pub fn expired_secret(client_id: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            7_000_222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the \
                 Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or \
                 consider using certificate credentials for added security: \
                 https://aka.ms/certCreds."
            ),
        )
    }

    pub fn scope_not_default(scope: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_scope",
            1_002_012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
    }

    pub fn resource_not_found(resource: &str, tenant_name: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant_name}. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You might \
                 have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn incompatible_scopes(scope: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_scope",
            70_011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. One or more \
                 scopes in '{scope}' are not compatible with each other."
            ),
        )
    }

    pub fn assertion_key_not_registered(client_id: &str, thumbprint: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_027,
            format!(
                "The certificate with identifier used to sign the client assertion is not \
                 registered on application. [Reason - The key was not found., Thumbprint of key \
                 used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or \
                 directly use MS Graph to see configured keys for app Id '{client_id}'.]"
            ),
        )
    }

    // ----- certificate credentials (client assertions); codes chosen in `entra_assertion` --

    pub fn unsupported_assertion_type(value: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            50_027,
            format!(
                "Invalid client_assertion_type '{value}'. The only supported value is \
                 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'."
            ),
        )
    }

    pub fn malformed_assertion(reason: &str) -> EntraError {
        EntraError::new(
            400,
            "invalid_request",
            50_027,
            format!("JWT token is invalid or malformed. [Reason - {reason}]"),
        )
    }

    pub fn assertion_key_expired(client_id: &str, thumbprint: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key used is \
                 expired., Thumbprint of key used by client: '{thumbprint}', Please visit the \
                 Azure Portal, Graph Explorer or directly use MS Graph to see configured keys \
                 for app Id '{client_id}'.]"
            ),
        )
    }

    pub fn assertion_unsupported_algorithm(algorithm: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The signing \
                 algorithm '{algorithm}' is not supported; use PS256 or RS256.]"
            ),
        )
    }

    pub fn assertion_bad_signature(client_id: &str, thumbprint: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The provided \
                 signature value did not match the expected signature value., Thumbprint of \
                 key used by client: '{thumbprint}', Please visit the Azure Portal, Graph \
                 Explorer or directly use MS Graph to see configured keys for app Id \
                 '{client_id}'.]"
            ),
        )
    }

    pub fn assertion_audience_mismatch(audience: &str, expected: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            50_012,
            format!(
                "Client assertion audience claim does not match Realm issuer. [Audience in the \
                 assertion: '{audience}'; expected the token endpoint the request was sent to: \
                 '{expected}']"
            ),
        )
    }

    pub fn assertion_issuer_mismatch(issuer: &str, client_id: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_021,
            format!(
                "Client assertion application identifier '{issuer}' doesn't match 'client_id' \
                 parameter '{client_id}'."
            ),
        )
    }

    pub fn assertion_subject_mismatch() -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            50_048,
            "Subject mismatches Issuer claim in the client assertion.".to_owned(),
        )
    }

    pub fn assertion_time_range(detail: &str) -> EntraError {
        EntraError::new(
            401,
            "invalid_client",
            700_024,
            format!("Client assertion is not within its valid time range. {detail}"),
        )
    }

    pub fn temporarily_unavailable() -> EntraError {
        EntraError::new(
            503,
            "temporarily_unavailable",
            90_033,
            "A transient error has occurred. Please try again.".to_owned(),
        )
    }

    /// The JSON body, with fresh trace/correlation ids and the given timestamp.
    pub fn body(&self, trace_id: &str, correlation_id: &str, now: SystemTime) -> serde_json::Value {
        let timestamp = entra_timestamp(now);
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

/// `2026-01-09 02:02:12Z`, the timestamp format of Entra error bodies.
pub(crate) fn entra_timestamp(now: SystemTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    OffsetDateTime::from(now)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01 00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_entra_shape() {
        let body = EntraError::invalid_secret("app").body("t-id", "c-id", SystemTime::UNIX_EPOCH);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"][0], 7_000_215);
        assert_eq!(body["timestamp"], "1970-01-01 00:00:00Z");
        assert_eq!(
            body["error_uri"],
            "https://login.microsoftonline.com/error?code=7000215"
        );
        let description = body["error_description"].as_str().unwrap();
        assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(description.contains("client secret ID"));
        assert!(description.ends_with(
            "\r\nTrace ID: t-id\r\nCorrelation ID: c-id\r\nTimestamp: 1970-01-01 00:00:00Z"
        ));
    }
}
