//! The model compiled for evaluation: names interned to ids, relations
//! numbered, and every reference in a rewrite resolved once, so Check does no
//! string lookups in the model.

use std::collections::HashMap;

use super::types::{ModelData, RelationDefinition, Userset};
use crate::store::hash::FoldBuild;

/// Index of a distinct name (type or relation) of the model.
pub(crate) type NameId = u32;
/// Index of a relation of the model (all types together).
pub(crate) type RelIdx = u32;

/// One distinct restriction kind `(type, userset relation, wildcard)` of a relation.
#[derive(Debug, Clone)]
pub(crate) struct CKind {
    /// Index in the relation's `directly_related` (the first of its kind).
    pub(crate) restriction: usize,
    pub(crate) type_name: NameId,
    pub(crate) relation: Option<NameId>,
    pub(crate) wildcard: bool,
    /// For `type#relation`: that relation of `type`.
    pub(crate) userset: Option<RelIdx>,
    /// Whether some restriction of this kind has no condition.
    pub(crate) plain_ok: bool,
}

/// A rewrite with resolved references.
#[derive(Debug, Clone)]
pub(crate) enum CNode {
    This,
    /// Another relation of the same type (`None`: undefined).
    Computed(Option<RelIdx>),
    /// `computed from tupleset`; per kind of the tupleset, the computed relation
    /// on that kind's type (`None`: the type lacks it, or the kind is a
    /// userset or a wildcard).
    Ttu {
        tupleset: Option<RelIdx>,
        targets: Vec<Option<RelIdx>>,
    },
    Union(Vec<CNode>),
    Intersection(Vec<CNode>),
    Difference(Box<CNode>, Box<CNode>),
}

/// A compiled relation.
#[derive(Debug, Clone)]
pub(crate) struct CRel {
    pub(crate) type_pos: usize,
    pub(crate) rel_pos: usize,
    pub(crate) type_name: NameId,
    pub(crate) name: NameId,
    pub(crate) rewrite: CNode,
    pub(crate) kinds: Vec<CKind>,
}

/// The compiled model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Compiled {
    pub(crate) names: Vec<String>,
    pub(crate) rels: Vec<CRel>,
    /// Index of each type's first relation, by type position.
    type_first: Vec<RelIdx>,
    /// Name → id.
    ids: HashMap<String, NameId, FoldBuild>,
}

impl Compiled {
    pub(crate) fn build(data: &ModelData) -> Self {
        let mut c = Self::default();
        let mut index: HashMap<(String, String), RelIdx, FoldBuild> = HashMap::default();
        let name = |c: &mut Self, s: &str| -> NameId {
            if let Some(id) = c.ids.get(s) {
                return *id;
            }
            let id = NameId::try_from(c.names.len()).unwrap_or(NameId::MAX);
            c.names.push(s.to_owned());
            c.ids.insert(s.to_owned(), id);
            id
        };
        // Number every relation first, then resolve references.
        for (type_pos, t) in data.types.iter().enumerate() {
            let type_name = name(&mut c, &t.name);
            c.type_first
                .push(RelIdx::try_from(c.rels.len()).unwrap_or(RelIdx::MAX));
            for (rel_pos, r) in t.relations.iter().enumerate() {
                let idx = RelIdx::try_from(c.rels.len()).unwrap_or(RelIdx::MAX);
                let rel_name = name(&mut c, &r.name);
                index.insert((t.name.clone(), r.name.clone()), idx);
                c.rels.push(CRel {
                    type_pos,
                    rel_pos,
                    type_name,
                    name: rel_name,
                    rewrite: CNode::This,
                    kinds: Vec::new(),
                });
            }
        }
        let lookup = |t: &str, r: &str| index.get(&(t.to_owned(), r.to_owned())).copied();
        for t in &data.types {
            for r in &t.relations {
                let Some(idx) = lookup(&t.name, &r.name) else {
                    continue;
                };
                let mut kinds = Vec::new();
                for i in distinct_kinds(r) {
                    let Some(k) = r.directly_related.get(i) else {
                        continue;
                    };
                    let type_name = name(&mut c, &k.type_name);
                    let relation = k.relation.as_deref().map(|x| name(&mut c, x));
                    let userset = k.relation.as_deref().and_then(|x| lookup(&k.type_name, x));
                    let plain_ok = r.directly_related.iter().any(|o| {
                        o.condition.is_none()
                            && o.type_name == k.type_name
                            && o.relation == k.relation
                            && o.wildcard == k.wildcard
                    });
                    kinds.push(CKind {
                        restriction: i,
                        type_name,
                        relation,
                        wildcard: k.wildcard,
                        userset,
                        plain_ok,
                    });
                }
                let rewrite = compile(data, &lookup, &t.name, &r.rewrite);
                if let Some(slot) = c.rels.get_mut(idx as usize) {
                    slot.kinds = kinds;
                    slot.rewrite = rewrite;
                }
            }
        }
        c
    }

