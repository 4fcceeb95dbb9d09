//! `layerctl tar-split …`: the same commands, flags and behaviour as Go's `tar-split` CLI.
//!
//! * `disasm [--output META] [--no-stdout] TAR|-`: gzip-compressed metadata to META
//!   (default `tar-data.json.gz`, mode 0600), the tar passed through to stdout.
//! * `asm --input META --path DIR [--output FILE|-] [--compress]`: rebuild the tar from
//!   the metadata and the extracted tree at DIR (confined to DIR).
//! * `checksize [--work] TAR…`: how big the metadata of each tar is.
//!
//! Speed (not in Go's CLI): with a core to spare (`--threads auto`, the default: more than
//! one core and, at the moment it starts, fewer other runnable tasks than cores), `disasm`
//! reads the tar on a second thread and gzips the metadata on a third
//! ([`tarsplit::asm::disassemble_parallel`]), and `asm` decodes the metadata on a second
//! thread, which also reads small files and pieces of large ones while the writing thread
//! is behind ([`tarsplit::asm::assemble_parallel`]). On a busy machine
//! (`--threads one`) everything runs on the calling thread: the helpers would wait for a
//! core anyway, and their hand-offs cost CPU (measured at load 7-9 on 2 cores: disasm
//! big.tar 0.28-0.31 s CPU on one thread vs 0.35-0.45 s on three, asm 0.35-0.44 s vs
//! 0.41-0.64 s, with equal or lower wall times). On an idle machine the helpers cut the
//! wall time by a third or more (asm big.tar 0.28 → 0.18 s, small.tar 0.38 → 0.21 s); the
//! 1-minute load average hid that, as it still counts the runs just before (a benchmark's
//! own Go runs keep it at 1.4-1.9 on 2 cores), so `auto` looks at the tasks runnable now.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tarsplit::asm::{
    DisasmEngine, DisasmOptions, NoVisitor, SparseMode, assemble, assemble_parallel,
    disassemble_parallel, disassemble_to,
};
use tarsplit::storage::{
    BackgroundUnpacker, BackgroundWriter, DiscardFilePutter, JsonPacker, PathFileGetter,
    gzip_unpacker, gzip_writer,
};

/// `tar-split` commands.
#[derive(Debug, Args)]
pub struct TarSplitArgs {
    /// Accepted for compatibility with Go's CLI (log level).
    #[arg(short = 'D', long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: TarSplitCommand,
}

#[derive(Debug, Subcommand)]
enum TarSplitCommand {
    /// Disassemble a tar into metadata, passing the tar through to stdout.
    #[command(visible_alias = "d")]
    Disasm(DisasmArgs),
    /// Reassemble a tar from metadata and a directory of file bodies.
    #[command(visible_alias = "a")]
    Asm(AsmArgs),
    /// Display the size of the tar-split metadata of tar archives.
    Checksize(ChecksizeArgs),
}

#[derive(Debug, Args)]
struct DisasmArgs {
    /// Where to write the gzip-compressed metadata.
    #[arg(long, default_value = "tar-data.json.gz")]
    output: PathBuf,
    /// Do not copy the tar to stdout.
    #[arg(long)]
    no_stdout: bool,
    /// Keep the bytes of a final, partial padding block instead of failing (Go drops them).
    #[arg(long)]
    keep_partial_padding: bool,
    /// GNU sparse files: `exact` records them verbatim so they reassemble byte for byte
    /// (Go's assembler included); `expand-like-go` writes Go's metadata (not reassemblable);
    /// `reject` refuses them.
    #[arg(long, value_enum, default_value_t = SparseArg::Exact)]
    sparse: SparseArg,
    /// Threads: `auto` uses helper threads only when a core is to spare.
    #[arg(long, value_enum, default_value_t = ThreadsArg::Auto)]
    threads: ThreadsArg,
    /// The tar archive, or `-` for stdin.
    #[arg(num_args = 0..)]
    tar: Vec<String>,
}

