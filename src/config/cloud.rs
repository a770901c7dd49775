//! The Microsoft clouds (`cloud = "…"`): for each, the Entra authority, the token scope and
//! the SMTP server of Exchange Online, and the Microsoft Graph root (`transport = "graph"`).
//!
//! Invariants: constants only; every preset's scope ends with `/.default`, and a Graph
//! account's scope is its `graph_endpoint` with `/.default`.

/// Default Entra authority (worldwide cloud).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default token scope for SMTP submission to Exchange Online.
pub const DEFAULT_SCOPE: &str = "https://outlook.office365.com/.default";
/// Default SMTP submission endpoint.
pub const DEFAULT_SMTP_SERVER: &str = "smtp.office365.com:587";
/// Default Microsoft Graph root (worldwide cloud), for `transport = "graph"`.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";
/// The endpoints of one Microsoft cloud (exchange-online.md §1.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudPreset {
    pub name: &'static str,
    pub authority: &'static str,
    pub scope: &'static str,
    pub smtp_server: &'static str,
    /// The Microsoft Graph root of the cloud (graph.md §1, national clouds); a Graph
    /// account's token scope is this root with `/.default`.
    pub graph_endpoint: &'static str,
}

/// `cloud = "…"` presets. DoD and China values are the best known ones (not confirmed in
/// Microsoft's documentation); explicit `authority`, `scope` and `smtp_server` override them.
pub const CLOUDS: [CloudPreset; 4] = [
    CloudPreset {
        name: "global",
        authority: DEFAULT_AUTHORITY,
        scope: DEFAULT_SCOPE,
        smtp_server: DEFAULT_SMTP_SERVER,
        graph_endpoint: DEFAULT_GRAPH_ENDPOINT,
    },
    CloudPreset {
        name: "usgov-gcchigh",
        authority: "https://login.microsoftonline.us",
        scope: "https://outlook.office365.us/.default",
        smtp_server: "smtp.office365.us:587",
        graph_endpoint: "https://graph.microsoft.us",
    },
    CloudPreset {
        name: "usgov-dod",
        authority: "https://login.microsoftonline.us",
        scope: "https://outlook-dod.office365.us/.default",
        smtp_server: "outlook-dod.office365.us:587",
        graph_endpoint: "https://dod-graph.microsoft.us",
    },
    CloudPreset {
        name: "china",
        authority: "https://login.partner.microsoftonline.cn",
        scope: "https://partner.outlook.cn/.default",
        smtp_server: "smtp.partner.outlook.cn:587",
        graph_endpoint: "https://microsoftgraph.chinacloudapi.cn",
    },
];
