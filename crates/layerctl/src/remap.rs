//! `--userns-remap USER[:GROUP]`: what dockerd's flag means, resolved the way dockerd 20.10
//! resolves it (`parseRemappedRoot`, `setupRemappedRoot`, `idtools.NewIdentityMapping`).
//!
//! * `USER` is a name or a numeric UID, `GROUP` a name or a numeric GID; both must exist. A
//!   numeric UID alone takes the same number as its GID; a name alone, the group of that name.
//! * `default` is the `dockremap` user. When it does not exist it is created as dockerd creates
//!   it: a system user and group (`adduser --system … --group dockremap`, or `useradd -r`),
//!   then 65536 subordinate UIDs and GIDs from the first free block at or above 100000
//!   (`usermod --add-subuids/--add-subgids`). That is a change to the host's `/etc/passwd`,
//!   `/etc/group`, `/etc/subuid` and `/etc/subgid`, made only for `default`, and said on stderr.
//! * `root` (or UID 0) turns remapping off, with dockerd's warning.
//! * The ranges are the user's lines in `/etc/subuid` and `/etc/subgid` (by UID first, then by
//!   name), container IDs counted from 0 across them in file order. As in dockerd 20.10,
//!   `/etc/subgid` is read for the *user*: the group only has to exist.

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use graphdriver::IdMapping;
use layer_archive::idmap::{SubIdFile, SubIdRange, parse_subid_ranges};

use crate::users::{Key, lookup_group, lookup_user};

const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";
/// dockerd's `defaultRemappedID`.
const DEFAULT_USER: &str = "dockremap";
/// dockerd's range for a user it creates.
const DEFAULT_RANGE_START: u64 = 100_000;
const DEFAULT_RANGE_LEN: u64 = 65_536;

/// A resolved `--userns-remap`.
#[derive(Debug, Clone)]
pub struct Remap {
    /// `user:group` as dockerd records it.
    pub spec: String,
    /// The user's ranges.
    pub ids: IdMapping,
}

/// Resolves a `--userns-remap` value. `None`: remapping is off (`root`).
pub fn resolve(spec: &str) -> Result<Option<Remap>> {
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        bail!("invalid user/group specification in --userns-remap: {spec:?}");
    }
    let (user, group) = match parse_id(parts[0]) {
        Some(uid) => {
            let user = lookup_user(Key::Id(uid)).with_context(|| {
                format!("--userns-remap: uid {uid} has no entry in /etc/passwd")
            })?;
            let group = match parts.get(1) {
                Some(g) => group_of(g)?,
                None => {
                    lookup_group(Key::Id(uid))
                        .with_context(|| {
                            format!("--userns-remap: gid {uid} has no entry in /etc/group")
                        })?
                        .name
                }
            };
            (user, group)
        }
        None => {
            let name = if parts[0] == "default" {
                DEFAULT_USER
            } else {
                parts[0]
            };
            let user = match lookup_user(Key::Name(name)) {
                Ok(u) => u,
                Err(_) if parts[0] == "default" => {
                    create_default_user()?;
                    lookup_user(Key::Name(name))?
                }
                Err(e) => {
                    return Err(e.context(format!("--userns-remap: no user {name:?}")));
                }
            };
            let group = match parts.get(1) {
                Some(g) => group_of(g)?,
                None => {
                    lookup_group(Key::Name(name))
                        .with_context(|| format!("--userns-remap: no group {name:?}"))?
                        .name
                }
            };
            (user, group)
        }
    };
    if user.name == "root" || user.uid == 0 {
        eprintln!(
            "warning: --userns-remap: root cannot be remapped with itself; user namespaces are OFF"
        );
        return Ok(None);
    }
    let read = |path: &'static str| -> Result<String> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("read {path}")),
        }
    };
    let (subuid, subgid) = (read(SUBUID)?, read(SUBGID)?);
    let ids = IdMapping::from_subid(
        &user.name,
        user.uid,
        &SubIdFile {
            path: SUBUID,
            text: &subuid,
        },
        &SubIdFile {
            path: SUBGID,
            text: &subgid,
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "--userns-remap {}: {e} (give the user ranges with: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {})",
            user.name,
            user.name
        )
    })?;
    Ok(Some(Remap {
        spec: format!("{}:{group}", user.name),
        ids,
    }))
}

