//! In-memory tuple index for millions of tuples.
//!
//! Strings are interned to `u32` symbols. Each tuple is stored twice, as a
//! compact `(id, condition)` entry in two hash indexes:
//! * forward: `(object type, object id, relation, user type, user relation)` → user ids;
//! * reverse: `(user type, user id, user relation, relation, object type)` → object ids.
//!
//! A key with a single entry stores it inline, without a heap allocation.

use super::hash::FxBuild;
use super::interner::{Interner, NONE, Sym};
use super::{Subject, TupleReader, Visitor};
use crate::error::AuthzError;
use crate::model::AuthorizationModel;
use crate::tuple::{Tuple, TupleCondition, parse_object, parse_user, validate_tuple};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: Sym,
    cond: Sym,
}

#[derive(Debug, Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Self::One(e) => std::slice::from_ref(e),
            Self::Many(v) => v,
        }
    }

    fn push(&mut self, e: Entry) {
        match self {
            Self::One(first) => *self = Self::Many(vec![*first, e]),
            Self::Many(v) => v.push(e),
        }
    }

    /// Remove the entry with `id`; returns (removed, now empty).
    fn remove(&mut self, id: Sym) -> (bool, bool) {
        match self {
            Self::One(e) => (e.id == id, e.id == id),
            Self::Many(v) => match v.iter().position(|e| e.id == id) {
                Some(pos) => {
                    v.swap_remove(pos);
                    (true, v.is_empty())
                }
                None => (false, v.is_empty()),
            },
        }
    }
}

type Key = [Sym; 5];

/// An in-memory, indexed tuple store. `Send + Sync`; share it behind a lock.
#[derive(Debug, Default, Clone)]
pub struct MemoryTupleStore {
    strings: Interner,
    forward: HashMap<Key, Entries, FxBuild>,
    reverse: HashMap<Key, Entries, FxBuild>,
    conditions: Vec<TupleCondition>,
    condition_ids: HashMap<String, Sym>,
    len: usize,
}

/// Interned form of a tuple.
struct Ids {
    forward: Key,
    reverse: Key,
    user_id: Sym,
    object_id: Sym,
}

