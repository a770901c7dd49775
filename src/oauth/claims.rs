//! Reading an access token's claims, only to explain failures (exchange-online.md §2).
//!
//! Microsoft says clients must not depend on the format of its access tokens, so nothing in
//! delivery uses this: `check` decodes the payload without verifying it, prints the claims that
//! matter, and says which admin setting a wrong value points to. A token that does not decode
//! is not an error here. The token itself is never printed.

use base64::Engine;
use serde_json::Value;

/// The application id of Exchange Online (a v1 token's `aud` may be it).
pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// The application id of Microsoft Graph.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The claims `check` looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct TokenClaims {
    pub aud: Option<String>,
    pub roles: Vec<String>,
    pub tid: Option<String>,
    /// `appid` (v1) or `azp` (v2).
    pub app_id: Option<String>,
    pub oid: Option<String>,
    /// `1` secret, `2` certificate.
    pub credential_kind: Option<String>,
    pub exp: Option<u64>,
}

/// Decode the payload of a JWS token; `None` when it is not one (encrypted or another format).
pub fn decode(token: &str) -> Option<TokenClaims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    Some(TokenClaims {
        aud: text("aud"),
        roles: value
            .get("roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        tid: text("tid"),
        app_id: text("appid").or_else(|| text("azp")),
        oid: text("oid"),
        credential_kind: text("appidacr").or_else(|| text("azpacr")),
        exp: value.get("exp").and_then(Value::as_u64),
    })
}

/// One verdict on the claims.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClaimProblem {
    pub what: String,
    pub fix: String,
}

/// What is wrong with `claims` for sending as `client_id` in `tenant_id` with `scope`.
pub fn problems(
    claims: &TokenClaims,
    client_id: &str,
    tenant_id: &str,
    scope: &str,
) -> Vec<ClaimProblem> {
    let mut problems = Vec::new();
    let resource = scope.trim_end_matches("/.default").trim_end_matches('/');
    match claims.aud.as_deref() {
        Some(aud) if is_exchange_audience(aud) => {}
        Some(aud) if aud.contains("graph.microsoft") || aud == GRAPH_APP_ID => {
            problems.push(ClaimProblem {
                what: format!("the token is for Microsoft Graph (aud {aud}), not Exchange Online"),
                fix:
                    "set scope to https://outlook.office365.com/.default (or remove the scope key)"
                        .into(),
            })
        }
        Some(aud) => problems.push(ClaimProblem {
            what: format!("the token's audience is {aud}, not Exchange Online (scope {resource})"),
            fix: "set scope to the Exchange Online resource of your cloud, ending in /.default"
                .into(),
        }),
        None => problems.push(ClaimProblem {
            what: "the token has no audience (aud) claim".into(),
            fix: "check authority and scope".into(),
        }),
    }
    if !claims.roles.iter().any(|r| r == "SMTP.SendAsApp") {
        let found = if claims.roles.is_empty() {
            "no roles".to_string()
        } else {
            format!("roles {}", claims.roles.join(", "))
        };
        problems.push(ClaimProblem {
            what: format!("the token carries {found}, not SMTP.SendAsApp"),
            fix: "Entra admin center → App registrations → the app → API permissions → Add a permission → APIs my organization uses → Office 365 Exchange Online → Application permissions → SMTP.SendAsApp, then Grant admin consent (with Exchange RBAC for Applications instead, no role is expected)".into(),
        });
    }
    if let Some(tid) = &claims.tid
        && looks_like_guid(tenant_id)
        && !tid.eq_ignore_ascii_case(tenant_id)
    {
        problems.push(ClaimProblem {
            what: format!("the token is from tenant {tid}, the config says {tenant_id}"),
            fix: "set tenant_id to the Directory (tenant) ID of the tenant that holds the mailbox"
                .into(),
        });
    }
    if let Some(app_id) = &claims.app_id
        && !app_id.eq_ignore_ascii_case(client_id)
    {
        problems.push(ClaimProblem {
            what: format!("the token is for application {app_id}, the config says {client_id}"),
            fix: "set client_id to the Application (client) ID of the app registration".into(),
        });
    }
    problems
}

