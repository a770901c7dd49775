//! Token issuance: which resource a client-credentials `scope` names, and the claims Entra
//! puts into an app-only token for an app of the [`Directory`].
//!
//! Invariants:
//! - a scope is accepted only as `<resource>/.default` (several space-separated scopes must
//!   all name the same resource); anything else is a [`ScopeError`] the token endpoint maps
//!   to the AADSTS code Entra uses;
//! - `roles` holds exactly the consented roles of the requested resource and is omitted when
//!   there are none, as Entra does when admin consent is missing;
//! - `iat` and `nbf` are back-dated 5 minutes (clock-skew allowance seen on Entra tokens) and
//!   `exp = now + lifetime`, so `expires_in` in the response matches `exp` to the second.

use std::time::{Duration, SystemTime};

use super::TestkitError;
use super::directory::Directory;
use super::jwt::{Claims, unix_seconds};
use super::random::random_b64url;

/// Exchange Online's resource URI, the audience of SMTP tokens.
pub const EXCHANGE_RESOURCE: &str = "https://outlook.office365.com";
/// Microsoft Graph's resource URI.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// The app-only "wids" role template Entra puts into app tokens.
const APP_TOKEN_WIDS: &str = "0997a1d0-0d1d-4acb-b408-d5ca73121e90";

/// A resource the fake identity platform can issue tokens for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Office 365 Exchange Online (`https://outlook.office365.com/.default`).
    Exchange,
    /// Microsoft Graph (`https://graph.microsoft.com/.default`).
    Graph,
}

impl Resource {
    /// The `aud` claim of tokens for this resource.
    pub fn audience(self) -> &'static str {
        match self {
            Resource::Exchange => EXCHANGE_RESOURCE,
            Resource::Graph => GRAPH_RESOURCE,
        }
    }

    /// The scope a client requests for this resource.
    pub fn default_scope(self) -> String {
        format!("{}/.default", self.audience())
    }

    fn from_identifier(identifier: &str) -> Option<Resource> {
        match identifier
            .trim_end_matches('/')
            .to_ascii_lowercase()
            .as_str()
        {
            "https://outlook.office365.com"
            | "https://outlook.office.com"
            | "00000002-0000-0ff1-ce00-000000000000" => Some(Resource::Exchange),
            "https://graph.microsoft.com" | "00000003-0000-0000-c000-000000000000" => {
                Some(Resource::Graph)
            }
            _ => None,
        }
    }
}

/// Why a client-credentials `scope` parameter was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopeError {
    /// No scope at all.
    Missing,
    /// A scope without the `/.default` suffix (AADSTS1002012).
    NotDefault(String),
    /// The resource is not known in the tenant (AADSTS500011).
    UnknownResource(String),
    /// Several resources in one request (AADSTS70011).
    MixedResources(String),
}

/// Parses a client-credentials `scope` parameter into the one resource it names.
///
/// # Errors
/// A [`ScopeError`] describing the first problem.
pub fn parse_scope(scope: &str) -> Result<Resource, ScopeError> {
    let mut found: Option<Resource> = None;
    for item in scope.split_whitespace() {
        let Some(identifier) = item.strip_suffix("/.default") else {
            return Err(ScopeError::NotDefault(item.to_owned()));
        };
        let resource = Resource::from_identifier(identifier)
            .ok_or_else(|| ScopeError::UnknownResource(identifier.to_owned()))?;
        match found {
            Some(previous) if previous != resource => {
                return Err(ScopeError::MixedResources(scope.to_owned()));
            }
            _ => found = Some(resource),
        }
    }
    found.ok_or(ScopeError::Missing)
}

/// How the client proved its identity (`appidacr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A client secret (`appidacr = "1"`).
    Secret,
    /// A certificate / signed client assertion (`appidacr = "2"`).
    Certificate,
}

impl CredentialKind {
    fn appidacr(self) -> &'static str {
        match self {
            CredentialKind::Secret => "1",
            CredentialKind::Certificate => "2",
        }
    }
}

