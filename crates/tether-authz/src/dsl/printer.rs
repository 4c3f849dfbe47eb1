//! Print a model as OpenFGA DSL.

use std::fmt::Write as _;

use crate::error::{AuthzError, ModelErrorKind};
use crate::model::{ConditionDefinition, ModelData, RelationDefinition, TypeDefinition, Userset};

/// Print model data as DSL text, or say which relation the DSL cannot express.
///
/// The DSL allows a direct assignment (`[user]`) only first in a definition or
/// first inside parentheses that come first, so a `this` may sit in a union or
/// intersection (it is printed first) or as the base of a difference, but not
/// in a subtracted set or in two children of the same union or intersection.
pub fn try_print_dsl(model: &ModelData) -> Result<String, AuthzError> {
    for t in &model.types {
        for r in &t.relations {
            if !expressible(&r.rewrite) {
                return Err(AuthzError::model(
                    ModelErrorKind::Syntax,
                    format!(
                        "the '{}' relation definition under the '{}' type is not supported by the OpenFGA DSL syntax yet",
                        r.name, t.name
                    ),
                ));
            }
        }
    }
    Ok(print_dsl(model))
}

/// Whether a rewrite fits the DSL's rule for direct assignments.
fn expressible(u: &Userset) -> bool {
    match u {
        Userset::This | Userset::Computed(_) | Userset::TupleToUserset { .. } => true,
        Userset::Union(children) | Userset::Intersection(children) => {
            children.iter().filter(|c| c.contains_this()).count() <= 1
                && children.iter().all(expressible)
        }
        Userset::Difference { base, subtract } => expressible(base) && !subtract.contains_this(),
    }
}

/// Print model data as DSL text in the canonical OpenFGA layout.
pub fn print_dsl(model: &ModelData) -> String {
    let mut out = String::new();
    let version = if model.schema_version.is_empty() {
        "1.1"
    } else {
        model.schema_version.as_str()
    };
    let _ = writeln!(out, "model\n  schema {version}");
    for t in &model.types {
        print_type(&mut out, t);
    }
    for c in model.conditions.values() {
        print_condition(&mut out, c);
    }
    out
}

fn print_type(out: &mut String, t: &TypeDefinition) {
    let _ = writeln!(out, "\ntype {}", t.name);
    if t.relations.is_empty() {
        return;
    }
    out.push_str("  relations\n");
    for r in &t.relations {
        let _ = writeln!(out, "    define {}: {}", r.name, print_rewrite(r));
    }
}

/// Print the right-hand side of a relation definition.
pub fn print_rewrite(r: &RelationDefinition) -> String {
    print_userset(&r.rewrite, r, false)
}

fn print_direct(r: &RelationDefinition) -> String {
    let parts: Vec<String> = r
        .directly_related
        .iter()
        .map(|t| match &t.condition {
            Some(c) => format!("{} with {}", t.dsl_subject(), c),
            None => t.dsl_subject(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn print_userset(u: &Userset, r: &RelationDefinition, nested: bool) -> String {
    let text = match u {
        Userset::This => return print_direct(r),
        Userset::Computed(c) => return c.clone(),
        Userset::TupleToUserset { tupleset, computed } => {
            return format!("{computed} from {tupleset}");
        }
        Userset::Union(children) => join(children, " or ", r),
        Userset::Intersection(children) => join(children, " and ", r),
        Userset::Difference { base, subtract } => format!(
            "{} but not {}",
            print_userset(base, r, true),
            print_userset(subtract, r, true)
        ),
    };
    if nested { format!("({text})") } else { text }
}

fn join(children: &[Userset], sep: &str, r: &RelationDefinition) -> String {
    if let [only] = children {
        return print_userset(only, r, false);
    }
    // A direct assignment can only come first; `or` and `and` commute.
    let (first, rest): (Vec<&Userset>, Vec<&Userset>) =
        children.iter().partition(|c| c.contains_this());
    let parts: Vec<String> = first
        .into_iter()
        .chain(rest)
        .map(|c| print_userset(c, r, true))
        .collect();
    parts.join(sep)
}

fn print_condition(out: &mut String, c: &ConditionDefinition) {
    let params: Vec<String> = c
        .parameters
        .iter()
        .map(|(n, t)| format!("{n}: {}", t.dsl_name()))
        .collect();
    let _ = writeln!(
        out,
        "\ncondition {}({}) {{\n  {}\n}}",
        c.name,
        params.join(", "),
        c.expression
    );
}
