//! ID mappings: which host UIDs and GIDs stand for a container's (moby's
//! `idtools.IdentityMapping`, Docker's `--userns-remap`).
//!
//! A remapped store keeps a layer's files owned by *host* IDs: container root is, say, host
//! 100000, container 1000 is host 101000. Applying a layer maps each entry's owner
//! container → host ([`IdMapping::to_host`]); archiving files from disk (`rw diff`, commit)
//! maps back host → container ([`IdMapping::to_container`]), so the tars and their DiffIDs
//! are those of an unmapped store. A layer's original tar stream is reassembled from
//! tar-split metadata whose headers are the original bytes, so it needs no mapping at all.
//!
//! The semantics are moby 20.10's, on purpose:
//!
//! * an empty list of ranges is the identity (a mapping of UIDs only leaves GIDs alone);
//! * an ID outside every range is an error, both ways ("Container ID 70000 cannot be mapped to
//!   a host ID"): moby refuses such a layer, and so do we, before anything is written of
//!   that entry (the register is then undone as a whole);
//! * [`IdMapping::to_host`] leaves an ID alone that already equals the remapped root's host
//!   ID (moby's `ToHost` compares with `RootPair()` first): with ranges `0 100000 65536`,
//!   container ID 100000 (outside the range) lands as host 100000 instead of failing;
//! * ranges are used in the order given; with the subordinate-ID files the container IDs
//!   of a user's ranges follow each other from 0 in file order (moby's `createIDMap`).
//!
//! [`IdMapping::from_subid`] builds the mapping dockerd builds for `--userns-remap USER` from
//! the text of `/etc/subuid` and `/etc/subgid`, with moby's parsing rules
//! ([`parse_subid_ranges`]).
//!
//! ```
//! use layer_archive::idmap::{IdMapping, IdRange};
//!
//! let ids = IdMapping::new(
//!     vec![IdRange::new(0, 100000, 65536)],
//!     vec![IdRange::new(0, 100000, 65536)],
//! ).unwrap();
//! assert_eq!(ids.root_pair(), (100000, 100000));
//! assert_eq!(ids.to_host(1000, 65534).unwrap(), (101000, 165534));
//! assert_eq!(ids.to_container(101000, 165534).unwrap(), (1000, 65534));
//! assert_eq!(
//!     ids.to_host(70000, 0).unwrap_err().to_string(),
//!     "container ID 70000 cannot be mapped to a host ID (the mapped ranges hold container IDs 0-65535)"
//! );
//! ```

use std::fmt;

/// One range: container IDs `container..container+size` are host IDs `host..host+size`
/// (moby's `idtools.IDMap`, a line of `/proc/<pid>/uid_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    /// First container ID.
    pub container: u32,
    /// First host ID.
    pub host: u32,
    /// How many IDs.
    pub size: u32,
}

impl IdRange {
    /// A range of `size` IDs from `container` (inside) to `host` (outside).
    pub const fn new(container: u32, host: u32, size: u32) -> Self {
        IdRange {
            container,
            host,
            size,
        }
    }

    fn host_of(&self, container: u32) -> Option<u32> {
        let offset = container.checked_sub(self.container)?;
        (offset < self.size).then(|| self.host + offset)
    }

    fn container_of(&self, host: u32) -> Option<u32> {
        let offset = host.checked_sub(self.host)?;
        (offset < self.size).then(|| self.container + offset)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.container, self.host, self.size)
    }
}

/// Why an ID could not be mapped, or a mapping could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdMapError {
    /// A container ID no range holds (moby: "Container ID %d cannot be mapped to a host ID").
    #[error(
        "container ID {id} cannot be mapped to a host ID (the mapped ranges hold container IDs {held})"
    )]
    NoHostId {
        /// The container ID.
        id: u32,
        /// The container IDs the ranges hold, for the message (`0-65535`).
        held: String,
    },
    /// A host ID no range holds (moby: "Host ID %d cannot be mapped to a container ID").
    #[error(
        "host ID {id} cannot be mapped to a container ID (the mapped ranges hold host IDs {held})"
    )]
    NoContainerId {
        /// The host ID.
        id: u32,
        /// The host IDs the ranges hold, for the message.
        held: String,
    },
    /// The ranges themselves are unusable (empty, overflowing, overlapping, no root).
    #[error("invalid ID mapping: {0}")]
    Invalid(String),
    /// A subordinate-ID file could not be parsed or has no range for the user.
    #[error("{0}")]
    SubId(String),
}

/// Container → host ranges for UIDs and GIDs. The default (no ranges) is the identity. See
/// the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IdMapping {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
}

impl IdMapping {
    /// The identity: IDs are the same inside and outside.
    pub fn identity() -> Self {
        IdMapping::default()
    }

