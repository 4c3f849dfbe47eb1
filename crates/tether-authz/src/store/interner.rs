//! String interner: every distinct string is stored once and named by a `u32`.

use std::collections::HashMap;
use std::sync::Arc;

use super::hash::FoldBuild;
use crate::error::AuthzError;

/// Interned string id.
pub(crate) type Sym = u32;

/// Sentinel for "no symbol" (for example, no userset relation).
pub(crate) const NONE: Sym = u32::MAX;

#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, Sym, FoldBuild>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    #[inline]
    pub(crate) fn get(&self, s: &str) -> Option<Sym> {
        self.ids.get(s).copied()
    }

    pub(crate) fn intern(&mut self, s: &str) -> Result<Sym, AuthzError> {
        if let Some(id) = self.ids.get(s) {
            return Ok(*id);
        }
        let id = Sym::try_from(self.strings.len())
            .ok()
            .filter(|id| *id != NONE)
            .ok_or_else(|| AuthzError::LimitExceeded("too many distinct strings".into()))?;
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(arc.clone());
        self.ids.insert(arc, id);
        Ok(id)
    }

    #[inline]
    pub(crate) fn resolve(&self, id: Sym) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map_or("", |s| s)
    }

    #[inline]
    pub(crate) fn opt(&self, s: Option<&str>) -> Option<Sym> {
        match s {
            None => Some(NONE),
            Some(s) => self.get(s),
        }
    }
}

impl Interner {
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings: usize = self.strings.iter().map(|s| s.len() + 16).sum();
        let map = self.ids.capacity() * (std::mem::size_of::<Arc<str>>() + 4 + 1);
        strings + map + self.strings.capacity() * std::mem::size_of::<Arc<str>>()
    }
}
