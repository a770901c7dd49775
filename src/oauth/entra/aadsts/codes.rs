//! The AADSTS table: one row per Microsoft Entra error code the relay can meet when it asks for a
//! client-credentials token, paraphrased from `exchange-online.md` §1.6 (itself from Microsoft's
//! "AADSTS error codes" reference).
//!
//! Invariants: every row has a non-empty `meaning` and `fix`; codes are unique; a code is marked
//! [`TokenRetry::Backoff`] only when the doc says it clears by itself (throttling, loop detection,
//! transient STS errors). Everything else is a configuration fault that an admin must fix.
//! Meanings are lowercase fragments so they read well after "AADSTSnnnn error —"; neither column
//! ends with a period (the caller adds punctuation).

use super::{AadstsExplanation, TokenRetry};

/// Shorthand for a configuration-fault row.
const fn never(code: u32, meaning: &'static str, fix: &'static str) -> AadstsExplanation {
    AadstsExplanation {
        code,
        meaning,
        fix,
        retry: TokenRetry::Never,
    }
}

/// Shorthand for a row that clears by itself.
const fn backoff(code: u32, meaning: &'static str, fix: &'static str) -> AadstsExplanation {
    AadstsExplanation {
        code,
        meaning,
        fix,
        retry: TokenRetry::Backoff,
    }
}

/// Fix text shared by the transient STS errors.
const TRANSIENT_FIX: &str = "none needed: the relay retries with back-off; if it lasts, check \
     Microsoft 365 service health and quote trace_id and correlation_id to Microsoft support";

/// Fix text shared by the scope errors.
const SCOPE_FIX: &str = "set scope to exactly https://outlook.office365.com/.default (one \
     resource, with the /.default suffix), or remove the scope key to use that default; sovereign \
     clouds use their own Exchange host, e.g. https://outlook.office365.us/.default for GCC High";

/// Fix text shared by the consent errors.
const CONSENT_FIX: &str = "in Entra admin center → App registrations → <app> → API permissions, \
     add Office 365 Exchange Online → Application permissions → SMTP.SendAsApp and click \"Grant \
     admin consent\"; for an app registered in another tenant, consent it into the mailbox's \
     tenant";

/// Fix text shared by the clock and assertion-time errors.
const CLOCK_FIX: &str = "synchronise the relay host's clock with NTP (the signed assertion is \
     valid for a few minutes only), and check that client_certificate is the certificate uploaded \
     to the app";

