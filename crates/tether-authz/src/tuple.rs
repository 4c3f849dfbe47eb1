//! Relationship tuples: parsing and validation against a model.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AuthzError;
use crate::model::AuthorizationModel;

/// Longest accepted object, user or relation string (OpenFGA limits are 256/512/50).
pub const MAX_FIELD_LEN: usize = 512;

/// A condition attached to a tuple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TupleCondition {
    /// Condition name (declared in the model).
    pub name: String,
    /// Stored context; it wins over the request context on a clash.
    #[serde(default)]
    pub context: Map<String, Value>,
}

/// A relationship tuple: `user` has `relation` on `object`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tuple {
    /// `type:id`.
    pub object: String,
    /// Relation name.
    pub relation: String,
    /// `type:id`, `type:id#relation` or `type:*`.
    pub user: String,
    /// Optional condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<TupleCondition>,
}

impl Tuple {
    /// A tuple without a condition.
    pub fn new(object: &str, relation: &str, user: &str) -> Self {
        Self {
            object: object.to_owned(),
            relation: relation.to_owned(),
            user: user.to_owned(),
            condition: None,
        }
    }

    /// Add a condition.
    #[must_use]
    pub fn with_condition(mut self, name: &str, context: Map<String, Value>) -> Self {
        self.condition = Some(TupleCondition {
            name: name.to_owned(),
            context,
        });
        self
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}@{}", self.object, self.relation, self.user)
    }
}

/// A parsed object reference `type:id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectRef<'a> {
    /// Object type.
    pub object_type: &'a str,
    /// Object id.
    pub id: &'a str,
}

impl fmt::Display for ObjectRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.object_type, self.id)
    }
}

/// A parsed user reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserRef<'a> {
    /// `type:id`
    Object(ObjectRef<'a>),
    /// `type:*`
    Wildcard(&'a str),
    /// `type:id#relation`
    Userset(ObjectRef<'a>, &'a str),
}

impl<'a> UserRef<'a> {
    /// The user's type.
    pub fn user_type(&self) -> &'a str {
        match self {
            Self::Object(o) | Self::Userset(o, _) => o.object_type,
            Self::Wildcard(t) => t,
        }
    }

    /// The id (`*` for a wildcard).
    pub fn id(&self) -> &'a str {
        match self {
            Self::Object(o) | Self::Userset(o, _) => o.id,
            Self::Wildcard(_) => "*",
        }
    }

    /// The userset relation, if any.
    pub fn relation(&self) -> Option<&'a str> {
        match self {
            Self::Userset(_, r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for UserRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Object(o) => write!(f, "{o}"),
            Self::Wildcard(t) => write!(f, "{t}:*"),
            Self::Userset(o, r) => write!(f, "{o}#{r}"),
        }
    }
}

fn valid_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 254
        && !t
            .chars()
            .any(|c| matches!(c, ':' | '#' | '@' | '*') || c.is_whitespace())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.chars().any(|c| c == '#' || c.is_whitespace())
}

/// Whether `name` is a valid relation name.
pub fn valid_relation_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 50
        && !r
            .chars()
            .any(|c| matches!(c, ':' | '#' | '@' | '*') || c.is_whitespace())
}

/// Parse `type:id` (the id may not be `*`).
pub fn parse_object(s: &str) -> Result<ObjectRef<'_>, String> {
    if s.len() > MAX_FIELD_LEN {
        return Err("object is too long".into());
    }
    let (t, id) = s
        .split_once(':')
        .ok_or_else(|| format!("object '{s}' is not of the form type:id"))?;
    if !valid_type_name(t) {
        return Err(format!("invalid object type in '{s}'"));
    }
    if !valid_id(id) || id == "*" {
        return Err(format!("invalid object id in '{s}'"));
    }
    Ok(ObjectRef { object_type: t, id })
}