    /// A mapping from UID and GID ranges. An empty list maps that kind of ID to itself.
    /// Refused: a range of size 0, one that runs past ID 2³²−1 on either side, ranges that
    /// overlap inside or outside (the kernel refuses them too), and non-empty ranges that
    /// leave container root (0) unmapped (moby's `RootPair` would then be −1).
    pub fn new(uids: Vec<IdRange>, gids: Vec<IdRange>) -> Result<Self, IdMapError> {
        for (kind, ranges) in [("uid", &uids), ("gid", &gids)] {
            check_ranges(kind, ranges)?;
        }
        Ok(IdMapping { uids, gids })
    }

    /// Whether this is the identity (no ranges at all).
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// The UID ranges.
    pub fn uids(&self) -> &[IdRange] {
        &self.uids
    }

    /// The GID ranges.
    pub fn gids(&self) -> &[IdRange] {
        &self.gids
    }

    /// The host `(uid, gid)` of container root (moby's `RootPair`); `(0, 0)` for the
    /// identity. Driver homes and layer roots are owned by it.
    pub fn root_pair(&self) -> (u32, u32) {
        // `new` guarantees 0 is mapped whenever there are ranges.
        let uid = to_host_id(0, &self.uids).unwrap_or(0);
        let gid = to_host_id(0, &self.gids).unwrap_or(0);
        (uid, gid)
    }

    /// Maps a container owner to the host, as moby's `IdentityMapping.ToHost`: an ID equal to
    /// the remapped root's host ID is kept as it is; any other ID outside the ranges is an
    /// error.
    pub fn to_host(&self, uid: u32, gid: u32) -> Result<(u32, u32), IdMapError> {
        let (root_uid, root_gid) = self.root_pair();
        let uid = if uid == root_uid {
            uid
        } else {
            to_host_id(uid, &self.uids).ok_or_else(|| IdMapError::NoHostId {
                id: uid,
                held: held(&self.uids, |r| r.container),
            })?
        };
        let gid = if gid == root_gid {
            gid
        } else {
            to_host_id(gid, &self.gids).ok_or_else(|| IdMapError::NoHostId {
                id: gid,
                held: held(&self.gids, |r| r.container),
            })?
        };
        Ok((uid, gid))
    }

    /// Maps a host owner back to the container, as moby's `IdentityMapping.ToContainer`: an
    /// ID outside the ranges is an error.
    pub fn to_container(&self, uid: u32, gid: u32) -> Result<(u32, u32), IdMapError> {
        let uid = to_container_id(uid, &self.uids).ok_or_else(|| IdMapError::NoContainerId {
            id: uid,
            held: held(&self.uids, |r| r.host),
        })?;
        let gid = to_container_id(gid, &self.gids).ok_or_else(|| IdMapError::NoContainerId {
            id: gid,
            held: held(&self.gids, |r| r.host),
        })?;
        Ok((uid, gid))
    }

    /// The mapping dockerd builds for `--userns-remap USER`: the user's ranges from the texts
    /// of `/etc/subuid` and `/etc/subgid` (looked up by the numeric UID first, then by the
    /// name, as moby does), their container IDs following each other from 0 in file order.
    /// Both files need a range for the user (moby: "no subuid ranges found for user").
    pub fn from_subid(
        user: &str,
        uid: u32,
        subuid: &SubIdFile<'_>,
        subgid: &SubIdFile<'_>,
    ) -> Result<Self, IdMapError> {
        let lookup = |file: &SubIdFile<'_>, kind: &str| -> Result<Vec<IdRange>, IdMapError> {
            let mut ranges = parse_subid_ranges(file, &uid.to_string())?;
            if ranges.is_empty() {
                ranges = parse_subid_ranges(file, user)?;
            }
            if ranges.is_empty() {
                return Err(IdMapError::SubId(format!(
                    "no {kind} ranges found for user {user:?} in {}",
                    file.path
                )));
            }
            Ok(ranges_from_zero(&ranges))
        };
        let uids = lookup(subuid, "subuid")?;
        let gids = lookup(subgid, "subgid")?;
        IdMapping::new(uids, gids)
    }
}

/// The text of a subordinate-ID file and where it came from (for messages).
#[derive(Debug, Clone, Copy)]
pub struct SubIdFile<'a> {
    /// The path, as messages name it (`/etc/subuid`).
    pub path: &'a str,
    /// Its content.
    pub text: &'a str,
}

/// A user's range in a subordinate-ID file: `start..start+length` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIdRange {
    /// First host ID.
    pub start: u32,
    /// How many.
    pub length: u32,
}

