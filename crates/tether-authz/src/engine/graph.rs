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

/// The positive leaves of a rewrite (subtracted parts are skipped). With
/// `every_child` false, only the first child of an intersection is taken.
pub(crate) fn leaves(rewrite: &Userset, every_child: bool) -> Vec<(Leaf<'_>, Mode)> {
    let mut out = Vec::new();
    collect(rewrite, Mode::Sure, every_child, &mut out);
    out
}

fn collect<'a>(u: &'a Userset, mode: Mode, every: bool, out: &mut Vec<(Leaf<'a>, Mode)>) {
    match u {
        Userset::This => out.push((Leaf::This, mode)),
        Userset::Computed(r) => out.push((Leaf::Computed(r), mode)),
        Userset::TupleToUserset { tupleset, computed } => {
            out.push((Leaf::Ttu { tupleset, computed }, mode))
        }
        Userset::Union(children) => children.iter().for_each(|c| collect(c, mode, every, out)),
        Userset::Intersection(children) => {
            // Every member is in the first child: it alone yields the candidates,
            // unless wildcards there hide the concrete users (ListUsers).
            let take = if every { children.len() } else { 1 };
            children
                .iter()
                .take(take)
                .for_each(|c| collect(c, Mode::Verify, every, out));
        }
        Userset::Difference { base, .. } => collect(base, Mode::Verify, every, out),
    }
}