/// Every AADSTS code the relay explains, in the order of §1.6.
pub(super) static EXPLANATIONS: &[AadstsExplanation] = &[
    never(
        7000215,
        "the client secret is wrong (most often the secret's ID was pasted instead of its Value)",
        "create a new client secret in Entra admin center → App registrations → <app> → \
         Certificates & secrets and copy the Value column (not the Secret ID) into client_secret \
         (or the file or environment variable named by client_secret_file / client_secret_env)",
    ),
    never(
        7000222,
        "the client secret has expired",
        "create a new client secret in Entra admin center → App registrations → <app> → \
         Certificates & secrets, put its Value into client_secret, and note its expiry date \
         (secrets last 24 months at most)",
    ),
    never(
        7000218,
        "the request carried neither a client secret nor a client assertion",
        "configure exactly one credential for the account: client_secret, client_secret_file, \
         client_secret_env or client_certificate; an empty secret file or an unset environment \
         variable also causes this",
    ),
    never(
        700016,
        "no application with this client ID exists in the tenant: the client ID is wrong, or the \
         app is registered in another tenant",
        "copy the Application (client) ID from Entra admin center → App registrations → <app> → \
         Overview into client_id, and the Directory (tenant) ID from the same page into tenant_id; \
         a multi-tenant app must first be consented into the mailbox's tenant",
    ),
    never(
        90002,
        "the tenant was not found: tenant_id is misspelled, or the authority host belongs to a \
         different cloud than the tenant",
        "set tenant_id to the Directory (tenant) ID GUID from Entra admin center → Overview (or a \
         verified domain), and authority to the tenant's cloud (https://login.microsoftonline.com \
         worldwide, https://login.microsoftonline.us for GCC High and DoD)",
    ),
    never(
        900023,
        "the tenant identifier is neither a valid GUID nor a domain name",
        "set tenant_id to the Directory (tenant) ID GUID from Entra admin center → Overview, or to \
         a verified domain such as contoso.onmicrosoft.com",
    ),
    never(
        90038,
        "the tenant belongs to a different national cloud than the authority host",
        "set authority to the tenant's cloud (https://login.microsoftonline.us for GCC High and \
         DoD, https://login.partner.microsoftonline.cn for 21Vianet) and set scope and smtp_server \
         to that cloud's Exchange hosts",
    ),
    never(
        500011,
        "the resource named in the scope does not exist in the tenant: the scope names the wrong \
         API (for example Microsoft Graph) or Exchange Online is not provisioned",
        SCOPE_FIX,
    ),
    never(70011, "the scope value is invalid", SCOPE_FIX),
    never(
        700022,
        "the scope names several resources; a client-credentials token is for exactly one",
        SCOPE_FIX,
    ),
    never(
        700023,
        "the scope names no resource (a resourceless scope)",
        SCOPE_FIX,
    ),
    never(
        1002012,
        "the scope lacks the /.default suffix that client-credentials requests require (code \
         unconfirmed)",
        SCOPE_FIX,
    ),
    never(
        700027,
        "the client assertion failed signature validation, or the certificate that signed it is \
         not registered on the app",
        "upload the certificate from client_certificate in Entra admin center → App registrations \
         → <app> → Certificates & secrets → Certificates; if it is already there, the assertion's \
         thumbprint header or signing algorithm does not match it (x5t#S256 with PS256 by default; \
         try client_assertion_algorithm = \"rs256\")",
    ),
    never(
        50012,
        "authentication failed: the client assertion's signature is bad or the certificate is not \
         valid (expired, not yet valid, or not the one registered)",
        "check that client_certificate holds the certificate and private key uploaded to the app \
         (Entra admin center → App registrations → <app> → Certificates & secrets) and that the \
         certificate has not expired",
    ),
    never(
        50013,
        "the client assertion is invalid or not within its valid time range",
        CLOCK_FIX,
    ),
    never(
        500133,
        "the assertion is not within its valid time range (clock skew or an expired assertion)",
        CLOCK_FIX,
    ),
    never(
        50027,
        "the client assertion JWT is invalid: unexpected aud or iss, bad time range, or malformed",
        "the assertion's aud is the token URL built from authority and tenant_id and its iss/sub \
         is client_id: check those three keys and the relay host's clock (NTP)",
    ),
    never(
        7000112,
        "the application is disabled in the tenant",
        "enable it: Entra admin center → Enterprise applications → <app> → Properties → \"Enabled \
         for users to sign-in?\" = Yes",
    ),
    never(
        70001,
        "the application is disabled or not found in the tenant",
        "check in Entra admin center → Enterprise applications that <app> exists in the mailbox's \
         tenant and is enabled (Properties → \"Enabled for users to sign-in?\" = Yes), and that \
         client_id and tenant_id are right",
    ),
    never(
        53003,
        "Conditional Access blocked the token request (a workload-identity policy can block \
         service principals)",
        "in Entra admin center → Conditional Access, exclude this app's service principal from the \
         blocking policy or allow the relay's public IP address; the service-principal sign-in \
         logs name the policy",
    ),
    never(
        65001,
        "consent for the app is missing (for app-only tokens missing admin consent usually shows \
         up later as SMTP 535 5.7.3 instead)",
        CONSENT_FIX,
    ),
    never(90094, "admin consent is required for the app", CONSENT_FIX),
    backoff(
        50196,
        "loop detected: the relay sent too many identical token requests in a short time",
        "none needed: the relay backs off and caches tokens; if it recurs, another program is \
         requesting tokens with the same client_id in a loop",
    ),
    backoff(
        90055,
        "Entra is throttling requests for this tenant or app",
        "none needed: the relay backs off; if it recurs, look for other software using this \
         client_id heavily",
    ),
    backoff(
        50000,
        "the Entra sign-in service had an internal error",
        TRANSIENT_FIX,
    ),
    backoff(
        50033,
        "a transient error between Entra's own servers",
        TRANSIENT_FIX,
    ),
    backoff(
        90006,
        "an Entra back-end service is temporarily unavailable",
        TRANSIENT_FIX,
    ),
    backoff(
        90024,
        "Entra's request budget was exceeded (transient)",
        TRANSIENT_FIX,
    ),
    backoff(
        90033,
        "Entra's directory service is temporarily unavailable",
        TRANSIENT_FIX,
    ),
    backoff(90090, "a transient Entra (STS) error", TRANSIENT_FIX),
    never(
        9001023,
        "client-credentials tokens cannot be requested from the /common or /consumers endpoint",
        "set tenant_id to the tenant's GUID or verified domain (not common, organizations or \
         consumers) and make sure authority is only the host, e.g. \
         https://login.microsoftonline.com",
    ),
    never(
        70003,
        "the grant type is not supported by this app or endpoint",
        "the relay always asks for grant_type=client_credentials, so authority probably points at \
         the wrong server: set it to the Entra host of the tenant's cloud, e.g. \
         https://login.microsoftonline.com",
    ),
    never(
        700024,
        "the client assertion is not within its valid time range (code unconfirmed)",
        CLOCK_FIX,
    ),
];
