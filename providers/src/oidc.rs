//! OpenID Connect sign-in (openidconnect 4.1): discovery, the authorization-code request with
//! PKCE (S256), state and nonce, the code exchange, and the ID token check.
//!
//! The ID token check ([`IdTokenVerifier`](openidconnect::IdTokenVerifier)) covers the
//! signature (keys from the provider's JWKS, `alg` from its discovery document, never `none`),
//! `iss` (exactly the configured issuer), `aud` (our client id, and nothing else), `exp` and
//! `nonce` (OpenID Connect Core 1.0 §3.1.3.7).

use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};

/// Seconds allowed for one call to the provider.
pub const OIDC_TIMEOUT_SECS: u64 = 10;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered provider, ready to sign users in.
#[derive(Clone, Debug)]
pub struct OidcProvider {
    client: Client,
    http: reqwest::Client,
}

/// Why an OIDC step failed. The messages are for logs and the error page.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the provider's discovery document could not be used: {0}")]
    Discovery(String),
    #[error("the provider refused the code: {0}")]
    Token(String),
    #[error("the provider sent no ID token")]
    NoIdToken,
    #[error("the ID token was rejected: {0}")]
    Claims(String),
    #[error("{0}")]
    Config(String),
}

/// What the browser must be sent to, and what must be kept (bound to that browser) to finish.
pub struct Authorization {
    /// The provider's authorization URL.
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The user the provider vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `iss`, as configured.
    pub issuer: String,
    /// `sub`: with `issuer`, the stable name of the user.
    pub subject: String,
    pub email: Option<String>,
    /// `email_verified`; absent counts as not verified.
    pub email_verified: bool,
}

impl OidcProvider {
    /// Fetches `{issuer}/.well-known/openid-configuration` and the JWKS. The discovered
    /// `issuer` must equal `issuer` exactly.
    ///
    /// # Errors
    /// [`OidcError::Discovery`] when the provider cannot be reached or its documents are
    /// invalid; [`OidcError::Config`] for a malformed URL.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        client_secret: &SecretString,
        redirect_url: &str,
    ) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            // Following redirects would let a provider point us anywhere (openidconnect docs).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(OIDC_TIMEOUT_SECS))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let issuer_url =
            IssuerUrl::new(issuer.to_string()).map_err(|e| OidcError::Config(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client_id.to_string()),
            Some(ClientSecret::new(client_secret.expose_secret().to_string())),
        )
        .set_redirect_uri(
            RedirectUrl::new(redirect_url.to_string())
                .map_err(|e| OidcError::Config(e.to_string()))?,
        );
        Ok(Self { client, http })
    }

    /// A fresh authorization request: code flow, scopes `openid email`, PKCE S256, random
    /// state and nonce.
    pub fn authorize(&self) -> Authorization {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .url();
        Authorization {
            url: url.to_string(),
            state: state.into_secret(),
            nonce: nonce.into_secret(),
            pkce_verifier: verifier.into_secret(),
        }
    }

    /// Exchanges `code` (with the PKCE verifier) and checks the ID token against `nonce`.
    ///
    /// # Errors
    /// [`OidcError::Token`] when the provider refuses the exchange; [`OidcError::Claims`] when
    /// the ID token fails any check (signature, iss, aud, exp, nonce).
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Token(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?;
        let claims = id_token
            .claims(
                &self.client.id_token_verifier(),
                &Nonce::new(nonce.to_string()),
            )
            .map_err(|e| OidcError::Claims(error_chain(&e)))?;
        Ok(Identity {
            issuer: claims.issuer().as_str().to_string(),
            subject: claims.subject().as_str().to_string(),
            email: claims.email().map(|e| e.as_str().to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
        })
    }
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
