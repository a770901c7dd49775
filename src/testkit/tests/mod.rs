//! Integration tests of the testkit emulators, driven by independent clients.