impl MemoryTupleStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored tuples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Build a store from tuples (no model validation).
    pub fn from_tuples<I: IntoIterator<Item = Tuple>>(tuples: I) -> Result<Self, AuthzError> {
        let mut store = Self::new();
        for t in tuples {
            store.write(t)?;
        }
        Ok(store)
    }

    /// Add a tuple. Returns `Ok(false)` if the same (object, relation, user) is
    /// already stored. Checks the syntax only; see [`Self::write_validated`].
    pub fn write(&mut self, t: Tuple) -> Result<bool, AuthzError> {
        let ids = self.intern(&t)?;
        if self.find_ids(&ids).is_some() {
            return Ok(false);
        }
        let cond = self.intern_condition(t.condition)?;
        let user = Entry {
            id: ids.user_id,
            cond,
        };
        let object = Entry {
            id: ids.object_id,
            cond,
        };
        push(&mut self.forward, ids.forward, user);
        push(&mut self.reverse, ids.reverse, object);
        self.len += 1;
        Ok(true)
    }

    /// Validate a tuple against `model` (error 2027), then add it.
    pub fn write_validated(
        &mut self,
        model: &AuthorizationModel,
        t: Tuple,
    ) -> Result<bool, AuthzError> {
        validate_tuple(model, &t)?;
        self.write(t)
    }

    /// Remove a tuple (matched on object, relation and user). Returns whether it existed.
    pub fn delete(&mut self, t: &Tuple) -> bool {
        let Some(ids) = self.lookup(t) else {
            return false;
        };
        let removed = remove(&mut self.forward, &ids.forward, ids.user_id);
        if removed {
            remove(&mut self.reverse, &ids.reverse, ids.object_id);
            self.len = self.len.saturating_sub(1);
        }
        removed
    }

    /// Approximate heap bytes used by the indexes and strings (for benchmarks).
    pub fn approximate_heap_bytes(&self) -> usize {
        let key = std::mem::size_of::<Key>() + std::mem::size_of::<Entries>() + 1;
        let vec_bytes = |m: &HashMap<Key, Entries, FxBuild>| -> usize {
            m.values()
                .map(|e| match e {
                    Entries::One(_) => 0,
                    Entries::Many(v) => v.capacity() * std::mem::size_of::<Entry>(),
                })
                .sum()
        };
        let maps = (self.forward.capacity() + self.reverse.capacity()) * key;
        maps + vec_bytes(&self.forward) + vec_bytes(&self.reverse) + self.strings.heap_bytes()
    }

    fn intern(&mut self, t: &Tuple) -> Result<Ids, AuthzError> {
        let bad = |reason: String| AuthzError::InvalidTuple {
            tuple: t.to_string(),
            reason,
        };
        let object = parse_object(&t.object).map_err(bad)?;
        let user = parse_user(&t.user).map_err(bad)?;
        let s = &mut self.strings;
        let (ot, oid, rel) = (
            s.intern(object.object_type)?,
            s.intern(object.id)?,
            s.intern(&t.relation)?,
        );
        let (ut, uid) = (s.intern(user.user_type())?, s.intern(user.id())?);
        let urel = match user.relation() {
            Some(r) => s.intern(r)?,
            None => NONE,
        };
        Ok(make_ids(ot, oid, rel, ut, uid, urel))
    }

    fn lookup(&self, t: &Tuple) -> Option<Ids> {
        let object = parse_object(&t.object).ok()?;
        let user = parse_user(&t.user).ok()?;
        let s = &self.strings;
        let ids = make_ids(
            s.get(object.object_type)?,
            s.get(object.id)?,
            s.get(&t.relation)?,
            s.get(user.user_type())?,
            s.get(user.id())?,
            s.opt(user.relation())?,
        );
        Some(ids)
    }

    fn intern_condition(&mut self, c: Option<TupleCondition>) -> Result<Sym, AuthzError> {
        let Some(c) = c.filter(|c| !c.name.is_empty()) else {
            return Ok(NONE);
        };
        let key = format!(
            "{}\u{0}{}",
            c.name,
            serde_json::Value::Object(c.context.clone())
        );
        if let Some(id) = self.condition_ids.get(&key) {
            return Ok(*id);
        }
        let id = Sym::try_from(self.conditions.len())
            .ok()
            .filter(|id| *id != NONE)
            .ok_or_else(|| {
                AuthzError::LimitExceeded("too many distinct tuple conditions".into())
            })?;
        self.conditions.push(c);
        self.condition_ids.insert(key, id);
        Ok(id)
    }

    fn condition(&self, id: Sym) -> Option<&TupleCondition> {
        if id == NONE {
            return None;
        }
        usize::try_from(id)
            .ok()
            .and_then(|i| self.conditions.get(i))
    }

    /// Find the condition id of the tuple named by `ids`, if stored.
    fn find_ids(&self, ids: &Ids) -> Option<Sym> {
        let users = self
            .forward
            .get(&ids.forward)
            .map_or(&[][..], Entries::as_slice);
        if users.len() <= 8 {
            // Short lists (the common case) are scanned without the second lookup.
            return users.iter().find(|e| e.id == ids.user_id).map(|e| e.cond);
        }
        let objects = self
            .reverse
            .get(&ids.reverse)
            .map_or(&[][..], Entries::as_slice);
        if users.len() <= objects.len() {
            users.iter().find(|e| e.id == ids.user_id).map(|e| e.cond)
        } else {
            objects
                .iter()
                .find(|e| e.id == ids.object_id)
                .map(|e| e.cond)
        }
    }

    fn visit_entries<'s>(&'s self, entries: Option<&'s Entries>, visit: &mut Visitor<'_, 's>) {
        let Some(entries) = entries else {
            return;
        };
        for e in entries.as_slice() {
            let flow = visit(self.strings.resolve(e.id), self.condition(e.cond));
            if flow.is_break() {
                return;
            }
        }
    }
}

