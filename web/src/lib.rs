//! switchboard-web