    /// The index of relation number `rel_pos` of the type at `type_pos`.
    pub(crate) fn at(&self, type_pos: usize, rel_pos: usize) -> Option<RelIdx> {
        let first = *self.type_first.get(type_pos)?;
        let idx = first.checked_add(RelIdx::try_from(rel_pos).ok()?)?;
        let r = self.rel(idx)?;
        (r.type_pos == type_pos && r.rel_pos == rel_pos).then_some(idx)
    }

    /// The id of a name, if the model uses it.
    pub(crate) fn name_id(&self, s: &str) -> Option<NameId> {
        self.ids.get(s).copied()
    }

    pub(crate) fn rel(&self, idx: RelIdx) -> Option<&CRel> {
        self.rels.get(idx as usize)
    }

    pub(crate) fn name(&self, id: NameId) -> &str {
        self.names.get(id as usize).map_or("", String::as_str)
    }
}

fn compile(
    data: &ModelData,
    lookup: &dyn Fn(&str, &str) -> Option<RelIdx>,
    type_name: &str,
    u: &Userset,
) -> CNode {
    match u {
        Userset::This => CNode::This,
        Userset::Computed(r) => CNode::Computed(lookup(type_name, r)),
        Userset::TupleToUserset { tupleset, computed } => {
            let targets = data
                .relation(type_name, tupleset)
                .map(|ts_def| {
                    distinct_kinds(ts_def)
                        .into_iter()
                        .map(|i| {
                            ts_def.directly_related.get(i).and_then(|k| {
                                if k.relation.is_some() || k.wildcard {
                                    None
                                } else {
                                    lookup(&k.type_name, computed)
                                }
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            CNode::Ttu {
                tupleset: lookup(type_name, tupleset),
                targets,
            }
        }
        Userset::Union(c) => {
            let mut children: Vec<CNode> = c
                .iter()
                .map(|x| compile(data, lookup, type_name, x))
                .collect();
            // Any true child decides a union: try the cheap ones first. Direct
            // tuples are one read; a tupleset hop reaches few parents, whose
            // results are shared through the memo; a computed relation on the
            // same object walks its whole rewrite.
            children.sort_by_key(|n| match n {
                CNode::This => 0,
                CNode::Ttu { .. } => 1,
                CNode::Computed(_) => 2,
                _ => 3,
            });
            CNode::Union(children)
        }
        Userset::Intersection(c) => CNode::Intersection(
            c.iter()
                .map(|x| compile(data, lookup, type_name, x))
                .collect(),
        ),
        Userset::Difference { base, subtract } => CNode::Difference(
            Box::new(compile(data, lookup, type_name, base)),
            Box::new(compile(data, lookup, type_name, subtract)),
        ),
    }
}

/// Indexes of the first restriction of each distinct kind (conditions aside).
pub(crate) fn distinct_kinds(rel: &RelationDefinition) -> Vec<usize> {
    let mut kinds: Vec<usize> = Vec::new();
    for (i, r) in rel.directly_related.iter().enumerate() {
        let dup = kinds.iter().any(|k| {
            rel.directly_related.get(*k).is_some_and(|k| {
                k.type_name == r.type_name && k.relation == r.relation && k.wildcard == r.wildcard
            })
        });
        if !dup {
            kinds.push(i);
        }
    }
    kinds
}