impl Directory {
    /// Builds the claims Entra would issue at `now` to app `client_id` for `resource`.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn access_token_claims(
        &self,
        client_id: &str,
        resource: Resource,
        lifetime: Duration,
        credential: CredentialKind,
        now: SystemTime,
    ) -> Result<Claims, TestkitError> {
        let app = self
            .app(client_id)
            .ok_or_else(|| TestkitError::UnknownApp(client_id.to_owned()))?;
        let tid = self.tenant_id();
        let issuer = format!("https://sts.windows.net/{tid}/");
        let now_secs = unix_seconds(now);
        let lifetime_secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        let roles = match resource {
            Resource::Exchange => app.exchange_roles.clone(),
            Resource::Graph => app.graph_roles.clone(),
        };
        Ok(Claims {
            aud: resource.audience().to_owned(),
            iss: issuer.clone(),
            iat: now_secs - 300,
            nbf: now_secs - 300,
            exp: now_secs.saturating_add(lifetime_secs),
            aio: Some(format!("E2Ng{}=", random_b64url(90))),
            app_displayname: Some(app.display_name.clone()),
            appid: app.client_id.clone(),
            appidacr: credential.appidacr().to_owned(),
            idp: Some(issuer),
            idtyp: Some("app".to_owned()),
            oid: app.service_principal_object_id.clone(),
            rh: Some(format!("1.AXEA{}.", random_b64url(60))),
            roles: (!roles.is_empty()).then_some(roles),
            sub: app.service_principal_object_id.clone(),
            tid,
            uti: random_b64url(16),
            ver: "1.0".to_owned(),
            wids: vec![APP_TOKEN_WIDS.to_owned()],
            xms_idrel: Some("7 10".to_owned()),
            xms_rd: Some(format!("0.42Lj{}", random_b64url(75))),
            xms_tcdt: Some(self.tenant_created_at()),
        })
    }

    /// Mints a signed access token directly (what a successful token request returns), for
    /// tests that exercise SMTP without going through HTTP.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`], or a signing failure.
    pub fn mint_access_token(
        &self,
        client_id: &str,
        resource: Resource,
        lifetime: Duration,
    ) -> Result<String, TestkitError> {
        let claims = self.access_token_claims(
            client_id,
            resource,
            lifetime,
            CredentialKind::Secret,
            SystemTime::now(),
        )?;
        self.token_signer().sign(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing_follows_entra_rules() {
        assert_eq!(
            parse_scope("https://outlook.office365.com/.default"),
            Ok(Resource::Exchange)
        );
        assert_eq!(
            parse_scope("https://graph.microsoft.com/.default"),
            Ok(Resource::Graph)
        );
        assert!(matches!(
            parse_scope("https://outlook.office365.com/SMTP.Send"),
            Err(ScopeError::NotDefault(_))
        ));
        assert!(matches!(
            parse_scope("https://example.com/.default"),
            Err(ScopeError::UnknownResource(_))
        ));
        assert!(matches!(
            parse_scope(
                "https://outlook.office365.com/.default https://graph.microsoft.com/.default"
            ),
            Err(ScopeError::MixedResources(_))
        ));
        assert_eq!(parse_scope("  "), Err(ScopeError::Missing));
    }

    #[test]
    fn minted_tokens_are_realistic() {
        let dir = Directory::contoso_with_app("app", "s", "relay@contoso.com").unwrap();
        let token = dir
            .mint_access_token("app", Resource::Exchange, Duration::from_secs(3599))
            .unwrap();
        assert!(token.len() > 1024, "token is only {} bytes", token.len());
        let claims = dir
            .token_verifier()
            .verify(&token, SystemTime::now())
            .unwrap();
        assert_eq!(claims.aud, EXCHANGE_RESOURCE);
        assert!(claims.has_role("SMTP.SendAsApp"));
        assert_eq!(claims.exp - claims.iat, 3599 + 300);
        dir.revoke_admin_consent("app").unwrap();
        let token = dir
            .mint_access_token("app", Resource::Exchange, Duration::from_secs(60))
            .unwrap();
        let claims = dir
            .token_verifier()
            .verify(&token, SystemTime::now())
            .unwrap();
        assert_eq!(claims.roles, None);
    }
}
