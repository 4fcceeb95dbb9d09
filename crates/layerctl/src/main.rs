//! `layerctl`: the command-line tool over the layer store.
//!
//! Every command works on a data-root with Docker's layout (`--root`, default
//! `$LAYERCTL_ROOT`, else `/var/lib/layerctl` as root or `$XDG_DATA_HOME/layerctl` /
//! `~/.local/share/layerctl`), so a Docker data-root with the daemon stopped works too. The
//! driver is the one the root already uses, else overlay2 where it works, else vfs
//! (`--driver` overrides). A session:
//!
//! ```text
//! $ layerctl --root ./r load image.tar            # docker save, OCI layout or OCI archive
//! Loaded image: app:v1                            # as docker load; --json gives IDs and top layers
//! $ layerctl --root ./r images                    # REPOSITORY TAG IMAGE ID TOP LAYER CREATED SIZE
//! $ layerctl --root ./r rw create c1 --parent sha256:e8926eb5 --init
//! 7cbd08a7…                                       # the mount ID
//! $ cd "$(layerctl --root ./r rw mount c1)" && echo hi > new && cd - && layerctl --root ./r rw unmount c1
//! $ layerctl --root ./r rw changes c1
//! A /new
//! $ layerctl --root ./r commit c1                 # the new layer's chain ID
//! $ layerctl --root ./r export sha256:e8926eb5 | sha256sum   # equals the layer's DiffID
//! $ layerctl --root ./r --json ls                 # [{chain_id, diff_id, parent, size, diff_size, cache_id}]
//! $ layerctl --root ./r check                     # exit 1 when anything is wrong
//! ```
//!
//! Subcommands are grouped by area; each group lives in its own module:
//!
//! * `layer_cmd`: `import`, `ls`, `inspect`, `export`, `rm`, `commit`.
//! * `load`: `load` of `docker save` archives and OCI layouts/archives, recording the images
//!   and tags in Docker's imagedb and `repositories.json`.
//! * `image_cmd`, `save`: `images`, `tag`, `rmi`, `save` (a `docker save` archive).
//! * `images`: the root's images, each holding a reference on its top layer while the
//!   command runs (as dockerd's image store does), so no release deletes an image's layers.
//! * `rw_cmd`: `rw create|ls|mount|unmount|changes|diff|rm`.
//! * `maint_cmd`: `check`, `gc`, `info`.
//! * `tarsplit_cmd`: `tar-split disasm|asm|checksize`, a drop-in for Go's `tar-split` CLI.
//! * `completion SHELL`, `man`: generated from this file's clap definition.
//!
//! * `remap`, `users`: `--userns-remap USER[:GROUP]`, resolved as dockerd resolves it.
//! * `rootless`: unprivileged runs, each command in a user and mount namespace of its own
//!   (re-executed there), and `unshare`.
//!
//! Exit status: 0 on success, 1 on failure (one `error: …` line on stderr), 2 on usage errors.
//! `-v` logs at info level on stderr, `-vv` at debug; progress bars are drawn only when stderr
//! is a terminal and `-q` is not given.
//!
//! Reference counting: the store counts references like moby, where a leaf layer nobody holds
//! is deleted by the next release that reaches it. A CLI user expects layers to stay until
//! `layerctl rm`, so commands that release anything first take (and keep) references on the
//! layers that must survive: `rw rm` pins the parent, a failed `load` pins what existed
//! before it, and `rm` refuses layers with children, RW layers or images on them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that hands back a write error (a closed pipe, a full disk) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

mod compression;
mod context;
mod image_cmd;
mod images;
mod initlayer;
mod layer_cmd;
mod load;
mod maint_cmd;
mod output;
mod progress;
mod recovery;
mod remap;
mod rootless;
mod rw_cmd;
mod save;
mod tarsplit_cmd;
mod users;

use context::GlobalArgs;

#[derive(Debug, Parser)]
#[command(name = "layerctl", version, about = "Container image layer store tool")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register a layer tar (plain, gzip or zstd) on an optional parent; prints the chain ID.
    Import(layer_cmd::ImportArgs),
    /// Load a `docker save` archive, an OCI layout directory or an OCI archive; prints the top
    /// chain ID of each image.
    Load(load::LoadArgs),
    /// List all layers.
    Ls(layer_cmd::LsArgs),
    /// Show one layer as JSON.
    Inspect(layer_cmd::InspectArgs),
    /// Write a layer's exact original tar.
    Export(layer_cmd::ExportArgs),
    /// Remove a layer and the parents it leaves unused.
    Rm(layer_cmd::RmArgs),
    /// Read-write (container) layers.
    #[command(subcommand)]
    Rw(rw_cmd::RwCommand),
    /// Register an RW layer's changes as a new layer on its parent; prints the chain ID.
    Commit(layer_cmd::CommitArgs),
    /// Check every layer and RW layer (exit 1 when anything is wrong).
    Check(maint_cmd::CheckArgs),
    /// Remove what interrupted work left behind.
    Gc,
    /// Show the driver, its status, counts and the root.
    Info,
    /// List images (docker's `image/<driver>/imagedb` and `repositories.json`).
    Images(image_cmd::ImagesArgs),
    /// Point a tag at an image (moving it from another image).
    Tag(image_cmd::TagArgs),
    /// Untag images, and delete those left without tags with the layers nothing else uses.
    Rmi(image_cmd::RmiArgs),
    /// Write images as a `docker save` archive that `docker load` accepts.
    Save(save::SaveArgs),
    /// Disassemble and reassemble tar archives (compatible with Go's tar-split).
    #[command(name = "tar-split")]
    TarSplit(tarsplit_cmd::TarSplitArgs),
    /// Run a command in the store's user and mount namespace (unprivileged; as `podman
    /// unshare`), with LAYERCTL_ROOT set to the store's root; as root, just run it.
    Unshare(UnshareArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `layerctl completion bash > /etc/bash_completion.d/layerctl`.
    Completion(CompletionArgs),
    /// Print the man page (roff), e.g. `layerctl man | man -l -`.
    Man,
}