/// `--threads`: whether helper threads share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ThreadsArg {
    /// Helper threads when a core is to spare (see [`spare_core`]).
    Auto,
    /// Everything on the calling thread.
    One,
    /// Helper threads whenever the machine has more than one core.
    Many,
}

impl ThreadsArg {
    fn use_helpers(self) -> bool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self {
            ThreadsArg::One => false,
            ThreadsArg::Many => cores > 1,
            ThreadsArg::Auto => spare_core(cores, other_runnable()),
        }
    }
}

/// Tasks runnable right now other than this one (the 4th field of `/proc/loadavg`,
/// `running/total`, counts the reader too), if the system reports it.
fn other_runnable() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let (running, _total) = text.split_whitespace().nth(3)?.split_once('/')?;
    Some(running.parse::<usize>().ok()?.saturating_sub(1))
}

/// Whether a helper thread would find a core: more than one core, and fewer other
/// runnable tasks than cores at this moment (unknown counts as idle). On a busy machine a
/// helper waits for a core like every other thread, and handing work between threads then
/// only adds CPU. The moment matters, not the 1-minute load average: that still counts
/// what ran just before (in a benchmark, the other tool's threads), and it kept the
/// helpers off on an idle machine where they cut the wall time by a third.
fn spare_core(cores: usize, others: Option<usize>) -> bool {
    cores > 1 && others.is_none_or(|others| others < cores)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SparseArg {
    Exact,
    ExpandLikeGo,
    Reject,
}

#[derive(Debug, Args)]
struct AsmArgs {
    /// The gzip-compressed metadata.
    #[arg(long, default_value = "tar-data.json.gz")]
    input: PathBuf,
    /// The directory holding the file bodies (the extracted archive).
    #[arg(long, default_value = "")]
    path: String,
    /// Where to write the tar, `-` for stdout.
    #[arg(long, default_value = "-")]
    output: String,
    /// Gzip the output tar.
    #[arg(long)]
    compress: bool,
    /// Decode the metadata on a second thread (faster on an idle multi-core machine).
    #[arg(long)]
    parallel_decode: bool,
    /// Do all the work on one thread (the same as `--threads one`).
    #[arg(long)]
    sequential: bool,
    /// Threads: `auto` has a second thread decode the metadata and open the files only
    /// when a core is to spare.
    #[arg(long, value_enum, default_value_t = ThreadsArg::Auto)]
    threads: ThreadsArg,
    /// Ignored, with a warning (as Go does).
    #[arg(num_args = 0.., hide = true)]
    extra: Vec<String>,
}

#[derive(Debug, Args)]
struct ChecksizeArgs {
    /// Keep the temporary metadata files.
    #[arg(long)]
    work: bool,
    /// Tar archives to inspect.
    #[arg(num_args = 0..)]
    tars: Vec<PathBuf>,
}

/// Runs a `tar-split` subcommand.
pub fn run(args: TarSplitArgs) -> Result<()> {
    match args.command {
        TarSplitCommand::Disasm(a) => disasm(a),
        TarSplitCommand::Asm(a) => asm(a),
        TarSplitCommand::Checksize(a) => checksize(a),
    }
}

fn log_info(msg: &str) {
    eprintln!("level=info msg={msg:?}");
}

fn open_input(name: &str) -> Result<Box<dyn Read + Send>> {
    if name == "-" {
        Ok(Box::new(io::stdin()))
    } else {
        Ok(Box::new(
            File::open(name).with_context(|| format!("opening {name}"))?,
        ))
    }
}

fn create_0600(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn disasm(args: DisasmArgs) -> Result<()> {
    if args.tar.len() != 1 {
        bail!("please specify tar to be disabled <NAME|->");
    }
    let input_name = &args.tar[0];
    let input = open_input(input_name)?;
    let meta = create_0600(&args.output)?;
    let sparse = match args.sparse {
        SparseArg::Exact => SparseMode::Exact,
        SparseArg::ExpandLikeGo => SparseMode::ExpandLikeGo,
        SparseArg::Reject => SparseMode::Reject,
    };
    let opts = DisasmOptions {
        keep_partial_padding: args.keep_partial_padding,
        sparse,
        ..DisasmOptions::default()
    };
    // With a core to spare the tar is read on a thread of its own and gzip runs on a
    // third, overlapping with splitting the tar.
    let threads = args.threads.use_helpers();
    let gz = gzip_writer(BufWriter::with_capacity(64 << 10, meta));
    let meta = if threads {
        MetaWriter::Thread(
            BackgroundWriter::spawn(gz).context("starting the metadata writer thread")?,
        )
    } else {
        MetaWriter::Here(gz)
    };
    let mut engine = DisasmEngine::new(JsonPacker::new(meta), DiscardFilePutter, NoVisitor, opts);
    let read = match (args.no_stdout, threads) {
        (true, true) => disassemble_parallel(input, io::sink(), &mut engine),
        (true, false) => disassemble_to(input, io::sink(), &mut engine),
        (false, parallel) => {
            let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
            if parallel {
                disassemble_parallel(input, stdout, &mut engine)
            } else {
                disassemble_to(input, stdout, &mut engine)
            }
        }
    }
    .with_context(|| format!("disassembling {input_name}"))?;
    let (packer, _, _) = engine.into_parts();
    packer
        .into_inner()
        .finish()
        .and_then(|mut file| file.flush())
        .with_context(|| format!("writing {}", args.output.display()))?;
    log_info(&format!(
        "created {} from {} (read {} bytes)",
        args.output.display(),
        input_name,
        read
    ));
    Ok(())
}

fn asm(args: AsmArgs) -> Result<()> {
    if args.path.is_empty() {
        bail!("--path must be set");
    }
    if !args.extra.is_empty() {
        eprintln!(
            "level=warning msg=\"ignoring arguments: {}\"",
            args.extra.join(", ")
        );
    }
    let meta =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let unpacker = gzip_unpacker(meta);
    let getter =
        PathFileGetter::new(&args.path).with_context(|| format!("opening {}", args.path))?;
    let out: Box<dyn Write> = if args.output == "-" {
        // Raw fd 1: std's stdout is line-buffered, which rescans every chunk for newlines.
        // (A named output is created like Go's os.Create: 0666 less the umask.)
        Box::new(File::from(io::stdout().as_fd().try_clone_to_owned()?))
    } else {
        Box::new(File::create(&args.output).with_context(|| format!("creating {}", args.output))?)
    };
    let what = || format!("assembling from {} and {}", args.path, args.input.display());
    let threads = !args.sequential && args.threads.use_helpers();
    let written = if threads {
        write_tar(
            Threads::DecodeAndShare,
            unpacker,
            getter,
            out,
            args.compress,
        )
    } else if args.parallel_decode {
        // Measured: on an idle machine this overlaps decoding with file reads; on a busy
        // one the cross-thread hand-off costs more than it saves, hence opt-in.
        write_tar(
            Threads::One,
            BackgroundUnpacker::spawn(unpacker),
            getter,
            out,
            args.compress,
        )
    } else {
        write_tar(Threads::One, unpacker, getter, out, args.compress)
    }
    .with_context(what)?;
    log_info(&format!(
        "created {} from {} and {} (wrote {} bytes)",
        args.output,
        args.path,
        args.input.display(),
        written
    ));
    Ok(())
}

/// Where `disasm` gzips the metadata: on a thread of its own, or on the calling thread.
enum MetaWriter<W: Write + Send + 'static> {
    Thread(BackgroundWriter<flate2::write::GzEncoder<W>>),
    Here(flate2::write::GzEncoder<W>),
}

impl<W: Write + Send + 'static> Write for MetaWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            MetaWriter::Thread(w) => w.write(data),
            MetaWriter::Here(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            MetaWriter::Thread(w) => w.flush(),
            MetaWriter::Here(w) => w.flush(),
        }
    }
}

