//! The `vfs` driver: every layer is a full copy of its parent.
//!
//! Layout (moby's, spec §2.9): `<root>/vfs/` (0710), `<root>/vfs/dir/` (0710), and one
//! directory per layer, `<root>/vfs/dir/<id>` (0755, owned by root), holding the complete
//! flattened tree. With an ID mapping ([`init_with_id_map`]) the first two are
//! `(our uid, remapped root gid)` and each layer dir belongs to the remapped root, as moby
//! does; tars applied and produced map owners (see [`crate::ownership`]). Creating a layer copies the parent with [`crate::copy::copy_dir`]
//! (reflink, then `copy_file_range`, then read/write). Mounting is a no-op: `get` returns the
//! directory. Diffs come from [`NaiveDiffDriver`].
//!
//! ```
//! use graphdriver::{CreateOpts, ProtoDriver, DiffDriver};
//!
//! let root = tempfile::tempdir().unwrap();
//! let vfs = graphdriver::vfs::init(root.path(), &[]).unwrap();
//! vfs.create("base", None, &CreateOpts::default()).unwrap();
//! let dir = vfs.get("base", "").unwrap();
//! std::fs::write(dir.join("hello"), "hi").unwrap();
//! vfs.put("base").unwrap();
//! vfs.create("child", Some("base"), &CreateOpts::default()).unwrap();
//! let child = vfs.get("child", "").unwrap();
//! assert_eq!(std::fs::read(child.join("hello")).unwrap(), b"hi");
//! vfs.put("child").unwrap();
//! assert!(vfs.changes("child", Some("base")).unwrap().is_empty());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::driver::{CreateOpts, ProtoDriver, Status};
use crate::error::{Error, Result};
use crate::naive::{NaiveDiffDriver, NaiveOptions};
use crate::options::parse_storage_opt;
use crate::ownership::{Ownership, chown_fd_if_needed};
use layer_archive::IdMapping;

/// The only accepted value of `vfs.xattrs`, as in moby.
const BROKEN_XATTRS_OPT_IN: &str = "i_want_broken_containers";

/// The vfs directory manager. Use [`init`] to get it wrapped with naive diffs.
#[derive(Debug)]
pub struct VfsDriver {
    home: PathBuf,
    best_effort_xattrs: bool,
    ownership: Ownership,
    /// `get` references per id (vfs has nothing to mount; kept so misuse is visible).
    references: Mutex<HashMap<String, usize>>,
}

/// Starts vfs with home `<root>/vfs` and the given `key=value` options, wrapped in a
/// [`NaiveDiffDriver`].
pub fn init(root: &Path, options: &[String]) -> Result<NaiveDiffDriver<VfsDriver>> {
    init_with_id_map(root, options, &IdMapping::identity())
}

/// [`init`] for a store whose owners are mapped through `id_map` (moby's `Init` with
/// `uidMaps`/`gidMaps`).
pub fn init_with_id_map(
    root: &Path,
    options: &[String],
    id_map: &IdMapping,
) -> Result<NaiveDiffDriver<VfsDriver>> {
    let driver = VfsDriver::with_id_map(&root.join("vfs"), options, id_map)?;
    let naive = NaiveOptions {
        best_effort_xattrs: driver.best_effort_xattrs,
        ownership: driver.ownership.clone(),
        ..NaiveOptions::default()
    };
    Ok(NaiveDiffDriver::with_options(driver, naive))
}

impl VfsDriver {
    /// Opens (creating if needed) a vfs home. Its parent must exist.
    pub fn new(home: &Path, options: &[String]) -> Result<Self> {
        Self::with_id_map(home, options, &IdMapping::identity())
    }

