//! Property tests: DSL print/parse identity, and Check / ListObjects /
//! ListUsers against a naive set-based reference evaluator.

#![expect(
    clippy::indexing_slicing,
    reason = "the reference evaluator indexes small fixed-size tables"
)]
#![expect(
    clippy::needless_range_loop,
    reason = "indices name documents and relations"
)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tether_authz::dsl::{parse_dsl, print_dsl};
use tether_authz::model::{
    ModelData, RelationDefinition, TypeDefinition, TypeRestriction, Userset,
};
use tether_authz::{
    AuthorizationModel, CheckRequest, Engine, ListObjectsRequest, ListUsersRequest,
    MemoryTupleStore, Tuple, UserFilter,
};

// ---------------------------------------------------------------- print/parse identity

fn leaf() -> impl Strategy<Value = Userset> {
    prop_oneof![
        (0..4usize).prop_map(|i| Userset::Computed(format!("r{i}"))),
        (0..4usize, 0..4usize).prop_map(|(a, b)| Userset::TupleToUserset {
            tupleset: format!("r{a}"),
            computed: format!("r{b}"),
        }),
    ]
}

fn compound() -> impl Strategy<Value = Userset> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Userset::Union),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Userset::Intersection),
            (inner.clone(), inner).prop_map(|(b, s)| Userset::Difference {
                base: Box::new(b),
                subtract: Box::new(s)
            }),
        ]
    })
}

fn restriction() -> impl Strategy<Value = TypeRestriction> {
    (0..3usize, 0..3usize, any::<bool>()).prop_map(|(t, kind, cond)| TypeRestriction {
        type_name: format!("t{t}"),
        relation: (kind == 1).then(|| "r0".to_owned()),
        wildcard: kind == 2,
        condition: cond.then(|| "c".to_owned()),
    })
}

fn relation(name: String) -> impl Strategy<Value = RelationDefinition> {
    (
        any::<bool>(),
        prop::collection::vec(restriction(), 1..3),
        prop::option::of(compound()),
        0..3usize,
    )
        .prop_map(move |(direct, types, rest, op)| {
            let rewrite = match (direct, rest) {
                (true, None) => Userset::This,
                (false, Some(r)) => r,
                (false, None) => Userset::Computed("r0".into()),
                (true, Some(r)) => match op {
                    0 => Userset::Union(vec![Userset::This, r]),
                    1 => Userset::Intersection(vec![Userset::This, r]),
                    _ => Userset::Difference {
                        base: Box::new(Userset::This),
                        subtract: Box::new(r),
                    },
                },
            };
            let directly_related = if rewrite.contains_this() {
                types
            } else {
                Vec::new()
            };
            RelationDefinition {
                name: name.clone(),
                rewrite,
                directly_related,
            }
        })
}

