//! switchboard-testkit
