//! Syntax and semantic validation cases (filled in later).
use std::path::Path;

use super::Tally;

pub fn run(_dir: &Path, _tally: &mut Tally) {}
