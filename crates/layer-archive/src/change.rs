//! A filesystem change between a layer and its parent, as `docker diff` prints it.

use std::fmt;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Changed in place (`C`).
    Modify,
    /// Added (`A`).
    Add,
    /// Deleted (`D`).
    Delete,
}

impl ChangeKind {
    /// The one-letter form: `C`, `A` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modify => 'C',
            ChangeKind::Add => 'A',
            ChangeKind::Delete => 'D',
        }
    }
}

/// One change: an absolute path (starting with `/`) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    /// Absolute path inside the layer, e.g. `/etc/hosts`. Raw bytes as on disk.
    pub path: std::path::PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.letter(), self.path.display())
    }
}