impl<W: Write + Send + 'static> MetaWriter<W> {
    /// Ends the gzip stream and returns the file.
    fn finish(self) -> io::Result<W> {
        match self {
            MetaWriter::Thread(w) => w.finish()?.finish(),
            MetaWriter::Here(w) => w.finish(),
        }
    }
}

/// Who does the reassembly's work.
enum Threads {
    /// The calling thread alone.
    One,
    /// A helper thread decodes the metadata and shares the file reads.
    DecodeAndShare,
}

fn write_tar(
    threads: Threads,
    unpacker: impl tarsplit::storage::Unpacker + Send + 'static,
    getter: PathFileGetter,
    out: Box<dyn Write>,
    compress: bool,
) -> Result<u64> {
    let run = |out: &mut dyn Write| match threads {
        Threads::One => assemble(unpacker, getter, out),
        Threads::DecodeAndShare => assemble_parallel(unpacker, getter, out),
    };
    if compress {
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::default());
        let n = run(&mut gz)?;
        gz.finish()?.flush()?;
        Ok(n)
    } else {
        let mut out = out;
        Ok(run(&mut out)?)
    }
}

/// Counts bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts header entries (every FileType entry is one tar header).
struct CountingPacker<P> {
    inner: P,
    files: u64,
}

impl<P: tarsplit::storage::Packer> tarsplit::storage::Packer for CountingPacker<P> {
    fn add_entry(&mut self, entry: &tarsplit::storage::Entry) -> tarsplit::Result<i64> {
        if entry.kind == tarsplit::storage::EntryKind::File {
            self.files += 1;
        }
        self.inner.add_entry(entry)
    }
    fn flush(&mut self) -> tarsplit::Result<()> {
        self.inner.flush()
    }
}