/// dockerd's `strconv.ParseInt(s, 10, 32)`: a (signed, 32-bit) number is an ID.
fn parse_id(s: &str) -> Option<u32> {
    let n: i32 = s.parse().ok()?;
    u32::try_from(n).ok()
}

fn group_of(spec: &str) -> Result<String> {
    Ok(match parse_id(spec) {
        Some(gid) => {
            lookup_group(Key::Id(gid))
                .with_context(|| format!("--userns-remap: gid {gid} has no entry in /etc/group"))?
                .name
        }
        None => {
            lookup_group(Key::Name(spec))
                .with_context(|| format!("--userns-remap: no group {spec:?}"))?
                .name
        }
    })
}

/// dockerd's `AddNamespaceRangesUser("dockremap")`.
fn create_default_user() -> Result<()> {
    let run = |cmd: &mut Command| -> Result<()> {
        let out = cmd
            .output()
            .with_context(|| format!("run {:?}", cmd.get_program()))?;
        if !out.status.success() {
            bail!(
                "{:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let has = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("adduser") {
        run(Command::new("adduser").args([
            "--system",
            "--shell",
            "/bin/false",
            "--no-create-home",
            "--disabled-login",
            "--disabled-password",
            "--group",
            DEFAULT_USER,
        ]))
    } else if has("useradd") {
        run(Command::new("useradd").args(["-r", "-s", "/bin/false", DEFAULT_USER]))
    } else {
        bail!("cannot add user {DEFAULT_USER}: no useradd/adduser binary found")
    }
    .with_context(|| format!("--userns-remap default: creating user {DEFAULT_USER}"))?;
    for (path, flag) in [(SUBUID, "--add-subuids"), (SUBGID, "--add-subgids")] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = SubIdFile { path, text: &text };
        if !parse_subid_ranges(&file, DEFAULT_USER)?.is_empty() {
            continue;
        }
        let start = next_free_range(&parse_subid_ranges(&file, "ALL")?);
        let range = format!("{start}-{}", start + DEFAULT_RANGE_LEN - 1);
        run(Command::new("usermod").args([flag, &range, DEFAULT_USER])).with_context(|| {
            format!("--userns-remap default: giving {DEFAULT_USER} {path} range {range}")
        })?;
        eprintln!(
            "layerctl: created the system user {DEFAULT_USER} with {path} range {range}, as dockerd --userns-remap=default does"
        );
    }
    Ok(())
}

/// The first block of [`DEFAULT_RANGE_LEN`] IDs at or above [`DEFAULT_RANGE_START`] that no
/// existing range touches (moby's `findNextRangeStart`, with a complete overlap test).
fn next_free_range(ranges: &[SubIdRange]) -> u64 {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (u64::from(r.start), u64::from(r.start) + u64::from(r.length)))
        .collect();
    sorted.sort_unstable();
    let mut start = DEFAULT_RANGE_START;
    for (lo, hi) in sorted {
        if lo < start + DEFAULT_RANGE_LEN && start < hi {
            start = hi;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_free_range_skips_every_overlap() {
        let r = |start, length| SubIdRange { start, length };
        assert_eq!(next_free_range(&[]), 100_000);
        assert_eq!(next_free_range(&[r(100_000, 65536)]), 165_536);
        // A small range inside the block moves it too (moby's check misses this one).
        assert_eq!(next_free_range(&[r(120_000, 10)]), 120_010);
        assert_eq!(
            next_free_range(&[r(165_536, 65536), r(100_000, 65536), r(300_000, 5)]),
            231_072
        );
        assert_eq!(next_free_range(&[r(0, 1000), r(300_000, 10)]), 100_000);
    }

    #[test]
    fn malformed_specs_are_refused() {
        for bad in ["a:b:c", ":x", "x:", ""] {
            let err = resolve(bad).unwrap_err().to_string();
            assert!(
                err.contains("invalid user/group specification"),
                "{bad}: {err}"
            );
        }
    }
}