    /// [`VfsDriver::new`] with owners mapped through `id_map`.
    pub fn with_id_map(home: &Path, options: &[String], id_map: &IdMapping) -> Result<Self> {
        let ownership = Ownership::new(id_map.clone());
        let mut best_effort_xattrs = false;
        for opt in options {
            let (key, value) = parse_storage_opt(opt)?;
            match key.to_ascii_lowercase().as_str() {
                "size" => {
                    return Err(Error::NotSupported(
                        "vfs: size: limiting a layer needs project quotas on the backing filesystem, \
                     which this vfs does not set up"
                        .into(),
                    ));
                }
                "vfs.xattrs" => {
                    if value != BROKEN_XATTRS_OPT_IN {
                        return Err(Error::InvalidOption(
                            "do not set the vfs.xattrs option unless you are willing to accept the consequences".into(),
                        ));
                    }
                    best_effort_xattrs = true;
                }
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "unknown option {key} for vfs"
                    )));
                }
            }
        }
        for dir in [home.to_path_buf(), home.join("dir")] {
            match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o710)) {
                Ok(()) => {
                    rustix::fs::chmod(&dir, Mode::from_raw_mode(0o710))
                        .map_err(|e| Error::io("chmod", &dir, e.into()))?;
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io("mkdir", &dir, e.into())),
            }
            ownership.chown_dir(&dir, ownership.dir_id())?;
        }
        Ok(VfsDriver {
            home: home.to_path_buf(),
            best_effort_xattrs,
            ownership,
            references: Mutex::new(HashMap::new()),
        })
    }

    /// The driver home (`<root>/vfs`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/dir/<id>`; ids that are not a single plain name are refused (moby applies
    /// `filepath.Base`; refusing is clearer than silently renaming).
    fn dir(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
            return Err(Error::InvalidOption(format!("invalid layer id {id:?}")));
        }
        Ok(self.home.join("dir").join(id))
    }

    fn create_layer(&self, id: &str, parent: Option<&str>) -> Result<()> {
        let dir = self.dir(id)?;
        let parent_dir = match parent {
            Some(p) => {
                let pd = self.dir(p)?;
                if !pd.is_dir() {
                    return Err(Error::NotFound(p.to_string()));
                }
                Some(pd)
            }
            None => None,
        };
        rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700))
            .map_err(|e| Error::io("mkdir", &dir, e.into()))?;
        let result = (|| -> std::io::Result<()> {
            let fd = rustix::fs::open(
                &dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            // The layer's root belongs to (remapped) root.
            if safe_root::is_root() || !self.ownership.is_identity() {
                chown_fd_if_needed(fd.as_fd(), self.ownership.root_pair())?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))?;
            if let Some(pd) = &parent_dir {
                crate::copy::copy_dir(pd, &dir)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Never leave a half-copied layer behind.
            let _ = self.remove(id);
            return Err(Error::io("create layer", &dir, e));
        }
        Ok(())
    }
}

impl ProtoDriver for VfsDriver {
    fn name(&self) -> &str {
        "vfs"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        if !opts.storage_opt.is_empty() {
            return Err(Error::InvalidOption(
                "--storage-opt is not supported for vfs on read-only layers".into(),
            ));
        }
        self.create_layer(id, parent)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        if let Some(key) = opts.storage_opt.keys().next() {
            if key.eq_ignore_ascii_case("size") {
                return Err(Error::NotSupported(
                    "vfs: size: limiting a layer needs project quotas on the backing filesystem, \
                     which this vfs does not set up"
                        .into(),
                ));
            }
            return Err(Error::InvalidOption(format!(
                "Storage opt {key} not supported"
            )));
        }
        self.create_layer(id, parent)
    }

    fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let parent = self.home.join("dir");
        let parent_fd = rustix::fs::open(
            &parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", &parent, e.into()))?;
        let name = CString::new(id)
            .map_err(|_| Error::InvalidOption(format!("invalid layer id {id:?}")))?;
        safe_root::remove_all_at(parent_fd.as_fd(), &name)
            .map_err(|e| Error::io("remove", &dir, e))?;
        self.references
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    fn get(&self, id: &str, _mount_label: &str) -> Result<PathBuf> {
        let dir = self.dir(id)?;
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::Other(format!("{}: not a directory", dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()));
            }
            Err(e) => return Err(Error::io("stat", &dir, e)),
        }
        *self
            .references
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default() += 1;
        Ok(dir)
    }

    fn put(&self, id: &str) -> Result<()> {
        let mut refs = self.references.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = refs.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                refs.remove(id);
            }
        }
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        self.dir(id).map(|d| d.is_dir()).unwrap_or(false)
    }

    fn status(&self) -> Status {
        if self.best_effort_xattrs {
            vec![("Extended file attributes".into(), "best-effort".into())]
        } else {
            Vec::new()
        }
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let dir = self.dir(id)?;
        Ok(BTreeMap::from([(
            "SourceDir".to_string(),
            dir.display().to_string(),
        )]))
    }

    fn cleanup(&self) -> Result<()> {
        Ok(())
    }

    fn full_tree_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(Some(dir))
    }

    fn list(&self) -> Result<Vec<String>> {
        let dir = self.home.join("dir");
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("read_dir", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read_dir", &dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}