/// The ranges `/etc/subuid`-style text gives `name` (`"ALL"`: every range), with moby's
/// rules: lines trimmed, empty lines and `#` comments skipped, every other line must have
/// exactly three `:`-separated fields (a line with another count is an error whoever it is
/// for), the first field compared exactly, the numbers read on the user's lines only. Go's
/// `strconv.Atoi` accepts a sign; so do we, but a negative start, a length below 1 or an end
/// past 2³² is refused here (moby would build a mapping the kernel rejects later).
pub fn parse_subid_ranges(file: &SubIdFile<'_>, name: &str) -> Result<Vec<SubIdRange>, IdMapError> {
    let mut out = Vec::new();
    for line in file.text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(':').collect();
        if parts.len() != 3 {
            return Err(IdMapError::SubId(format!(
                "cannot parse subuid/gid information: format not correct for {} file (line {line:?})",
                file.path
            )));
        }
        if parts[0] != name && name != "ALL" {
            continue;
        }
        let number = |s: &str| -> Result<i64, IdMapError> {
            parse_go_int(s).ok_or_else(|| {
                IdMapError::SubId(format!(
                    "string to int conversion failed during subuid/gid parsing of {}: {s:?} is not a number",
                    file.path
                ))
            })
        };
        let (start, length) = (number(parts[1])?, number(parts[2])?);
        let valid =
            start >= 0 && length > 0 && start.checked_add(length).is_some_and(|end| end <= 1 << 32);
        if !valid {
            return Err(IdMapError::SubId(format!(
                "{}: range {start}:{length} of {} is not a usable ID range",
                file.path, parts[0]
            )));
        }
        out.push(SubIdRange {
            start: start as u32,
            length: length.min(u32::MAX as i64) as u32,
        });
    }
    Ok(out)
}

/// moby's `createIDMap`: container IDs from 0, one range after another, in the given order.
pub fn ranges_from_zero(ranges: &[SubIdRange]) -> Vec<IdRange> {
    let mut next: u64 = 0;
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        if next > u64::from(u32::MAX) {
            break;
        }
        let size = (u64::from(r.length)).min((1u64 << 32) - next) as u32;
        out.push(IdRange::new(next as u32, r.start, size));
        next += u64::from(size);
    }
    out
}

/// Go's `strconv.Atoi` for the values a subid file can hold: optional sign, decimal digits.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(if negative { -value } else { value })
}

fn to_host_id(id: u32, ranges: &[IdRange]) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| r.host_of(id))
}

fn to_container_id(id: u32, ranges: &[IdRange]) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| r.container_of(id))
}