/// Parse `type:id`, `type:*` or `type:id#relation`.
pub fn parse_user(s: &str) -> Result<UserRef<'_>, String> {
    if s.len() > MAX_FIELD_LEN {
        return Err("user is too long".into());
    }
    if let Some((obj, rel)) = s.split_once('#') {
        let o = parse_object(obj)?;
        if !valid_relation_name(rel) {
            return Err(format!("invalid relation in user '{s}'"));
        }
        return Ok(UserRef::Userset(o, rel));
    }
    let (t, id) = s
        .split_once(':')
        .ok_or_else(|| format!("user '{s}' is not of the form type:id"))?;
    if id == "*" {
        if !valid_type_name(t) {
            return Err(format!("invalid user type in '{s}'"));
        }
        return Ok(UserRef::Wildcard(t));
    }
    parse_object(s).map(UserRef::Object)
}

fn invalid(t: &Tuple, reason: impl Into<String>) -> AuthzError {
    AuthzError::InvalidTuple {
        tuple: t.to_string(),
        reason: reason.into(),
    }
}

/// Validate a tuple against a model (OpenFGA write rules). Errors are code 2027.
pub fn validate_tuple(model: &AuthorizationModel, t: &Tuple) -> Result<(), AuthzError> {
    let object = parse_object(&t.object).map_err(|e| invalid(t, e))?;
    let user = parse_user(&t.user).map_err(|e| invalid(t, e))?;
    if !valid_relation_name(&t.relation) {
        return Err(invalid(t, "invalid relation name"));
    }
    if !model.has_type(object.object_type) {
        return Err(invalid(
            t,
            format!("type '{}' not found", object.object_type),
        ));
    }
    let rel = model
        .relation(object.object_type, &t.relation)
        .ok_or_else(|| {
            invalid(
                t,
                format!("relation '{}#{}' not found", object.object_type, t.relation),
            )
        })?;
    if !model.has_type(user.user_type()) {
        return Err(invalid(t, format!("type '{}' not found", user.user_type())));
    }
    if let Some(r) = user.relation()
        && model.relation(user.user_type(), r).is_none()
    {
        return Err(invalid(
            t,
            format!("relation '{}#{r}' not found", user.user_type()),
        ));
    }
    check_restriction(model, t, rel, &user)
}

fn check_restriction(
    model: &AuthorizationModel,
    t: &Tuple,
    rel: &crate::model::RelationDefinition,
    user: &UserRef<'_>,
) -> Result<(), AuthzError> {
    let cond = t
        .condition
        .as_ref()
        .map(|c| c.name.as_str())
        .filter(|n| !n.is_empty());
    if let Some(c) = cond
        && model.condition(c).is_none()
    {
        return Err(invalid(t, format!("condition '{c}' is not defined")));
    }
    let allowed = rel.directly_related.iter().any(|r| {
        r.type_name == user.user_type()
            && r.relation.as_deref() == user.relation()
            && r.wildcard == matches!(user, UserRef::Wildcard(_))
            && r.condition.as_deref() == cond
    });
    if allowed {
        Ok(())
    } else {
        Err(invalid(
            t,
            format!(
                "type '{}' is not an allowed type restriction for '{}'",
                user_subject(user),
                t.relation
            ),
        ))
    }
}

fn user_subject(user: &UserRef<'_>) -> String {
    match user {
        UserRef::Object(o) => o.object_type.to_owned(),
        UserRef::Wildcard(t) => format!("{t}:*"),
        UserRef::Userset(o, r) => format!("{}#{r}", o.object_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(parse_user("user:*").unwrap(), UserRef::Wildcard("user"));
        assert!(matches!(
            parse_user("group:eng#member").unwrap(),
            UserRef::Userset(_, "member")
        ));
        assert!(parse_user("user").is_err());
        assert!(parse_object("doc:*").is_err());
        assert!(parse_object(":x").is_err());
        assert!(parse_object("doc:").is_err());
        assert!(parse_user("a:b#").is_err());
    }
}
