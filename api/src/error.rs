//! The REST API's one boundary error: each variant is one status code with a JSON body; the
//! cause of a 5xx is logged, never sent.

use poem_openapi::{ApiResponse, Object, payload::Json};
use switchboard_services::ServiceError;

/// Error body: `{"error": "body: must not be empty"}`.
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// What went wrong; for invalid input it starts with the field name.
    pub error: String,
}

fn body(text: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody { error: text.into() })
}

/// Errors of the REST API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Input that names its field.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The key's or member's role does not allow this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource for this tenant.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request contradicts existing data.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Our fault; logged with its cause.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Temporarily unable (job queue or writer unavailable); retry.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// An error answered before an operation ran (poem-openapi could not read a parameter or
/// the payload, the API key was refused, the body was too large) in the same JSON shape as
/// every other error, with its status; its sentence names the parameter or the payload. A
/// response that is JSON already (an operation's [`ApiError`]) passes unchanged.
pub async fn as_json(resp: poem::Response) -> poem::Response {
    let json = resp
        .content_type()
        .is_some_and(|t| t.starts_with("application/json"));
    if json || resp.status().is_success() {
        return resp;
    }
    let status = resp.status();
    let text = match resp.into_body().into_string().await {
        Ok(text) if !text.trim().is_empty() && !status.is_server_error() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    poem::Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(serde_json::json!({ "error": text }).to_string())
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => Self::NotFound(body("not found")),
            ServiceError::Invalid { .. } => Self::BadRequest(body(e.to_string())),
            ServiceError::Conflict(m) => Self::Conflict(body(m)),
            ServiceError::Forbidden(m) => Self::Forbidden(body(m)),
            ServiceError::Queue(_)
            | ServiceError::Unavailable(_)
            | ServiceError::WriterGone
            | ServiceError::Mail(_)
            | ServiceError::Provider(_)
            | ServiceError::Redis(_) => {
                tracing::warn!(error = %e, "request refused: service unavailable");
                Self::Unavailable(body("temporarily unavailable, retry"))
            }
            ServiceError::Db(_)
            | ServiceError::Sqlx(_)
            | ServiceError::Sqlite(_)
            | ServiceError::WalSync(_)
            | ServiceError::Credential(_) => {
                tracing::error!(error = %e, "request failed");
                Self::Internal(body("internal error"))
            }
        }
    }
}
