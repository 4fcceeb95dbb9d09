//! Global options, logging, and opening the store they name.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{ArgAction, Args, ValueEnum};
use layer_digest::ChainId;
use layer_store::{LayerRef, Store, StoreOptions};

use crate::images::Images;

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The data-root, with Docker's layout [default: $LAYERCTL_ROOT, else /var/lib/layerctl as
    /// root, else $XDG_DATA_HOME/layerctl or ~/.local/share/layerctl].
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The graph driver [default: the one the root uses, else overlay2 where it works, else vfs].
    #[arg(long, global = true, value_enum)]
    pub driver: Option<DriverName>,
    /// Machine-readable output for listing and inspecting commands.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars and no logs.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Logs on stderr: `-v` info, `-vv` debug, `-vvv` trace.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Sync layer data to disk before committing each layer (survives power cuts with its
    /// files, at the cost of a syncfs per layer) [env: LAYERCTL_SYNC_DATA=1].
    #[arg(long, global = true)]
    pub sync_data: bool,
    /// Map owners as dockerd --userns-remap does: USER's ranges from /etc/subuid and
    /// /etc/subgid (`default`: the dockremap user, created if missing); the store then lives in
    /// <root>/<uid>.<gid>/. Needs root.
    #[arg(long, global = true, value_name = "USER[:GROUP]")]
    pub userns_remap: Option<String>,
    /// A graph driver option, as dockerd's `--storage-opt` (`overlay2.override_kernel_check`,
    /// `vfs.xattrs`…; `overlay2.size` is refused: it needs project quotas). Repeatable;
    /// before the command (after it, `rw create --storage-opt` is the layer's, as docker run's).
    #[arg(long, value_name = "KEY=VALUE")]
    pub storage_opt: Vec<String>,
    /// Write even to a data-root that a running container engine uses (a dockerd, containerd,
    /// podman... whose root it is, or mounts under it this tool did not make). For `rmi`, it
    /// also deletes images in use.
    #[arg(long, global = true)]
    pub force: bool,
}

/// The drivers the CLI offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverName {
    /// Kernel overlayfs (needs root).
    Overlay2,
    /// Full copies; works anywhere.
    Vfs,
}

impl DriverName {
    fn as_str(self) -> &'static str {
        match self {
            DriverName::Overlay2 => "overlay2",
            DriverName::Vfs => "vfs",
        }
    }
}

/// Sets up `tracing` on stderr as `-v`/`-q` ask; `RUST_LOG` wins when set.
pub fn init_logging(args: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let level = match (args.quiet, args.verbose) {
        (true, _) | (false, 0) => None,
        (false, 1) => Some("info"),
        (false, 2) => Some("debug"),
        (false, _) => Some("trace"),
    };
    let filter = match (std::env::var("RUST_LOG"), level) {
        (Ok(spec), _) if !spec.is_empty() => EnvFilter::new(spec),
        (_, Some(level)) => EnvFilter::new(level),
        _ => return,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The default data-root for this user.
pub fn default_root() -> Result<PathBuf> {
    if let Some(root) = std::env::var_os("LAYERCTL_ROOT").filter(|r| !r.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/layerctl"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(data).join("layerctl"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("no --root given and neither $LAYERCTL_ROOT, $XDG_DATA_HOME nor $HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/layerctl"))
}

/// Opens the store. Rootless, on a root no driver uses yet, overlay2 is tried first and why it
/// cannot work is said once, on stderr, before falling back to vfs (as root, the fallback is
/// silent, as dockerd's).
fn open_store(opts: StoreOptions) -> Result<Store> {
    let rootless = crate::rootless::in_our_namespace();
    let store_root = layer_store::store_root(&opts.root, &opts.id_mapping);
    if rootless && opts.driver.is_none() && layer_store::driver_in_use(&store_root)?.is_none() {
        match Store::open(opts.clone().driver("overlay2")) {
            Ok(store) => return Ok(store),
            Err(e @ layer_store::Error::Driver(_)) => {
                eprintln!("warning: rootless: overlay2 is not usable here ({e}); using vfs");
                let _ = std::fs::remove_dir(store_root.join("overlay2"));
                return Ok(Store::open(opts.driver("vfs"))?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Store::open(opts)?)
}

/// Whether an interrupted command (Ctrl-C, a crash, a power cut) left work behind that `gc`
/// collects: a write-set, a half-written mount record, a layer removal under way, or an image
/// operation's journal record (`load`, `rmi`, `save`). With the root's lock held no other
/// command is running, so none of it is in flight.
fn interrupted_work(store: &Store) -> bool {
    let meta = store.meta();
    // Not `leftovers()`: that loads every layer again (the open just did), which at 10^4
    // layers doubled the cost of every command.
    let layers = match meta.interrupted() {
        Ok(l) => {
            !l.stale_write_sets.is_empty() || !l.half_mounts.is_empty() || !l.removing.is_empty()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not look for interrupted work");
            false
        }
    };
    let journal = image_meta::ImageStore::new(store.root(), store.driver_name()).journal();
    let images = journal.has_records().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not look for interrupted image operations");
        false
    });
    layers || images
}

/// Refuses a data-root that another program uses: a running dockerd, containerd, podman,
/// BuildKit or CRI-O whose root it is, Docker's pidfile for the default root, or mounts under
/// it that this tool did not make (containers a daemon runs). Our `layerstore.lock` keeps
/// only our own processes apart; writing beside a daemon would take its work in flight for
/// garbage or delete layers under its containers.
pub fn refuse_live_root(root: &std::path::Path) -> Result<()> {
    let uses = layer_store::live::live_users(root);
    if uses.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = uses.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "data-root {} is in use by another program: {}. Stop the daemon (or whatever uses \
         it) first; --force writes anyway",
        root.display(),
        list.join("; ")
    )
}

/// What a command runs with: the open store, its images and the output settings.
#[derive(Debug)]
pub struct Context {
    pub store: Store,
    /// The root's images, each holding a reference on its top layer.
    pub images: Images,
    pub json: bool,
    /// Progress bars are drawn (stderr is a terminal and not `-q`).
    pub progress: bool,
    /// The owners' ID mapping (`--userns-remap`), the identity without it.
    pub id_mapping: graphdriver::IdMapping,
}

/// A read-only command on a data-root that has no layer store: nothing is created for it.
#[derive(Debug)]
pub struct NoStore(pub PathBuf);

impl std::fmt::Display for NoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no layer store at {} (nothing imported or loaded there yet)",
            self.0.display()
        )
    }
}

