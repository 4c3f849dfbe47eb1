//! Typed errors with OpenFGA's numeric error codes.

use std::fmt;

/// One problem found in a model, with its position in the DSL source when known.
///
/// Lines and columns are 0-based, as in the OpenFGA language test data; the
/// `Display` form adds 1 to both for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// Human-readable message, identical to OpenFGA's where one exists.
    pub message: String,
    /// Machine-readable kind (OpenFGA `errorType` / our own tag).
    pub kind: ModelErrorKind,
    /// The offending symbol, if any.
    pub symbol: Option<String>,
    /// Position in the DSL source, if the model came from DSL.
    pub span: Option<Span>,
}

/// A 0-based source range inside one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// 0-based line.
    pub line: usize,
    /// 0-based start column.
    pub start_column: usize,
    /// 0-based end column (exclusive).
    pub end_column: usize,
}

/// Kind of model problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The DSL or JSON text could not be parsed.
    Syntax,
    /// A type, relation or condition that is used is not defined.
    MissingDefinition,
    /// `self` / `this` used as a type or relation name.
    ReservedTypeKeywords,
    /// `self` / `this` used as a relation name.
    ReservedRelationKeywords,
    /// A type is defined twice.
    DuplicatedError,
    /// A relation has no entry point (no way to ever be true).
    RelationNoEntrypoint,
    /// A `X from Y` whose tupleset `Y` is invalid.
    TuplesetNotDirect,
    /// A relation references itself with no way out.
    CycleNoEntry,
    /// A direct type restriction that is not allowed.
    InvalidRelationType,
    /// An invalid name.
    InvalidName,
    /// An invalid schema version.
    InvalidSchema,
    /// A condition that is declared but not used.
    ConditionNotUsed,
    /// A condition that is used but not declared, or is invalid.
    InvalidCondition,
    /// A type restriction that refers to an undefined relation on an assignable type.
    AssignableRelationMustHaveTypes,
    /// A JSON condition whose `name` differs from its key.
    DifferentNestedConditionName,
    /// A JSON model that would put several modules in one file.
    MultipleModulesInFile,
    /// Anything else.
    Other,
}

impl ModelErrorKind {
    /// OpenFGA language `errorType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax-error",
            Self::MissingDefinition => "missing-definition",
            Self::ReservedTypeKeywords => "reserved-type-keywords",
            Self::ReservedRelationKeywords => "reserved-relation-keywords",
            Self::DuplicatedError => "duplicated-error",
            Self::RelationNoEntrypoint => "relation-no-entry-point",
            Self::TuplesetNotDirect => "tupleuserset-not-direct",
            Self::CycleNoEntry => "cycle-no-entry",
            Self::InvalidRelationType => "invalid-relation-type",
            Self::InvalidName => "invalid-name",
            Self::InvalidSchema => "invalid-schema",
            Self::ConditionNotUsed => "condition-not-used",
            Self::InvalidCondition => "invalid-condition",
            Self::AssignableRelationMustHaveTypes => "assignable-relation-must-have-type",
            Self::DifferentNestedConditionName => "different-nested-condition-name",
            Self::MultipleModulesInFile => "multiple-modules-in-file",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.span {
            Some(s) => write!(
                f,
                "line {}, column {}: {}",
                s.line + 1,
                s.start_column + 1,
                self.message
            ),
            None => f.write_str(&self.message),
        }
    }
}

/// Every error the engine returns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthzError {
    /// A request or value is invalid (OpenFGA `validation_error`, 2000).
    #[error("validation error: {0}")]
    Validation(String),
    /// A condition could not be evaluated because parameters are missing (2000).
    #[error(
        "failed to evaluate relationship condition '{condition}': tuple '{tuple}' is missing context parameters {missing:?}"
    )]
    MissingConditionParameters {
        /// Condition name.
        condition: String,
        /// The tuple whose condition was evaluated.
        tuple: String,
        /// Parameter names that were needed but absent.
        missing: Vec<String>,
    },
    /// A condition failed to evaluate (2000).
    #[error("failed to evaluate relationship condition '{condition}': {message}")]
    ConditionEvaluation {
        /// Condition name.
        condition: String,
        /// What went wrong.
        message: String,
    },
    /// The resolution depth limit was hit (2002).
    #[error("authorization model resolution too complex (depth limit {limit} exceeded)")]
    ResolutionTooComplex {
        /// The configured limit.
        limit: u32,
    },
    /// A type is not defined in the model (2021).
    #[error("type '{0}' not found")]
    TypeNotFound(String),
    /// A relation is not defined on a type (2022).
    #[error("relation '{type_name}#{relation}' not found")]
    RelationNotFound {
        /// Object type.
        type_name: String,
        /// Relation name.
        relation: String,
    },
    /// A tuple is malformed or not allowed by the model (2027).
    #[error("invalid tuple '{tuple}': {reason}")]
    InvalidTuple {
        /// The tuple, in `object#relation@user` form.
        tuple: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The model is not valid (2056); the list names each problem.
    #[error("invalid authorization model: {}", join_errors(.0))]
    InvalidModel(Vec<ModelError>),
    /// Module files could not be combined into a model (2056); each problem
    /// names its file.
    #[error("invalid modular model: {}", join_module_errors(.0))]
    InvalidModules(Vec<ModuleError>),
    /// Unsupported schema version (2057).
    #[error("unsupported schema version '{0}'")]
    UnsupportedSchemaVersion(String),
    /// A request exceeded a configured limit (2053).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

/// A problem in one file of a modular model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    /// The file, as named in `fga.mod`.
    pub file: String,
    /// The problem, with its position in that file.
    pub error: ModelError,
}

fn join_module_errors(errors: &[ModuleError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.file, e.error))
        .collect();
    parts.join("; ")
}

fn join_errors(errors: &[ModelError]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl AuthzError {
    /// The OpenFGA numeric error code.
    pub fn code(&self) -> u32 {
        match self {
            Self::Validation(_)
            | Self::MissingConditionParameters { .. }
            | Self::ConditionEvaluation { .. } => 2000,
            Self::ResolutionTooComplex { .. } => 2002,
            Self::TypeNotFound(_) => 2021,
            Self::RelationNotFound { .. } => 2022,
            Self::InvalidTuple { .. } => 2027,
            Self::LimitExceeded(_) => 2053,
            Self::InvalidModel(_) | Self::InvalidModules(_) => 2056,
            Self::UnsupportedSchemaVersion(_) => 2057,
        }
    }

    /// The model errors, when this is [`AuthzError::InvalidModel`].
    pub fn model_errors(&self) -> &[ModelError] {
        match self {
            Self::InvalidModel(errors) => errors,
            _ => &[],
        }
    }

    pub(crate) fn model(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        Self::InvalidModel(vec![ModelError {
            message: message.into(),
            kind,
            symbol: None,
            span: None,
        }])
    }
}
