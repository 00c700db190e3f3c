//! A request's failure, and how each API shape writes it: OpenAI's `{"error": {...}}`,
//! Cloudflare's `{"success": false, "errors": [...]}`, Baidu's `{"error_code", "error_msg"}`,
//! text-embeddings-inference's `{"error", "error_type"}` (for `/rerank`).
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Malformed JSON, wrong types, missing fields, bad parameters, empty input: 400.
    InvalidRequest,
    /// Missing or wrong API key: 401.
    Authentication,
    /// No served model by that name: 404.
    UnknownModel,
    /// No such route: 404.
    NoRoute,
    /// A body over the size limit: 413.
    TooLarge,
    /// The queue is full: 429 with Retry-After.
    Busy,
    /// The engine failed or panicked: 500.
    Internal,
    /// The server is shutting down: 503.
    Unavailable,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
    /// The request field at fault (OpenAI's `param`).
    pub param: Option<&'static str>,
}

/// Seconds a client told 429 should wait.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> ApiError {
        ApiError { kind: Kind::InvalidRequest, message: message.into(), param }
    }

    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into(), param: None }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::InvalidRequest => StatusCode::BAD_REQUEST,
            Kind::Authentication => StatusCode::UNAUTHORIZED,
            Kind::UnknownModel | Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Busy => StatusCode::TOO_MANY_REQUESTS,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's error body: `type` and `code` as the OpenAI API uses them.
    pub fn openai(&self) -> Response {
        let (kind, code) = match self.kind {
            Kind::InvalidRequest | Kind::TooLarge | Kind::NoRoute => ("invalid_request_error", None),
            Kind::Authentication => ("invalid_request_error", Some("invalid_api_key")),
            Kind::UnknownModel => ("invalid_request_error", Some("model_not_found")),
            Kind::Busy => ("rate_limit_error", Some("rate_limit_exceeded")),
            Kind::Internal | Kind::Unavailable => ("server_error", None),
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": code}});
        self.respond(body)
    }

    /// Cloudflare Workers AI's error body.
    pub fn cloudflare(&self) -> Response {
        let code = match self.kind {
            Kind::InvalidRequest | Kind::TooLarge => 5006,
            Kind::Authentication => 10000,
            Kind::UnknownModel | Kind::NoRoute => 5007,
            Kind::Busy => 3040,
            Kind::Internal | Kind::Unavailable => 3043,
        };
        let body = json!({"result": null, "success": false, "errors": [{"code": code, "message": self.message}], "messages": []});
        self.respond(body)
    }

    /// Baidu Qianfan's error body (its error codes; the HTTP status says the same as for the
    /// other shapes).
    pub fn baidu(&self) -> Response {
        let code = match self.kind {
            Kind::InvalidRequest | Kind::TooLarge => 336003,
            Kind::Authentication => 110,
            Kind::UnknownModel | Kind::NoRoute => 336005,
            Kind::Busy => 18,
            Kind::Internal | Kind::Unavailable => 336000,
        };
        let body = json!({"error_code": code, "error_msg": self.message});
        self.respond(body)
    }

    /// text-embeddings-inference's error body `{"error", "error_type"}` (its error types).
    pub fn tei(&self) -> Response {
        let error_type = match self.kind {
            Kind::InvalidRequest | Kind::TooLarge | Kind::UnknownModel | Kind::NoRoute => "Validation",
            Kind::Authentication => "Unauthorized",
            Kind::Busy => "Overloaded",
            Kind::Internal => "Backend",
            Kind::Unavailable => "Unhealthy",
        };
        self.respond(json!({"error": self.message, "error_type": error_type}))
    }

    fn respond(&self, body: serde_json::Value) -> Response {
        let mut response = (self.status(), axum::Json(body)).into_response();
        if self.kind == Kind::Busy {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if self.kind == Kind::Authentication {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