impl std::error::Error for NoStore {}

/// What the first command after an interrupted one says (`gc` itself does not).
pub const INTERRUPTED_HINT: &str = "interrupted work found: run `layerctl gc`";

impl Context {
    /// Opens the store the global options name (waiting for another process's lock). A
    /// command that `writes` first makes sure no other engine uses the root (see
    /// [`refuse_live_root`]); one that does not fails with [`NoStore`] instead of creating
    /// a store, unless it is `info` (`sets_up`: it reports which driver works on a new root,
    /// which takes starting it there). `--driver` naming another driver than the one the
    /// root uses is refused. Unless `is_gc`, what an interrupted command left behind is
    /// pointed out, on stderr.
    pub fn new(args: &GlobalArgs, writes: bool, sets_up: bool, is_gc: bool) -> Result<Context> {
        let root = match &args.root {
            Some(r) => r.clone(),
            None => default_root()?,
        };
        if writes && !args.force {
            refuse_live_root(&root)?;
        }
        let mut opts = StoreOptions::new(&root);
        if let Some(spec) = &args.userns_remap {
            if !rustix::process::geteuid().is_root() || layer_archive::owners::in_user_namespace() {
                anyhow::bail!(
                    "--userns-remap needs root (as dockerd's); unprivileged, layerctl maps IDs through its own user namespace instead"
                );
            }
            if let Some(remap) = crate::remap::resolve(spec)? {
                tracing::info!(remap = %remap.spec, "user namespaces: ID ranges of {}", remap.spec);
                opts.id_mapping = remap.ids;
            }
        }
        let id_mapping = opts.id_mapping.clone();
        let store_root = layer_store::store_root(&root, &id_mapping);
        let in_use = layer_store::driver_in_use(&store_root)
            .with_context(|| format!("open layer store at {}", root.display()))?;
        match (&in_use, args.driver) {
            (None, _) if !writes && !sets_up => return Err(NoStore(root).into()),
            (Some(used), Some(asked)) if used != asked.as_str() => anyhow::bail!(
                "data-root {} uses the {used} driver, not {asked}: drop --driver (or pass \
                 --driver {used}); one root holds one driver's layers, as with dockerd",
                root.display(),
                asked = asked.as_str(),
            ),
            _ => {}
        }
        opts.driver = args.driver.map(|d| d.as_str().to_owned());
        opts.driver_options = args.storage_opt.clone();
        opts.sync_layer_data =
            args.sync_data || std::env::var_os("LAYERCTL_SYNC_DATA").is_some_and(|v| v == "1");
        let store =
            open_store(opts).with_context(|| format!("open layer store at {}", root.display()))?;
        if !is_gc && interrupted_work(&store) {
            eprintln!("warning: {INTERRUPTED_HINT}");
        }
        let images = Images::open(&store);
        Ok(Context {
            store,
            images,
            json: args.json,
            progress: !args.quiet && std::io::stderr().is_terminal(),
            id_mapping,
        })
    }

    /// Finds a layer by chain ID: `sha256:<hex>`, `<hex>`, or a unique prefix of either.
    pub fn resolve_layer(&self, id: &str) -> Result<ChainId> {
        if let Ok(c) = id.parse::<ChainId>() {
            if self.store.map().contains_key(&c) {
                return Ok(c);
            }
            anyhow::bail!("layer does not exist: {c}");
        }
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("invalid layer ID {id:?}: want sha256:<hex> or a hex prefix");
        }
        let matches: Vec<ChainId> = self
            .store
            .map()
            .into_keys()
            .filter(|c| c.hex().starts_with(hex))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!("layer does not exist: {id}"),
            many => anyhow::bail!("layer ID prefix {id} is ambiguous ({} layers)", many.len()),
        }
    }

    /// A reference that keeps `id` alive for the rest of the process: never released, so no
    /// later release in this process can reach zero on it and delete it. (Dropping a
    /// [`LayerRef`] only logs; the store forgets the count when the process ends.)
    pub fn pin(&self, id: &ChainId) -> Result<()> {
        let r: LayerRef = self.store.get(id)?;
        std::mem::forget(r);
        Ok(())
    }
}