fn make_ids(ot: Sym, oid: Sym, rel: Sym, ut: Sym, uid: Sym, urel: Sym) -> Ids {
    Ids {
        forward: [ot, oid, rel, ut, urel],
        reverse: [ut, uid, urel, rel, ot],
        user_id: uid,
        object_id: oid,
    }
}

fn push(map: &mut HashMap<Key, Entries, FxBuild>, key: Key, e: Entry) {
    match map.get_mut(&key) {
        Some(entries) => entries.push(e),
        None => {
            map.insert(key, Entries::One(e));
        }
    }
}

fn remove(map: &mut HashMap<Key, Entries, FxBuild>, key: &Key, id: Sym) -> bool {
    let Some(entries) = map.get_mut(key) else {
        return false;
    };
    let (removed, empty) = entries.remove(id);
    if empty {
        map.remove(key);
    }
    removed
}

impl TupleReader for MemoryTupleStore {
    fn read_users<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        user_type: &str,
        user_relation: Option<&str>,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError> {
        let s = &self.strings;
        let key = (|| {
            Some([
                s.get(object_type)?,
                s.get(object_id)?,
                s.get(relation)?,
                s.get(user_type)?,
                s.opt(user_relation)?,
            ])
        })();
        if let Some(key) = key {
            self.visit_entries(self.forward.get(&key), visit);
        }
        Ok(())
    }

    fn read_objects<'s>(
        &'s self,
        subject: Subject<'_>,
        relation: &str,
        object_type: &str,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError> {
        let s = &self.strings;
        let key = (|| {
            Some([
                s.get(subject.user_type)?,
                s.get(subject.user_id)?,
                s.opt(subject.user_relation)?,
                s.get(relation)?,
                s.get(object_type)?,
            ])
        })();
        if let Some(key) = key {
            self.visit_entries(self.reverse.get(&key), visit);
        }
        Ok(())
    }

    fn find<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        subject: Subject<'_>,
    ) -> Result<Option<Option<&'s TupleCondition>>, AuthzError> {
        let s = &self.strings;
        let ids = (|| {
            Some(make_ids(
                s.get(object_type)?,
                s.get(object_id)?,
                s.get(relation)?,
                s.get(subject.user_type)?,
                s.get(subject.user_id)?,
                s.opt(subject.user_relation)?,
            ))
        })();
        Ok(ids
            .and_then(|ids| self.find_ids(&ids))
            .map(|c| self.condition(c)))
    }

    fn as_memory(&self) -> Option<&MemoryTupleStore> {
        Some(self)
    }
}

/// A per-request view of a [`MemoryTupleStore`] for the engine: the model's
/// names (by id) are resolved to the store's symbols once per request, and
/// object ids are cached by address. Every string the engine passes lives,
/// unmodified, for the whole request, so an address and a length name one
/// content; the caches are dropped with the request.
pub(crate) struct SymReader<'s> {
    store: &'s MemoryTupleStore,
    names: &'s [String],
    /// Per model name: `None` not looked up yet, `Some(None)` not in the store.
    name_syms: Vec<Option<Option<Sym>>>,
    ids: HashMap<(usize, usize), Option<Sym>, FxBuild>,
    /// The two most recent id lookups.
    recent: [((usize, usize), Option<Sym>); 2],
}

impl<'s> SymReader<'s> {
    pub(crate) fn new(store: &'s MemoryTupleStore, names: &'s [String]) -> Self {
        Self {
            store,
            names,
            name_syms: vec![None; names.len()],
            ids: HashMap::with_capacity_and_hasher(16, FxBuild::default()),
            recent: [((0, usize::MAX), None); 2],
        }
    }

    #[inline]
    fn name(&mut self, id: u32) -> Option<Sym> {
        let i = id as usize;
        if let Some(Some(hit)) = self.name_syms.get(i) {
            return *hit;
        }
        let found = self.names.get(i).and_then(|n| self.store.strings.get(n));
        if let Some(slot) = self.name_syms.get_mut(i) {
            *slot = Some(found);
        }
        found
    }

