//! Owners a process cannot set, kept in an xattr: containers/storage's
//! `user.containers.override_stat`.
//!
//! In a user namespace that maps a single ID (an unprivileged user without subordinate IDs),
//! every file is created owned by that one ID: `chown` to anything else fails. Rather than
//! lose a layer's owners, the applier then records the tar's owner and mode on the file in
//! this xattr, and archiving from disk (`rw diff`, commit) reads them back from it. The value
//! is containers/storage's format, `uid:gid:mode:type` (`1000:1000:0644:file`, mode in octal
//! with four digits), so rootless Podman and fuse-overlayfs read our layers' owners too.
//!
//! Only regular files and directories can carry it (the kernel refuses `user.*` xattrs on
//! symlinks, devices and FIFOs); the owners of those stay in the layer's tar-split metadata,
//! which is what its exported tar is rebuilt from anyway.
//!
//! ```
//! use layer_archive::override_stat::OverrideStat;
//!
//! let st = OverrideStat { uid: 1000, gid: 1000, mode: 0o4755, kind: "file".into() };
//! assert_eq!(st.to_string(), "1000:1000:4755:file");
//! assert_eq!("1000:1000:4755:file".parse::<OverrideStat>().unwrap(), st);
//! // The older three-field form is read too.
//! assert_eq!("0:5:0755".parse::<OverrideStat>().unwrap().gid, 5);
//! ```

use std::fmt;
use std::str::FromStr;

/// The xattr's name.
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// A decoded `user.containers.override_stat` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideStat {
    /// The owner's UID.
    pub uid: u32,
    /// The owner's GID.
    pub gid: u32,
    /// Permission and special bits (`0o7777` at most).
    pub mode: u32,
    /// containers/storage's type word: `file`, `dir`, `symlink`, `pipe`, `socket`,
    /// `block-M-m`, `char-M-m` (empty when the value had none).
    pub kind: String,
}

impl fmt::Display for OverrideStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{:04o}", self.uid, self.gid, self.mode & 0o7777)?;
        if !self.kind.is_empty() {
            write!(f, ":{}", self.kind)?;
        }
        Ok(())
    }
}

/// A value that is not `uid:gid:mode[:type]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {OVERRIDE_STAT_XATTR} value {0:?}")]
pub struct BadOverrideStat(pub String);

impl FromStr for OverrideStat {
    type Err = BadOverrideStat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadOverrideStat(s.to_string());
        let mut parts = s.splitn(4, ':');
        let mut next = || parts.next().ok_or_else(bad);
        let uid = next()?.parse::<u32>().map_err(|_| bad())?;
        let gid = next()?.parse::<u32>().map_err(|_| bad())?;
        let mode = u32::from_str_radix(next()?, 8).map_err(|_| bad())?;
        if mode > 0o7777 {
            return Err(bad());
        }
        let kind = parts.next().unwrap_or("").to_string();
        Ok(OverrideStat {
            uid,
            gid,
            mode,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_containers_storage() {
        let st = |mode, kind: &str| OverrideStat {
            uid: 1001,
            gid: 1012,
            mode,
            kind: kind.into(),
        };
        assert_eq!(st(0o755, "dir").to_string(), "1001:1012:0755:dir");
        assert_eq!(st(0o644, "file").to_string(), "1001:1012:0644:file");
        assert_eq!(st(0o600, "").to_string(), "1001:1012:0600");
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in ["", "1:2", "a:2:0644", "1:2:0999", "1:2:17777", "-1:2:0644"] {
            assert!(bad.parse::<OverrideStat>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "1:2:0644:char-1-3".parse::<OverrideStat>().unwrap().kind,
            "char-1-3"
        );
    }
}