#[derive(Debug, clap::Args)]
struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
struct UnshareArgs {
    /// The command and its arguments [default: $SHELL].
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<std::ffi::OsString>,
}

/// Pins glibc's mmap threshold at 256 KiB. By default glibc raises it after each freed large
/// block, so the 1 MiB register chunks end up in per-thread heap arenas that fragment: a
/// process registering thousands of layers grew to 1.3 GB RSS (PERFORMANCE.md). Pinned, large
/// buffers stay in mmap and are returned at free.
fn pin_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing, before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn main() -> ExitCode {
    pin_malloc_mmap_threshold();
    // A re-executed rootless child makes its namespaces while it has one thread.
    rootless::enter_if_child();
    let cli = Cli::parse();
    context::init_logging(&cli.global);
    let result = match cli.command {
        Command::TarSplit(args) => tarsplit_cmd::run(args),
        Command::Completion(args) => completion(args.shell),
        Command::Man => man_page(),
        command if rootless::needed() && !rootless::in_our_namespace() => {
            if let Command::Rw(rw_cmd::RwCommand::Mount(_)) = &command {
                // Checked before the namespace is made: the mount would not outlive it.
                if let Err(e) = rootless::refuse_outside("rw mount") {
                    eprintln!("error: {}", one_line(&e));
                    return ExitCode::FAILURE;
                }
            }
            match rootless::run_in_namespace() {
                Ok(Ok(code)) => return code,
                Ok(Err(rootless::Unavailable(why))) => {
                    eprintln!(
                        "warning: rootless: no user namespace ({why}); running as you are: vfs, owners not set (they stay in each layer's tar-split metadata)"
                    );
                    run(&cli.global, command)
                }
                Err(e) => Err(e),
            }
        }
        command => run(&cli.global, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`layerctl ls | head`): stop quietly, as other tools do.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Writes the completion script for `shell` to stdout.
fn completion(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "layerctl", &mut out);
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(())
}

/// Writes the man page (section 1, roff) to stdout.
fn man_page() -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(())
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, joined with `": "`. No error type in the workspace
/// repeats its cause in its own message, so the chain reads once, outermost first.
fn one_line(err: &anyhow::Error) -> String {
    let causes: Vec<String> = err.chain().map(|cause| cause.to_string()).collect();
    causes.join(": ").replace('\n', " ")
}

impl Command {
    /// Whether the command may change the data-root, and so must not run beside another
    /// engine using it (`--force` overrides).
    fn writes(&self) -> bool {
        use rw_cmd::RwCommand;
        match self {
            Command::Ls(_)
            | Command::Inspect(_)
            | Command::Export(_)
            | Command::Info
            | Command::Images(_)
            | Command::Save(_)
            | Command::TarSplit(_)
            | Command::Completion(_)
            | Command::Man
            | Command::Unshare(_)
            | Command::Rw(RwCommand::Ls(_) | RwCommand::Changes(_) | RwCommand::Diff(_)) => false,
            Command::Check(a) => a.repairs(),
            _ => true,
        }
    }
}

fn run(global: &GlobalArgs, command: Command) -> anyhow::Result<()> {
    if let Command::Unshare(a) = &command {
        let root = match &global.root {
            Some(r) => r.clone(),
            None => context::default_root()?,
        };
        return Err(rootless::exec(&root, &a.command));
    }
    let is_gc = matches!(command, Command::Gc);
    let sets_up = matches!(command, Command::Info);
    let ctx = match context::Context::new(global, command.writes(), sets_up, is_gc) {
        Ok(ctx) => ctx,
        // Listing a root nothing was stored in yet: an empty list, and nothing created.
        Err(e) if e.is::<context::NoStore>() => {
            return match command {
                Command::Ls(a) => layer_cmd::show_layers(&[], &a, global.json),
                Command::Images(a) => image_cmd::show_images(&[], &a, global.json),
                Command::Rw(rw_cmd::RwCommand::Ls(a)) => {
                    rw_cmd::show_rw_layers(&[], &a, global.json)
                }
                _ => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    match command {
        Command::Import(a) => layer_cmd::import(&ctx, a),
        Command::Load(a) => load::run(&ctx, a),
        Command::Ls(a) => layer_cmd::ls(&ctx, a),
        Command::Inspect(a) => layer_cmd::inspect(&ctx, a),
        Command::Export(a) => layer_cmd::export(&ctx, a),
        Command::Rm(a) => layer_cmd::rm(&ctx, a),
        Command::Rw(c) => rw_cmd::run(&ctx, c),
        Command::Commit(a) => layer_cmd::commit(&ctx, a),
        Command::Check(a) => maint_cmd::check(&ctx, a),
        Command::Gc => maint_cmd::gc(&ctx),
        Command::Info => maint_cmd::info(&ctx),
        Command::Images(a) => image_cmd::images(&ctx, a),
        Command::Tag(a) => image_cmd::tag(&ctx, a),
        Command::Rmi(a) => image_cmd::rmi(&ctx, a),
        Command::Save(a) => save::run(&ctx, a),
        Command::TarSplit(_) | Command::Unshare(_) | Command::Completion(_) | Command::Man => {
            unreachable!("handled before the store is opened")
        }
    }
}
