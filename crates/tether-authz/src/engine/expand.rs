//! Expand: one level of the userset tree of `object#relation`.

use std::ops::ControlFlow;

use super::check::restriction_kinds;
use super::{Engine, Layered};
use crate::error::AuthzError;
use crate::model::{AuthorizationModel, RelationDefinition, Userset};
use crate::store::TupleReader;
use crate::tuple::{Tuple, parse_object};

/// An Expand request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpandRequest {
    /// `type:id`.
    pub object: String,
    /// Relation name.
    pub relation: String,
    /// Tuples that exist for this request only.
    pub contextual_tuples: Vec<Tuple>,
}

/// A node of the expansion: the userset it describes and its tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandNode {
    /// `type:id#relation`.
    pub name: String,
    /// The rewrite, expanded one level.
    pub tree: UsersetTree,
}

/// The expanded rewrite of a relation (OpenFGA's `UsersetTree`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersetTree {
    /// Direct users (`type:id`, `type:*`, `type:id#relation`).
    Leaf(Vec<String>),
    /// A computed userset on the same object (`type:id#relation`).
    Computed(String),
    /// A tuple-to-userset: the tupleset and the computed usersets on each parent.
    TupleToUserset {
        /// `type:id#tupleset`.
        tupleset: String,
        /// `parent#computed` for each parent.
        computed: Vec<String>,
    },
    /// Union of children.
    Union(Vec<ExpandNode>),
    /// Intersection of children.
    Intersection(Vec<ExpandNode>),
    /// Base minus subtract.
    Difference {
        /// Base.
        base: Box<ExpandNode>,
        /// Subtracted.
        subtract: Box<ExpandNode>,
    },
}

impl Engine {
    /// Expand `object#relation` one level.
    pub fn expand(
        &self,
        model: &AuthorizationModel,
        tuples: &dyn TupleReader,
        req: &ExpandRequest,
    ) -> Result<ExpandNode, AuthzError> {
        let object = parse_object(&req.object).map_err(AuthzError::Validation)?;
        let rel = model
            .relation(object.object_type, &req.relation)
            .ok_or_else(|| AuthzError::RelationNotFound {
                type_name: object.object_type.to_owned(),
                relation: req.relation.clone(),
            })?;
        let extra = self.contextual_store(model, &req.contextual_tuples)?;
        let reader = Layered::new(tuples, extra.as_ref());
        let name = format!("{}#{}", req.object, req.relation);
        let tree = expand_rewrite(
            model,
            &reader,
            (object.object_type, object.id),
            rel,
            &rel.rewrite,
        )?;
        Ok(ExpandNode { name, tree })
    }
}

fn expand_rewrite(
    model: &AuthorizationModel,
    reader: &dyn TupleReader,
    object: (&str, &str),
    rel: &RelationDefinition,
    u: &Userset,
) -> Result<UsersetTree, AuthzError> {
    let name = format!("{}:{}#{}", object.0, object.1, rel.name);
    let child = |c: &Userset| -> Result<ExpandNode, AuthzError> {
        Ok(ExpandNode {
            name: name.clone(),
            tree: expand_rewrite(model, reader, object, rel, c)?,
        })
    };
    Ok(match u {
        Userset::This => UsersetTree::Leaf(direct_users(reader, object, rel)?),
        Userset::Computed(r) => UsersetTree::Computed(format!("{}:{}#{r}", object.0, object.1)),
        Userset::TupleToUserset { tupleset, computed } => {
            let mut parents = Vec::new();
            if let Some(ts) = model.relation(object.0, tupleset) {
                for p in direct_users(reader, object, ts)? {
                    if !p.contains('#') && !p.ends_with(":*") {
                        parents.push(format!("{p}#{computed}"));
                    }
                }
            }
            UsersetTree::TupleToUserset {
                tupleset: format!("{}:{}#{tupleset}", object.0, object.1),
                computed: parents,
            }
        }
        Userset::Union(c) => UsersetTree::Union(c.iter().map(child).collect::<Result<_, _>>()?),
        Userset::Intersection(c) => {
            UsersetTree::Intersection(c.iter().map(child).collect::<Result<_, _>>()?)
        }
        Userset::Difference { base, subtract } => UsersetTree::Difference {
            base: Box::new(child(base)?),
            subtract: Box::new(child(subtract)?),
        },
    })
}

fn direct_users(
    reader: &dyn TupleReader,
    object: (&str, &str),
    rel: &RelationDefinition,
) -> Result<Vec<String>, AuthzError> {
    let mut users = Vec::new();
    for kind in restriction_kinds(rel) {
        reader.read_users(
            object.0,
            object.1,
            &rel.name,
            &kind.type_name,
            kind.relation.as_deref(),
            &mut |id, _| {
                let u = match (&kind.relation, id == "*") {
                    (Some(r), _) => format!("{}:{id}#{r}", kind.type_name),
                    (None, _) => format!("{}:{id}", kind.type_name),
                };
                if (id == "*") == kind.wildcard && !users.contains(&u) {
                    users.push(u);
                }
                ControlFlow::Continue(())
            },
        )?;
    }
    Ok(users)
}
