//! `ApiError`: every error code of SPEC §5, its status, extra headers and the JSON
//! envelope. Handlers return `Result<Response, ApiError>`; the envelope is built here
//! and only here.

use serde::Serialize;

use crate::store::StoreError;

/// One problem with one field of a request (`validation_failed` details).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    pub field: String,
    pub problem: String,
}

impl Detail {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Detail {
        Detail {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// An error answer: status, code, human message, details and extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<Detail>,
    /// `Allow` header (405).
    pub allow: Option<String>,
    /// `Retry-After` header in seconds (429, 503).
    pub retry_after: Option<u64>,
    /// What really went wrong, for the log line (with the request id); never sent.
    pub cause: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            allow: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
    pub fn validation(details: Vec<Detail>) -> ApiError {
        let mut e = ApiError::new(422, "validation_failed", "request body is invalid");
        e.details = details;
        e
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }
    pub fn method_not_allowed(allow: String) -> ApiError {
        let mut e = ApiError::new(
            405,
            "method_not_allowed",
            format!("allowed methods: {allow}"),
        );
        e.allow = Some(allow);
        e
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "conflict", message)
    }
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(412, "precondition_failed", message)
    }
    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            413,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }
    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            415,
            "unsupported_media_type",
            "request body must be application/json",
        )
    }
    pub fn rate_limited(retry_after: u64) -> ApiError {
        let mut e = ApiError::new(429, "rate_limited", "too many requests; slow down");
        e.retry_after = Some(retry_after);
        e
    }
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> ApiError {
        let mut e = ApiError::new(503, "unavailable", message);
        e.retry_after = Some(retry_after);
        e
    }
    /// A fixed message: internals (SQL, paths) are logged, never sent.
    pub fn internal() -> ApiError {
        ApiError::new(500, "internal", "internal error")
    }

    /// Attaches the real cause, logged by the pipeline with the request id.
    pub fn with_cause(mut self, cause: impl Into<String>) -> ApiError {
        self.cause = Some(cause.into());
        self
    }

    /// The JSON envelope: `{"error":{code,message,details?},"request_id":…}`.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
            details: &'a [Detail],
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
            request_id: &'a str,
        }
        serde_json::to_vec(&Envelope {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
            request_id,
        })
        .unwrap_or_default()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::LeaseLost(m) => ApiError::new(409, "lease_lost", m),
            StoreError::LeaseHeld => ApiError::new(
                409,
                "lease_held",
                "an agent holds a live lease on this task; send its Lease-Token, or If-Match to force the change",
            ),
            StoreError::IdempotencyMismatch => ApiError::new(
                422,
                "idempotency_mismatch",
                "this Idempotency-Key was used with a different request",
            ),
            StoreError::IdempotencyInFlight => ApiError::conflict(
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ),
            StoreError::Invalid(field, m) => ApiError::validation(vec![Detail::new(field, m)]),
            StoreError::VersionMismatch(v) => ApiError::precondition_failed(format!(
                "If-Match does not match the current version {v}"
            )),
            StoreError::Busy => ApiError::unavailable("database is busy, retry shortly", 1),
            StoreError::Full => ApiError::unavailable(
                "storage is full; writes are refused until space is freed",
                30,
            ),
            StoreError::Unavailable(m) => {
                ApiError::unavailable("database unavailable", 5).with_cause(m)
            }
            StoreError::Other(m) => ApiError::internal().with_cause(m),
        }
    }
}
