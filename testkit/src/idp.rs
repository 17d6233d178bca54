//! [`FakeIdp`]: an OpenID provider at the HTTP boundary (wiremock) whose ID tokens the test
//! writes itself — signed with a test RSA key (`fixtures/oidc-test-key.pem`, test-only) — so a
//! test can send a wrong `iss`, `aud`, `nonce` or `exp` and watch it be refused. The full flow
//! against a real provider (panva's oidc-provider) is `tests/oidc_provider.rs`.

use std::sync::LazyLock;

use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    Audience, EmptyAdditionalClaims, EndUserEmail, IssuerUrl, JsonWebKeyId, Nonce,
    PrivateSigningKey, StandardClaims, SubjectIdentifier,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The client id the harness configures (`OIDC_CLIENT_ID`).
pub const CLIENT_ID: &str = "switchboard-test";
/// The client secret the harness configures (`OIDC_CLIENT_SECRET`).
pub const CLIENT_SECRET: &str = "switchboard-test-secret";

static KEY: LazyLock<CoreRsaPrivateSigningKey> = LazyLock::new(|| {
    CoreRsaPrivateSigningKey::from_pem(
        include_str!("../fixtures/oidc-test-key.pem"),
        Some(JsonWebKeyId::new("oidc-test-key".into())),
    )
    .expect("the fixture is a PKCS#1 RSA key")
});

/// The claims of one ID token; start from [`FakeIdp::claims`] and change what the test needs.
#[derive(Clone, Debug)]
pub struct Claims {
    pub issuer: String,
    pub audience: String,
    pub nonce: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Seconds from now; negative for an expired token.
    pub expires_in: i64,
}

/// A provider on loopback: discovery, JWKS and a token endpoint answering what
/// [`FakeIdp::answer`] mounted.
pub struct FakeIdp {
    pub server: MockServer,
    /// `http://127.0.0.1:{port}` — the discovery document's `issuer`.
    pub issuer: String,
}

impl FakeIdp {
    /// Starts the provider with its discovery document and keys.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let idp = Self {
            issuer: server.uri(),
            server,
        };
        idp.mount_documents().await;
        idp
    }

    /// The settings that point Switchboard at this provider.
    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("OIDC_ISSUER_URL".into(), self.issuer.clone()),
            ("OIDC_CLIENT_ID".into(), CLIENT_ID.into()),
            ("OIDC_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ]
    }

    /// Valid claims for `nonce` and user `subject` with a verified `email`.
    pub fn claims(&self, nonce: &str, subject: &str, email: &str) -> Claims {
        Claims {
            issuer: self.issuer.clone(),
            audience: CLIENT_ID.into(),
            nonce: nonce.into(),
            subject: subject.into(),
            email: Some(email.into()),
            email_verified: Some(true),
            expires_in: 300,
        }
    }

    /// From now on the token endpoint answers with an ID token carrying `claims` (the last
    /// mounted answer wins).
    pub async fn answer(&self, claims: &Claims) {
        self.server.reset().await;
        self.mount_documents().await;
        let token = sign(claims);
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "test-access-token",
                "token_type": "Bearer",
                "expires_in": 3600,
                "id_token": token,
            })))
            .mount(&self.server)
            .await;
    }

    async fn mount_documents(&self) {
        let discovery = serde_json::json!({
            "issuer": self.issuer,
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": format!("{}/token", self.issuer),
            "jwks_uri": format!("{}/jwks", self.issuer),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(discovery))
            .mount(&self.server)
            .await;
        let jwks = CoreJsonWebKeySet::new(vec![KEY.as_verification_key()]);
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
            .mount(&self.server)
            .await;
    }
}

/// A compact RS256 JWS of `claims`, signed with the test key.
pub fn sign(claims: &Claims) -> String {
    let now = chrono::Utc::now();
    let standard = StandardClaims::new(SubjectIdentifier::new(claims.subject.clone()))
        .set_email(claims.email.clone().map(EndUserEmail::new))
        .set_email_verified(claims.email_verified);
    let id = CoreIdTokenClaims::new(
        IssuerUrl::new(claims.issuer.clone()).expect("issuer URL"),
        vec![Audience::new(claims.audience.clone())],
        now + chrono::Duration::seconds(claims.expires_in),
        now,
        standard,
        EmptyAdditionalClaims {},
    )
    .set_nonce(Some(Nonce::new(claims.nonce.clone())));
    CoreIdToken::new(
        id,
        &*KEY,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        None,
        None,
    )
    .expect("signing a test ID token")
    .to_string()
}
