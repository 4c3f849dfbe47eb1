//! Leaves of relation rewrites, tagged with how they contribute to the relation.

use crate::model::Userset;

/// How a leaf contributes to its relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Only unions above it: reaching the leaf proves the relation.
    Sure,
    /// Under an intersection or a difference base: a candidate to verify with Check.
    Verify,
}

/// A leaf of a rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf<'a> {
    /// Direct assignment.
    This,
    /// Computed userset.
    Computed(&'a str),
    /// Tuple to userset.
    Ttu {
        tupleset: &'a str,
        computed: &'a str,
    },
}

/// The positive leaves of a rewrite (subtracted parts are skipped).
pub(crate) fn leaves(rewrite: &Userset) -> Vec<(Leaf<'_>, Mode)> {
    let mut out = Vec::new();
    collect(rewrite, Mode::Sure, &mut out);
    out
}

fn collect<'a>(u: &'a Userset, mode: Mode, out: &mut Vec<(Leaf<'a>, Mode)>) {
    match u {
        Userset::This => out.push((Leaf::This, mode)),
        Userset::Computed(r) => out.push((Leaf::Computed(r), mode)),
        Userset::TupleToUserset { tupleset, computed } => {
            out.push((Leaf::Ttu { tupleset, computed }, mode))
        }
        Userset::Union(children) => children.iter().for_each(|c| collect(c, mode, out)),
        Userset::Intersection(children) => {
            // Every member is in the first child: it alone yields the candidates.
            if let Some(first) = children.first() {
                collect(first, Mode::Verify, out);
            }
        }
        Userset::Difference { base, .. } => collect(base, Mode::Verify, out),
    }
}