/// Why Exchange may have refused a token (`535 5.7.3`), in one line for the delivery log: what
/// is wrong with the token if anything, else the Exchange-side steps with this app's object id
/// filled in. Claims are identifiers, not secrets; the token itself is never included.
pub fn refusal_diagnosis(
    claims: &TokenClaims,
    client_id: &str,
    tenant_id: &str,
    scope: &str,
    mailbox: &str,
) -> String {
    let problems = problems(claims, client_id, tenant_id, scope);
    if problems.is_empty() {
        let oid = claims
            .oid
            .as_deref()
            .unwrap_or("<Enterprise application object id>");
        return format!(
            "the token itself is right (audience Exchange Online, role SMTP.SendAsApp), so Exchange does not know the app or it may not use the mailbox: New-ServicePrincipal -AppId {client_id} -ObjectId {oid}; Add-MailboxPermission -Identity {mailbox} -User {oid} -AccessRights FullAccess; then wait up to an hour"
        );
    }
    problems
        .iter()
        .map(|p| format!("{}: {}", p.what, p.fix))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Exchange Online's resource in any cloud (`outlook.office365.com`, `outlook.office365.us`,
/// `outlook-dod.office365.us`, `partner.outlook.cn`), or its application id.
fn is_exchange_audience(aud: &str) -> bool {
    if aud.eq_ignore_ascii_case(EXCHANGE_APP_ID) {
        return true;
    }
    let host = aud
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    [
        "outlook.office365.com",
        "outlook.office365.us",
        "outlook-dod.office365.us",
        "partner.outlook.cn",
    ]
    .contains(&host.as_str())
}

fn looks_like_guid(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|&c| c == '-').count() == 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
    const TENANT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    const SCOPE: &str = "https://outlook.office365.com/.default";

    fn token(claims: &serde_json::Value) -> String {
        let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            encode(br#"{"alg":"RS256"}"#),
            encode(claims.to_string().as_bytes())
        )
    }

    fn good() -> serde_json::Value {
        serde_json::json!({"aud":"https://outlook.office365.com","roles":["SMTP.SendAsApp"],"tid":TENANT,"appid":CLIENT,"oid":"o","appidacr":"1","exp":1})
    }

    #[test]
    fn a_refusal_is_explained_from_the_token() {
        let mailbox = "relay@contoso.com";
        let right = decode(&token(&good())).unwrap();
        let line = refusal_diagnosis(&right, CLIENT, TENANT, SCOPE, mailbox);
        assert!(
            line.contains(&format!("New-ServicePrincipal -AppId {CLIENT} -ObjectId o")),
            "{line}"
        );
        assert!(
            line.contains("Add-MailboxPermission -Identity relay@contoso.com -User o"),
            "{line}"
        );
        let mut no_role = good();
        no_role["roles"] = serde_json::json!([]);
        let line = refusal_diagnosis(
            &decode(&token(&no_role)).unwrap(),
            CLIENT,
            TENANT,
            SCOPE,
            mailbox,
        );
        assert!(
            line.contains("not SMTP.SendAsApp") && line.contains("admin consent"),
            "{line}"
        );
        assert!(!line.contains("New-ServicePrincipal"), "{line}");
    }

    #[test]
    fn a_good_token_has_no_problems() {
        let claims = decode(&token(&good())).unwrap();
        assert_eq!(claims.roles, vec!["SMTP.SendAsApp".to_string()]);
        assert_eq!(claims.credential_kind.as_deref(), Some("1"));
        assert!(problems(&claims, CLIENT, TENANT, SCOPE).is_empty());
        for aud in [
            EXCHANGE_APP_ID,
            "https://outlook.office365.us",
            "https://outlook.office365.com/",
        ] {
            let mut other = good();
            other["aud"] = serde_json::json!(aud);
            assert!(
                problems(&decode(&token(&other)).unwrap(), CLIENT, TENANT, SCOPE).is_empty(),
                "{aud}"
            );
        }
        // A Graph token is wrong even when the config asked for Graph.
        let mut graph = good();
        graph["aud"] = serde_json::json!("https://graph.microsoft.com");
        let found = problems(
            &decode(&token(&graph)).unwrap(),
            CLIENT,
            TENANT,
            "https://graph.microsoft.com/.default",
        );
        assert!(found[0].what.contains("Microsoft Graph"), "{found:?}");
    }

    #[test]
    fn each_misconfiguration_is_named() {
        let cases: [(&str, serde_json::Value, &str); 4] = [
            (
                "aud",
                serde_json::json!("https://graph.microsoft.com"),
                "Microsoft Graph",
            ),
            ("roles", serde_json::json!([]), "SMTP.SendAsApp"),
            (
                "tid",
                serde_json::json!("ffffffff-bbbb-cccc-dddd-eeeeeeeeeeee"),
                "tenant",
            ),
            (
                "appid",
                serde_json::json!("99999999-2222-3333-4444-555555555555"),
                "application",
            ),
        ];
        for (claim, value, expected) in cases {
            let mut claims = good();
            claims[claim] = value;
            let found = problems(&decode(&token(&claims)).unwrap(), CLIENT, TENANT, SCOPE);
            assert_eq!(found.len(), 1, "{claim}: {found:?}");
            assert!(found[0].what.contains(expected), "{claim}: {found:?}");
            assert!(!found[0].fix.is_empty());
        }
        let mut no_roles = good();
        no_roles.as_object_mut().unwrap().remove("roles");
        assert!(
            problems(&decode(&token(&no_roles)).unwrap(), CLIENT, TENANT, SCOPE)[0]
                .what
                .contains("no roles")
        );
    }

    #[test]
    fn opaque_tokens_are_not_an_error() {
        assert_eq!(decode("not-a-jwt"), None);
        assert_eq!(decode("a.!!!.c"), None);
        assert_eq!(decode(""), None);
    }
}
