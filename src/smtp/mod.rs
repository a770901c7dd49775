//! SMTP on the inbound side: the pure protocol layer ([`proto`]) and the server that drives it
//! over sockets ([`server`]).

pub mod proto;
pub mod server;