fn checksize(args: ChecksizeArgs) -> Result<()> {
    if args.tars.is_empty() {
        bail!("please specify tar archives to check ('-' will check stdin)");
    }
    for tar in &args.tars {
        let size = std::fs::metadata(tar)
            .with_context(|| format!("inspecting {}", tar.display()))?
            .len();
        println!(
            "inspecting {:?} (size {}k)",
            tar.display().to_string(),
            size / 1024
        );
        let work = tempfile::Builder::new()
            .prefix("tar-split-checksize-")
            .tempdir()?;
        let json_path = work.path().join("tar-data.json");
        let gz_path = work.path().join("tar-data.json.gz");
        let json = CountingWriter {
            inner: BufWriter::new(File::create(&json_path)?),
            count: 0,
        };
        let mut engine = DisasmEngine::new(
            CountingPacker {
                inner: JsonPacker::new(json),
                files: 0,
            },
            DiscardFilePutter,
            NoVisitor,
            DisasmOptions::default(),
        );
        disassemble_to(File::open(tar)?, io::sink(), &mut engine)
            .with_context(|| format!("disassembling {}", tar.display()))?;
        let (packer, _, _) = engine.into_parts();
        let files = packer.files;
        let mut json = packer.inner.into_inner();
        json.flush()?;
        let json_len = json.count;
        drop(json);
        let mut gz = gzip_writer(CountingWriter {
            inner: BufWriter::new(File::create(&gz_path)?),
            count: 0,
        });
        io::copy(&mut File::open(&json_path)?, &mut gz)?;
        let mut gz_out = gz.finish()?;
        gz_out.flush()?;
        println!(" -- number of files: {files}");
        println!(" -- size of metadata uncompressed: {}k", json_len / 1024);
        println!(
            " -- size of gzip compressed metadata: {}k",
            gz_out.count / 1024
        );
        if args.work {
            let kept = work.keep();
            println!(" -- working files kept in {}", kept.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::spare_core;

    #[test]
    fn helpers_only_with_a_core_to_spare() {
        assert!(!spare_core(1, Some(0)));
        assert!(!spare_core(1, None));
        assert!(spare_core(2, Some(0)));
        assert!(spare_core(2, Some(1)));
        assert!(!spare_core(2, Some(2)));
        assert!(!spare_core(2, Some(9)));
        assert!(spare_core(2, None));
        assert!(spare_core(8, Some(7)));
        assert!(!spare_core(8, Some(8)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_runnable_count() {
        assert!(super::other_runnable().is_some());
    }
}