/// `0-65535, 70000-70009`: the IDs the ranges hold on one side, for messages.
fn held(ranges: &[IdRange], first: impl Fn(&IdRange) -> u32) -> String {
    ranges
        .iter()
        .map(|r| {
            let start = u64::from(first(r));
            format!("{start}-{}", start + u64::from(r.size) - 1)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_ranges(kind: &str, ranges: &[IdRange]) -> Result<(), IdMapError> {
    let end = |start: u32, size: u32| u64::from(start) + u64::from(size);
    for r in ranges {
        if r.size == 0 {
            return Err(IdMapError::Invalid(format!("{kind} range {r} is empty")));
        }
        if end(r.container, r.size) > 1 << 32 || end(r.host, r.size) > 1 << 32 {
            return Err(IdMapError::Invalid(format!(
                "{kind} range {r} runs past the largest ID"
            )));
        }
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            let overlap = |a0: u32, b0: u32| {
                u64::from(a0) < end(b0, b.size) && u64::from(b0) < end(a0, a.size)
            };
            if overlap(a.container, b.container) || overlap(a.host, b.host) {
                return Err(IdMapError::Invalid(format!(
                    "{kind} ranges {a} and {b} overlap"
                )));
            }
        }
    }
    if !ranges.is_empty() && to_host_id(0, ranges).is_none() {
        return Err(IdMapError::Invalid(format!(
            "no {kind} range maps container root (0)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remap() -> IdMapping {
        IdMapping::new(
            vec![IdRange::new(0, 100000, 65536)],
            vec![IdRange::new(0, 200000, 65536)],
        )
        .unwrap()
    }

    #[test]
    fn identity_maps_everything_to_itself() {
        let id = IdMapping::identity();
        assert!(id.is_empty());
        assert_eq!(id.root_pair(), (0, 0));
        assert_eq!(id.to_host(u32::MAX, 7).unwrap(), (u32::MAX, 7));
        assert_eq!(id.to_container(12345, 0).unwrap(), (12345, 0));
    }

    #[test]
    fn maps_inside_the_ranges_and_refuses_outside() {
        let ids = remap();
        assert_eq!(ids.root_pair(), (100000, 200000));
        assert_eq!(ids.to_host(0, 0).unwrap(), (100000, 200000));
        assert_eq!(ids.to_host(65535, 65535).unwrap(), (165535, 265535));
        assert!(matches!(
            ids.to_host(65536, 0),
            Err(IdMapError::NoHostId { id: 65536, .. })
        ));
        assert!(matches!(
            ids.to_host(0, 65536),
            Err(IdMapError::NoHostId { id: 65536, .. })
        ));
        assert_eq!(ids.to_container(165535, 200000).unwrap(), (65535, 0));
        let err = ids.to_container(0, 200000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host ID 0 cannot be mapped to a container ID (the mapped ranges hold host IDs 100000-165535)"
        );
    }

    /// moby's `ToHost` compares with the root pair before mapping.
    #[test]
    fn the_remapped_root_host_id_passes_through_as_moby() {
        let ids = remap();
        assert_eq!(ids.to_host(100000, 200000).unwrap(), (100000, 200000));
        // Crossed over it is not the root's ID of its kind: refused.
        assert!(ids.to_host(200000, 0).is_err());
    }

    #[test]
    fn several_ranges_and_one_sided_mappings() {
        let ids = IdMapping::new(
            vec![IdRange::new(0, 1000, 1), IdRange::new(1, 100000, 65536)],
            Vec::new(),
        )
        .unwrap();
        assert_eq!(ids.root_pair(), (1000, 0));
        assert_eq!(ids.to_host(1, 5).unwrap(), (100000, 5));
        assert_eq!(ids.to_host(65536, 5).unwrap(), (165535, 5));
        assert_eq!(ids.to_container(1000, 9).unwrap(), (0, 9));
        assert_eq!(ids.uids()[1].to_string(), "1 100000 65536");
    }

    #[test]
    fn unusable_ranges_are_refused() {
        let bad = |uids: Vec<IdRange>| IdMapping::new(uids, Vec::new()).unwrap_err().to_string();
        assert!(bad(vec![IdRange::new(0, 1, 0)]).contains("empty"));
        assert!(bad(vec![IdRange::new(0, u32::MAX, 2)]).contains("past the largest"));
        assert!(bad(vec![IdRange::new(0, 10, 5), IdRange::new(5, 12, 5)]).contains("overlap"));
        assert!(bad(vec![IdRange::new(0, 10, 5), IdRange::new(2, 100, 5)]).contains("overlap"));
        assert!(bad(vec![IdRange::new(1, 10, 5)]).contains("container root"));
    }

    const SUBUID: &str = "\
# comment
  dockremap:100000:65536
1001:300000:1000

alice:400000:10
alice:500000:5
";

    fn file(text: &str) -> SubIdFile<'_> {
        SubIdFile {
            path: "/etc/subuid",
            text,
        }
    }

    #[test]
    fn subid_parsing_follows_moby() {
        let f = file(SUBUID);
        assert_eq!(
            parse_subid_ranges(&f, "dockremap").unwrap(),
            [SubIdRange {
                start: 100000,
                length: 65536
            }]
        );
        assert_eq!(parse_subid_ranges(&f, "ALL").unwrap().len(), 4);
        assert!(parse_subid_ranges(&f, "bob").unwrap().is_empty());
        // Signs as Go's Atoi; a malformed line anywhere fails every lookup.
        assert_eq!(
            parse_subid_ranges(&file("x:+5:+2"), "x").unwrap(),
            [SubIdRange {
                start: 5,
                length: 2
            }]
        );
        for bad in [
            "x:1",
            "x:1:2:3",
            "y:1\nx:1:1",
            "x:a:1",
            "x:1:2x",
            "x:-1:5",
            "x:1:0",
            "x:4294967295:2",
        ] {
            assert!(parse_subid_ranges(&file(bad), "x").is_err(), "{bad:?}");
        }
        // Numbers are read only on the user's own lines, as moby does.
        assert_eq!(
            parse_subid_ranges(&file("y:a:1\nx:1:1"), "x")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn from_subid_looks_up_the_uid_first_then_the_name() {
        let f = file(SUBUID);
        // uid 1001 has its own line: the name's lines are not used.
        let ids = IdMapping::from_subid("alice", 1001, &f, &f).unwrap();
        assert_eq!(ids.uids(), [IdRange::new(0, 300000, 1000)]);
        // By name: two ranges, container IDs following each other in file order.
        let ids = IdMapping::from_subid("alice", 1002, &f, &f).unwrap();
        assert_eq!(
            ids.gids(),
            [IdRange::new(0, 400000, 10), IdRange::new(10, 500000, 5)]
        );
        assert_eq!(ids.to_host(12, 0).unwrap(), (500002, 400000));
        let err = IdMapping::from_subid("bob", 1003, &f, &f).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no subuid ranges found for user \"bob\" in /etc/subuid"
        );
    }
}
