//! Timing a process: wall seconds and peak RSS (from `wait4`'s rusage, the child and every
//! descendant it waited for, as GNU time reports it; no `/usr/bin/time` needed).
//!
//! Linux folds the *parent's* high-water RSS into a child's `ru_maxrss` when the child execs
//! (the child starts on the parent's memory map, vfork or fork). So the harness must stay
//! small: stdout is drained 64 KiB at a time (one buffer per running child), only its first
//! 64 KiB kept, and JSON keys are
//! counted as the bytes go by. [`harness_hwm_kib`] reports the floor this leaves.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result};

/// How much of a child's stdout is kept as text (the rest is only counted).
const KEEP: usize = 64 << 10;

/// What stdout lines are counted: the key every listed layer has in `ls --json` (ours) and
/// `-ls` (moby).
pub const COUNTED: &[u8] = b"\"chain_id\"";

/// One finished process.
#[derive(Debug)]
pub struct Run {
    pub wall: f64,
    pub rss_kb: u64,
    pub ok: bool,
    /// The start of stdout (up to 64 KiB), as text.
    pub stdout: String,
    /// Every byte written to stdout (exports are drained and counted, never stored).
    pub out_bytes: u64,
    /// How often [`COUNTED`] occurs in stdout.
    pub counted: usize,
    pub stderr: String,
}

impl Run {
    /// Why it failed, in one line (the last line of stderr, or the exit status).
    pub fn why(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("non-zero exit")
            .chars()
            .take(160)
            .collect()
    }

    /// The last non-empty line of stdout, trimmed (an ID a command printed).
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
    }
}

struct Spawned {
    child: Child,
    out: JoinHandle<(Vec<u8>, u64, usize)>,
    err: JoinHandle<Vec<u8>>,
}

fn spawn(cmd: &mut Command, count: bool) -> Result<Spawned> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("stdout pipe")?;
    let mut stderr = child.stderr.take().context("stderr pipe")?;
    {
        use std::os::fd::AsRawFd as _;
        // A 1 MiB pipe: exports of gigabytes cost fewer wake-ups (the same for every peer).
        // SAFETY: fcntl on a pipe fd we own; failure only leaves the default size.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    }
    let out = std::thread::spawn(move || {
        let mut keep = Vec::new();
        let mut total = 0u64;
        let mut counted = 0;
        // The last bytes of the previous read, so a key split across two reads is seen.
        let tail = COUNTED.len() - 1;
        let mut buf = vec![0u8; tail + (64 << 10)];
        let mut carry = 0;
        loop {
            match stdout.read(&mut buf[carry..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    let room = KEEP.saturating_sub(keep.len()).min(n);
                    keep.extend_from_slice(&buf[carry..carry + room]);
                    if count {
                        let seen = &buf[..carry + n];
                        counted += seen
                            .windows(COUNTED.len())
                            .filter(|w| *w == COUNTED)
                            .count();
                        let keep_from = seen.len().saturating_sub(tail);
                        buf.copy_within(keep_from..carry + n, 0);
                        carry = carry + n - keep_from;
                    }
                }
            }
        }
        (keep, total, counted)
    });
    // Only the end of stderr is kept (the error is its last line): a peer can print
    // megabytes there (moby lists a deep tree's every path), which would raise the harness's
    // high-water mark.
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            v.extend_from_slice(&buf[..n]);
            if v.len() > KEEP {
                v.drain(..v.len() - KEEP / 2);
            }
        }
        v
    });
    Ok(Spawned { child, out, err })
}

/// Reaps `pid` with `wait4`: (exited with 0, peak RSS in KiB).
fn reap(pid: u32) -> Result<(bool, u64)> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and usage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

fn finish(s: Spawned, wall: f64, ok: bool, rss_kb: u64) -> Run {
    // The child is reaped already: `Child` must not be waited on again (dropping it does not).
    drop(s.child);
    let (keep, out_bytes, counted) = s.out.join().unwrap_or_default();
    let stderr = s.err.join().unwrap_or_default();
    Run {
        wall,
        rss_kb,
        ok,
        stdout: String::from_utf8_lossy(&keep).into_owned(),
        out_bytes,
        counted,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The harness's own peak RSS (KiB): the floor under every child's figure (see above).
pub fn harness_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `cmd` to the end: stdout drained (the first 64 KiB kept, every byte counted), stdin
/// empty.
pub fn run(cmd: &mut Command) -> Result<Run> {
    run_inner(cmd, false)
}

/// [`run`], also counting [`COUNTED`] in stdout (for listings; too slow for gigabytes).
pub fn run_counting(cmd: &mut Command) -> Result<Run> {
    run_inner(cmd, true)
}

fn run_inner(cmd: &mut Command, count: bool) -> Result<Run> {
    let t0 = Instant::now();
    let s = spawn(cmd, count)?;
    let (ok, rss) = reap(s.child.id())?;
    let wall = t0.elapsed().as_secs_f64();
    Ok(finish(s, wall, ok, rss))
}

/// Starts every command at once and waits for all: (wall seconds until the last one ended,
/// each one's run; a run's `wall` is its own).
pub fn run_all(cmds: &mut [Command]) -> Result<(f64, Vec<Run>)> {
    let t0 = Instant::now();
    let mut spawned = Vec::new();
    for c in cmds.iter_mut() {
        spawned.push(spawn(c, false)?);
    }
    let mut runs = Vec::new();
    for s in spawned {
        let (ok, rss) = reap(s.child.id())?;
        let wall = t0.elapsed().as_secs_f64();
        runs.push(finish(s, wall, ok, rss));
    }
    Ok((t0.elapsed().as_secs_f64(), runs))
}
