//! The platform-managed KEK: an organization key wrapped by the root key, used in process.

use tether_crypto::{DataKey, KekProvider, KekRef, LocalKek, WrappedDek};

use super::{AsyncKek, KekFuture};

/// A [`LocalKek`] behind the async trait (no I/O).
pub struct LocalAsyncKek(pub LocalKek);

impl AsyncKek for LocalAsyncKek {
    fn kek_ref(&self) -> &KekRef {
        self.0.kek_ref()
    }

    fn wrap<'a>(&'a self, dek: &'a DataKey) -> KekFuture<'a, WrappedDek> {
        Box::pin(std::future::ready(self.0.wrap_dek(dek)))
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedDek) -> KekFuture<'a, DataKey> {
        Box::pin(std::future::ready(self.0.unwrap_dek(wrapped)))
    }
}