fn model_data() -> impl Strategy<Value = ModelData> {
    let rels = (
        relation("r0".into()),
        relation("r1".into()),
        relation("r2".into()),
    );
    prop::collection::vec(rels, 1..4).prop_map(|types| {
        let types = types
            .into_iter()
            .enumerate()
            .map(|(i, (a, b, c))| TypeDefinition {
                name: format!("t{i}"),
                relations: vec![a, b, c],
            })
            .collect();
        ModelData {
            schema_version: "1.1".into(),
            types,
            conditions: BTreeMap::new(),
            ..ModelData::default()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dsl_print_parse_identity(data in model_data()) {
        let text = print_dsl(&data);
        let (parsed, _) = parse_dsl(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed, data);
    }

    #[test]
    fn dsl_parser_never_panics(s in "\\PC{0,200}") {
        let _ = AuthorizationModel::from_dsl(&s);
    }
}

// ---------------------------------------------------------------- reference evaluator

/// Relations r0..r3 of `doc`, each built from earlier ones (stratified), plus
/// recursive groups and a TTU through `parent`.
#[derive(Debug, Clone)]
enum Expr {
    Direct,
    Rel(usize),
    ViaParent(usize),
    Or(usize, usize),
    And(usize, usize),
    ButNot(usize, usize),
}

fn expr_for(i: usize) -> BoxedStrategy<Expr> {
    if i == 0 {
        return Just(Expr::Direct).boxed();
    }
    let j = 0..i;
    prop_oneof![
        Just(Expr::Direct),
        j.clone().prop_map(Expr::Rel),
        j.clone().prop_map(Expr::ViaParent),
        (j.clone(), j.clone()).prop_map(|(a, b)| if a == b {
            Expr::Rel(a)
        } else {
            Expr::Or(a, b)
        }),
        (j.clone(), j.clone()).prop_map(|(a, b)| if a == b {
            Expr::Rel(a)
        } else {
            Expr::And(a, b)
        }),
        (j.clone(), j).prop_map(|(a, b)| if a == b {
            Expr::Rel(a)
        } else {
            Expr::ButNot(a, b)
        }),
    ]
    .boxed()
}

fn dsl_for(exprs: &[Expr]) -> String {
    let mut s = String::from(
        "model\n  schema 1.1\ntype user\ntype group\n  relations\n    define member: [user, user:*, group#member]\ntype doc\n  relations\n    define parent: [doc]\n",
    );
    for (i, e) in exprs.iter().enumerate() {
        let body = match e {
            Expr::Direct => "[user, group#member]".to_owned(),
            Expr::Rel(j) => format!("[user] or r{j}"),
            Expr::ViaParent(j) => format!("[user] or r{j} from parent"),
            Expr::Or(a, b) => format!("r{a} or r{b}"),
            Expr::And(a, b) => format!("r{a} and r{b}"),
            Expr::ButNot(a, b) => format!("r{a} but not r{b}"),
        };
        s.push_str(&format!("    define r{i}: {body}\n"));
    }
    s
}

const DOCS: usize = 4;
const USERS: usize = 3;
const GROUPS: usize = 3;

#[derive(Debug, Clone)]
enum T {
    Member(usize, usize),
    MemberWild(usize),
    Nested(usize, usize),
    Parent(usize, usize),
    Direct(usize, usize, usize),
    GroupGrant(usize, usize, usize),
}

fn tuple_strategy(nrel: usize) -> impl Strategy<Value = T> {
    prop_oneof![
        (0..GROUPS, 0..USERS).prop_map(|(g, u)| T::Member(g, u)),
        (0..GROUPS).prop_map(T::MemberWild),
        (0..GROUPS, 0..GROUPS).prop_map(|(a, b)| T::Nested(a, b)),
        (0..DOCS, 0..DOCS).prop_map(|(a, b)| T::Parent(a, b)),
        (0..DOCS, 0..nrel, 0..USERS).prop_map(|(d, r, u)| T::Direct(d, r, u)),
        (0..DOCS, 0..nrel, 0..GROUPS).prop_map(|(d, r, g)| T::GroupGrant(d, r, g)),
    ]
}

fn to_tuple(t: &T, exprs: &[Expr]) -> Option<Tuple> {
    let direct_ok = |r: usize| {
        !matches!(
            exprs.get(r),
            Some(Expr::Or(..) | Expr::And(..) | Expr::ButNot(..))
        )
    };
    // A cycle met while evaluating a subtracted set denies (OpenFGA's rule,
    // pinned by the conformance suite); the reference evaluator computes plain
    // fixpoints, so models with `but not` get acyclic group nesting only.
    let has_exclusion = exprs.iter().any(|e| matches!(e, Expr::ButNot(..)));
    Some(match *t {
        T::Nested(a, b) if has_exclusion && a >= b => return None,
        T::Member(g, u) => Tuple::new(&format!("group:{g}"), "member", &format!("user:{u}")),
        T::MemberWild(g) => Tuple::new(&format!("group:{g}"), "member", "user:*"),
        T::Nested(a, b) => Tuple::new(
            &format!("group:{a}"),
            "member",
            &format!("group:{b}#member"),
        ),
        T::Parent(a, b) => Tuple::new(&format!("doc:{a}"), "parent", &format!("doc:{b}")),
        T::Direct(d, r, u) if direct_ok(r) => {
            Tuple::new(&format!("doc:{d}"), &format!("r{r}"), &format!("user:{u}"))
        }
        T::GroupGrant(d, r, g) if matches!(exprs.get(r), Some(Expr::Direct)) => Tuple::new(
            &format!("doc:{d}"),
            &format!("r{r}"),
            &format!("group:{g}#member"),
        ),
        _ => return None,
    })
}

/// Reference: sets of user ids per (doc, relation), computed bottom-up.
fn reference(exprs: &[Expr], tuples: &[T]) -> Vec<Vec<BTreeSet<usize>>> {
    let mut members: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); GROUPS];
    loop {
        let mut changed = false;
        for t in tuples {
            let (g, add): (usize, BTreeSet<usize>) = match *t {
                T::Member(g, u) => (g, [u].into()),
                T::MemberWild(g) => (g, (0..USERS).collect()),
                T::Nested(a, b) => (a, members[b].clone()),
                _ => continue,
            };
            let before = members[g].len();
            members[g].extend(add);
            changed |= members[g].len() != before;
        }
        if !changed {
            break;
        }
    }
    let mut sets: Vec<Vec<BTreeSet<usize>>> = vec![vec![BTreeSet::new(); exprs.len()]; DOCS];
    for (i, e) in exprs.iter().enumerate() {
        for d in 0..DOCS {
            let mut direct = BTreeSet::new();
            for t in tuples {
                match *t {
                    T::Direct(dd, r, u)
                        if dd == d
                            && r == i
                            && !matches!(e, Expr::Or(..) | Expr::And(..) | Expr::ButNot(..)) =>
                    {
                        direct.insert(u);
                    }
                    T::GroupGrant(dd, r, g) if dd == d && r == i && matches!(e, Expr::Direct) => {
                        direct.extend(members[g].iter().copied());
                    }
                    _ => {}
                }
            }
            let s = match *e {
                Expr::Direct => direct,
                Expr::Rel(j) => &direct | &sets[d][j],
                Expr::ViaParent(j) => {
                    let mut acc = direct;
                    for t in tuples {
                        if let T::Parent(a, b) = *t
                            && a == d
                        {
                            acc.extend(sets[b][j].iter().copied());
                        }
                    }
                    acc
                }
                Expr::Or(a, b) => &sets[d][a] | &sets[d][b],
                Expr::And(a, b) => &sets[d][a] & &sets[d][b],
                Expr::ButNot(a, b) => &sets[d][a] - &sets[d][b],
            };
            sets[d][i] = s;
        }
    }
    sets
}

fn scenario() -> impl Strategy<Value = (Vec<Expr>, Vec<T>)> {
    (1..5usize)
        .prop_flat_map(|n| (0..n).map(expr_for).collect::<Vec<_>>())
        .prop_flat_map(|exprs| {
            let n = exprs.len();
            (Just(exprs), prop::collection::vec(tuple_strategy(n), 0..16))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn check_matches_reference((exprs, tuples) in scenario()) {
        let dsl = dsl_for(&exprs);
        let model = AuthorizationModel::from_dsl(&dsl).map_err(|e| TestCaseError::fail(format!("{e}\n{dsl}")))?;
        let mut store = MemoryTupleStore::new();
        let mut kept = Vec::new();
        for t in &tuples {
            if let Some(tuple) = to_tuple(t, &exprs) {
                store.write_validated(&model, tuple).map_err(|e| TestCaseError::fail(e.to_string()))?;
                kept.push(t.clone());
            }
        }
        let want = reference(&exprs, &kept);
        let engine = Engine::default();
        for (d, rels) in want.iter().enumerate() {
            for (i, users) in rels.iter().enumerate() {
                for u in 0..USERS {
                    let req = CheckRequest::new(&format!("doc:{d}"), &format!("r{i}"), &format!("user:{u}"));
                    let got = engine.check(&model, &store, &req).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(got, users.contains(&u), "doc:{} r{} user:{}\n{}", d, i, u, dsl);
                }
                let lu = ListUsersRequest {
                    object: format!("doc:{d}"),
                    relation: format!("r{i}"),
                    user_filters: vec![UserFilter::parse("user")],
                    ..ListUsersRequest::default()
                };
                let got: BTreeSet<String> = engine.list_users(&model, &store, &lu).map_err(|e| TestCaseError::fail(e.to_string()))?.users.into_iter().filter(|u| u != "user:*").collect();
                let expect: BTreeSet<String> = users.iter().map(|u| format!("user:{u}")).collect();
                prop_assert!(got.is_subset(&expect), "list_users doc:{} r{}: {:?} vs {:?}\n{}", d, i, got, expect, dsl);
            }
        }
        for i in 0..exprs.len() {
            for u in 0..USERS {
                let lo = ListObjectsRequest {
                    object_type: "doc".into(),
                    relation: format!("r{i}"),
                    user: format!("user:{u}"),
                    ..ListObjectsRequest::default()
                };
                let got: BTreeSet<String> = engine.list_objects(&model, &store, &lo).map_err(|e| TestCaseError::fail(e.to_string()))?.objects.into_iter().collect();
                let expect: BTreeSet<String> = (0..DOCS).filter(|d| want[*d][i].contains(&u)).map(|d| format!("doc:{d}")).collect();
                prop_assert_eq!(got, expect, "list_objects r{} user:{}\n{}", i, u, dsl);
            }
        }
    }
}
