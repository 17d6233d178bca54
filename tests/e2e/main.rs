//! End-to-end tests through the real endpoint, workers and a SQLite file, with Twilio's API
//! faked at the HTTP boundary (a loopback wiremock server).

mod accounts;
mod agency;
mod api;
mod compliance;
mod fixtures;
mod isolation;
mod mail;
mod oidc;
mod operations;
mod pages;
mod pipeline;
mod sending;
mod settings;
mod webhooks;
