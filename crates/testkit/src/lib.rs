//! The workspace's one test kit, a dev-dependency of every crate's tests (never published).
//!
//! * [`gate`]: what a test needs from the machine (root, overlayfs, Go, the Go `tar-split`
//!   CLI, dockerd, a tool, the shared fixtures). A gate hands back what the test needs, or a
//!   [`gate::Skip`] that is printed once (`skipped: <test>: <why>`), counted for
//!   `cargo xtask test`'s summary line, and a failure under `CI=true` where CI must have it.
//! * [`tar`]: a tar builder for layer tars and archives, including the malformed entries
//!   (`..` names, raw link names) the `tar` crate refuses to write.
//! * [`digest`]: oracles computed with `sha2` alone, independent of the code under test:
//!   `sha256:<hex>`, DiffIDs and chain IDs by moby's rule.
//! * [`leftovers`]: the "no leftovers" scan of a data-root on disk that every crash harness
//!   runs after recovery; with the `store` feature, `store` adds the whole-store invariants
//!   over layer-store's API (and a store per driver, layers made through RW layers).
//! * `meta` (feature `meta`): deterministic test layers for layer-meta's transactions.
//! * `archive` (feature `archive`): tars of layer-archive headers and tree descriptions;
//!   `overlay2` (feature `driver`): the overlay2 driver tests' helpers.
//! * [`dockerd`]: a private Docker 20.10 daemon (own data-root, socket, exec-root), stopped
//!   by pid; [`testuser`]: throwaway users with subordinate ID ranges, deleted on drop.
//! * `layerctl` (feature `layerctl`): the built `layerctl` binary run as users run it, on
//!   the drivers it starts on here; `image` (same feature): layer tars, `docker save`
//!   archives, OCI layouts and a runnable busybox image for `load`.
//! * `moby` (feature `moby`): moby 20.10's own layer store (`../shared/peers/moby-open`)
//!   built and run as the judge of a data-root.
//! * `tarsplit` (feature `tarsplit`): the tar-split fixtures with Go's goldens, and a
//!   proptest strategy for generated archives.
//!
//! ```
//! // In a test: run only where the machine can, skip (counted) elsewhere.
//! fn needs_root() {
//!     testkit::require!(testkit::gate::root("chown to other IDs"));
//!     // ... the test proper
//! }
//! # needs_root();
//! ```

#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "archive")]
pub mod archive;
pub mod digest;
pub mod dockerd;
pub mod gate;
#[cfg(feature = "layerctl")]
pub mod image;
#[cfg(feature = "layerctl")]
pub mod layerctl;
pub mod leftovers;
#[cfg(feature = "meta")]
pub mod meta;
#[cfg(feature = "moby")]
pub mod moby;
#[cfg(feature = "driver")]
pub mod overlay2;
#[cfg(feature = "store")]
pub mod store;
pub mod tar;
#[cfg(feature = "tarsplit")]
pub mod tarsplit;
pub mod testuser;
pub mod tree;

/// Returns from the calling test when a gate says skip (the skip is already recorded).
///
/// `let go = testkit::require!(testkit::gate::go());` binds what the gate hands back.
#[macro_export]
macro_rules! require {
    ($gate:expr) => {
        match $gate {
            Ok(value) => value,
            Err(_skip) => return,
        }
    };
}
