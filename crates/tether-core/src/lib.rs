//! Tether core types.