    #[inline]
    fn id(&mut self, s: &str) -> Option<Sym> {
        let key = (s.as_ptr() as usize, s.len());
        // Reads come in runs on the same object, and the user's id recurs.
        for (k, v) in &self.recent {
            if *k == key {
                return *v;
            }
        }
        let found = match self.ids.get(&key) {
            Some(hit) => *hit,
            None => {
                let found = self.store.strings.get(s);
                self.ids.insert(key, found);
                found
            }
        };
        self.recent.swap(0, 1);
        self.recent[0] = (key, found);
        found
    }

    /// As [`TupleReader::read_users`], with model names by id.
    pub(crate) fn read_users(
        &mut self,
        object_type: u32,
        object_id: &str,
        relation: u32,
        user_type: u32,
        user_relation: Option<u32>,
        mut visit: impl FnMut(&'s str, Option<&'s TupleCondition>),
    ) {
        let key = (|| {
            let urel = match user_relation {
                Some(r) => self.name(r)?,
                None => NONE,
            };
            Some([
                self.name(object_type)?,
                self.id(object_id)?,
                self.name(relation)?,
                self.name(user_type)?,
                urel,
            ])
        })();
        let store = self.store;
        if let Some(entries) = key.and_then(|k| store.forward.get(&k)) {
            for e in entries.as_slice() {
                visit(store.strings.resolve(e.id), store.condition(e.cond));
            }
        }
    }

    /// As [`TupleReader::read_objects`]; the ids handed out are remembered
    /// with their symbols, so later reads on those objects skip the interner.
    pub(crate) fn read_objects(
        &mut self,
        subject: Subject<'_>,
        relation: &str,
        object_type: &str,
        mut visit: impl FnMut(&'s str, Option<&'s TupleCondition>),
    ) {
        let key = (|| {
            let urel = match subject.user_relation {
                Some(r) => self.id(r)?,
                None => NONE,
            };
            Some([
                self.id(subject.user_type)?,
                self.id(subject.user_id)?,
                urel,
                self.id(relation)?,
                self.id(object_type)?,
            ])
        })();
        let store = self.store;
        if let Some(entries) = key.and_then(|k| store.reverse.get(&k)) {
            let entries = entries.as_slice();
            self.ids.reserve(entries.len());
            for e in entries {
                let id = store.strings.resolve(e.id);
                self.ids
                    .insert((id.as_ptr() as usize, id.len()), Some(e.id));
                visit(id, store.condition(e.cond));
            }
        }
    }

    /// As [`TupleReader::find`] for a plain user or wildcard, with model names by id.
    pub(crate) fn find(
        &mut self,
        object_type: u32,
        object_id: &str,
        relation: u32,
        user_type: u32,
        user_id: &str,
    ) -> Option<Option<&'s TupleCondition>> {
        let ids = make_ids(
            self.name(object_type)?,
            self.id(object_id)?,
            self.name(relation)?,
            self.name(user_type)?,
            self.id(user_id)?,
            NONE,
        );
        let store = self.store;
        store.find_ids(&ids).map(|c| store.condition(c))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn write_find_delete() {
        assert_send_sync::<MemoryTupleStore>();
        let mut s = MemoryTupleStore::new();
        assert!(s.write(Tuple::new("doc:1", "viewer", "user:a")).unwrap());
        assert!(!s.write(Tuple::new("doc:1", "viewer", "user:a")).unwrap());
        assert!(
            s.write(Tuple::new("doc:1", "viewer", "group:g#member"))
                .unwrap()
        );
        assert_eq!(s.len(), 2);
        let subj = Subject {
            user_type: "user",
            user_id: "a",
            user_relation: None,
        };
        assert!(s.find("doc", "1", "viewer", subj).unwrap().is_some());
        let mut seen = Vec::new();
        s.read_objects(subj, "viewer", "doc", &mut |id, _| {
            seen.push(id.to_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen, vec!["1"]);
        assert!(s.delete(&Tuple::new("doc:1", "viewer", "user:a")));
        assert!(!s.delete(&Tuple::new("doc:1", "viewer", "user:a")));
        assert!(s.find("doc", "1", "viewer", subj).unwrap().is_none());
        assert_eq!(s.len(), 1);
        assert!(s.write(Tuple::new("bad", "viewer", "user:a")).is_err());
    }
}
