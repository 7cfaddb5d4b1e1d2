//! The error codes of the troubleshooting guide ("Common Error Codes"), exactly as published:
//! code, NAME, description and severity.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Severity column of the guide's error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    Critical,
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Error => "Error",
            Severity::Warning => "Warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! error_codes {
    ($( $variant:ident => ($code:literal, $name:literal, $desc:literal, $sev:ident), )*) => {
        /// One row of the guide's "Error Code Reference" table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode { $( $variant, )* }

        impl ErrorCode {
            /// Every code, in the guide's order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The code as printed, e.g. `E2001`.
            pub fn code(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The upper-case name, e.g. `MODEL_LOAD_FAILED`.
            pub fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// The guide's one-line description.
            pub fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $desc, )* }
            }

            pub fn severity(self) -> Severity {
                match self { $( ErrorCode::$variant => Severity::$sev, )* }
            }

            /// Parses `E2001` (or the name `MODEL_LOAD_FAILED`).
            pub fn parse(s: &str) -> Option<ErrorCode> {
                ErrorCode::ALL.iter().copied().find(|c| c.code() == s || c.name() == s)
            }
        }
    };
}

error_codes! {
    IpcConnectionFailed => ("E1001", "IPC_CONNECTION_FAILED", "Cannot connect to runtime socket", Critical),
    IpcTimeout => ("E1002", "IPC_TIMEOUT", "Request timed out waiting for response", Warning),
    IpcProtocolError => ("E1003", "IPC_PROTOCOL_ERROR", "Malformed IPC message", Error),
    ModelLoadFailed => ("E2001", "MODEL_LOAD_FAILED", "Failed to load model file", Critical),
    ModelNotFound => ("E2002", "MODEL_NOT_FOUND", "Requested model not in registry", Error),
    ModelVersionMismatch => ("E2003", "MODEL_VERSION_MISMATCH", "Model version incompatible", Error),
    SandboxInitFailed => ("E3001", "SANDBOX_INIT_FAILED", "Sandbox initialization failed", Critical),
    SandboxViolation => ("E3002", "SANDBOX_VIOLATION", "Security boundary violation attempted", Critical),
    ResourceLimitExceeded => ("E3003", "RESOURCE_LIMIT_EXCEEDED", "Memory or CPU limit exceeded", Error),
    InferenceFailed => ("E4001", "INFERENCE_FAILED", "Inference execution error", Error),
    TokenizerError => ("E4002", "TOKENIZER_ERROR", "Tokenization failed", Error),
    ContextOverflow => ("E4003", "CONTEXT_OVERFLOW", "Input exceeds context window", Warning),
    DeploymentFailed => ("E5001", "DEPLOYMENT_FAILED", "Deployment operation failed", Error),
    RollbackFailed => ("E5002", "ROLLBACK_FAILED", "Rollback operation failed", Critical),
    HealthCheckFailed => ("E5003", "HEALTH_CHECK_FAILED", "Health probe returned unhealthy", Warning),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ErrorCode::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {s:?}")))
    }
}

/// The error shape every user-visible failure takes, on the wire and in `--json` output:
/// `{"code":"E2001","name":"MODEL_LOAD_FAILED","severity":"Critical","detail":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub name: String,
    pub severity: Severity,
    pub detail: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ErrorBody {
            code,
            name: code.name().to_string(),
            severity: code.severity(),
            detail: detail.into(),
        }
    }
}

/// `E2001 MODEL_LOAD_FAILED: <detail>`, the form the CLI prints.
impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for ErrorBody {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_fifteen_unique_codes_in_guide_order() {
        assert_eq!(ErrorCode::ALL.len(), 15);
        let codes: Vec<_> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(codes, sorted, "codes must be unique and in ascending order");
    }

    #[test]
    fn codes_round_trip_through_parse_and_serde() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.code()), Some(c));
            assert_eq!(ErrorCode::parse(c.name()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.code()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        assert_eq!(ErrorCode::parse("E9999"), None);
    }

    #[test]
    fn body_json_and_display_follow_the_design_contract() {
        let body = ErrorBody::new(ErrorCode::ModelLoadFailed, "sha256 mismatch");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"code":"E2001","name":"MODEL_LOAD_FAILED","severity":"Critical","detail":"sha256 mismatch"})
        );
        assert_eq!(body.to_string(), "E2001 MODEL_LOAD_FAILED: sha256 mismatch");
    }

    #[test]
    fn severities_match_the_guide() {
        use ErrorCode::*;
        let critical = [
            IpcConnectionFailed,
            ModelLoadFailed,
            SandboxInitFailed,
            SandboxViolation,
            RollbackFailed,
        ];
        let warning = [IpcTimeout, ContextOverflow, HealthCheckFailed];
        for &c in ErrorCode::ALL {
            let expected = if critical.contains(&c) {
                Severity::Critical
            } else if warning.contains(&c) {
                Severity::Warning
            } else {
                Severity::Error
            };
            assert_eq!(c.severity(), expected, "{c}");
        }
    }
}
