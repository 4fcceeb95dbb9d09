//! Users and groups by name or ID, as moby's `idtools` finds them: `/etc/passwd` and
//! `/etc/group` first, then `getent` (for NSS sources such as LDAP).

use std::process::Command;

use anyhow::{Result, bail};

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// What to look for: a name, or a numeric ID.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Name(&'a str),
    Id(u32),
}

impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Name(n) => write!(f, "{n:?}"),
            Key::Id(id) => write!(f, "{id}"),
        }
    }
}

/// Finds a user by name or UID.
pub fn lookup_user(key: Key<'_>) -> Result<User> {
    let parse = |line: &str| -> Option<User> {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4).then_some(())?;
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    };
    let matches = |u: &User| match key {
        Key::Name(n) => u.name == n,
        Key::Id(id) => u.uid == id,
    };
    find("/etc/passwd", "passwd", key, parse, matches)
}

/// Finds a group by name or GID.
pub fn lookup_group(key: Key<'_>) -> Result<Group> {
    let parse = |line: &str| -> Option<Group> {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3).then_some(())?;
        Some(Group {
            name: f[0].to_string(),
            gid: f[2].parse().ok()?,
        })
    };
    let matches = |g: &Group| match key {
        Key::Name(n) => g.name == n,
        Key::Id(id) => g.gid == id,
    };
    find("/etc/group", "group", key, parse, matches)
}

fn find<T>(
    file: &str,
    database: &str,
    key: Key<'_>,
    parse: impl Fn(&str) -> Option<T>,
    matches: impl Fn(&T) -> bool,
) -> Result<T> {
    if let Ok(text) = std::fs::read_to_string(file)
        && let Some(found) = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(&parse)
            .find(&matches)
    {
        return Ok(found);
    }
    // Not in the file: NSS may know it (moby calls `getent` too).
    let key_text = match key {
        Key::Name(n) => n.to_string(),
        Key::Id(id) => id.to_string(),
    };
    match Command::new("getent").arg(database).arg(&key_text).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(found) = text.lines().filter_map(&parse).find(&matches) {
                return Ok(found);
            }
            bail!("no {database} entry for {key}")
        }
        Ok(_) => bail!("no {database} entry for {key} (not in {file}, nor known to getent)"),
        Err(_) => bail!("no {database} entry for {key} in {file}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_by_id() {
        assert_eq!(lookup_user(Key::Name("root")).unwrap().uid, 0);
        assert_eq!(lookup_user(Key::Id(0)).unwrap().name, "root");
        assert_eq!(lookup_group(Key::Id(0)).unwrap().name, "root");
        let err = lookup_user(Key::Name("no-such-user-layerctl")).unwrap_err();
        assert!(err.to_string().contains("no passwd entry"), "{err}");
    }
}
