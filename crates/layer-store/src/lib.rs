//! A container image layer store, compatible with Docker's.
//!
//! The [`Store`] turns layer tarballs into content-addressed, reference-counted read-only
//! [`Layer`]s on a graph driver (overlay2 or vfs), gives containers writable [`RwLayer`]s on
//! top, and hands back each layer's exact original tar bytes on demand. It reads and writes
//! Docker's on-disk format: `<root>/image/<driver>/layerdb` for metadata and `<root>/<driver>`
//! for the driver, so a Docker data-root (daemon stopped) opens as-is.
//!
//! ```no_run
//! use std::io::Read;
//! use layer_store::{CreateRwOptions, Store, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(StoreOptions::new("/var/lib/mystore"))?;
//! let base = store.register(std::fs::File::open("base.tar")?, None)?;
//! let app = store.register(std::fs::File::open("app.tar")?, Some(base.chain_id()))?;
//!
//! // A container on top, with its own writable layer.
//! let rw = store.create_rw_layer("ctr1", Some(app.chain_id()), &CreateRwOptions::default())?;
//! let root = rw.mount("")?;
//! std::fs::write(root.join("hello"), "world")?;
//! rw.unmount()?;
//! for change in rw.changes()? {
//!     println!("{change}"); // "A /hello"
//! }
//!
//! // The exact bytes that were registered, verified against the DiffID.
//! let mut tar = Vec::new();
//! app.tar_stream()?.read_to_end(&mut tar)?;
//!
//! store.release_rw_layer(rw)?;
//! store.release(app)?;
//! store.release(base)?;
//! # Ok(()) }
//! ```
//!
//! # From async code
//!
//! Every method blocks on disk I/O (a register or an export reads or writes a whole layer),
//! so async code runs them on its runtime's blocking pool (`tokio::task::spawn_blocking`);
//! a [`Store`] is `Clone + Send + Sync`, and a [`Layer`] is `Clone + Send`. To stream a
//! layer's tar into an async body (an HTTP response, say), read it on a blocking thread and
//! hand chunks over a *bounded* channel: the receiver is the body's stream (wrapped in
//! `tokio_stream::wrappers::ReceiverStream` it is the `Stream<Item = io::Result<_>>` that
//! `axum::body::Body::from_stream` or hyper's `StreamBody` take), and a slow client slows the
//! reader instead of the layer piling up in memory. A read error, including a digest that
//! does not match the DiffID at the end, arrives as the stream's last item.
//!
//! ```
//! use std::io::Read;
//! use layer_store::{Store, StoreOptions};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # let dir = tempfile::tempdir()?;
//! # let root = dir.path().to_path_buf();
//! # let mut w = layer_archive::TarWriter::new(Vec::new());
//! # w.append(&layer_archive::Header::file("hello", 3), Some(&mut &b"hi\n"[..]))?;
//! # let tar: Vec<u8> = w.finish()?;
//! # let input = tar.clone();
//! // Open and register on the blocking pool.
//! let opts = StoreOptions::new(root).driver("vfs");
//! let store = tokio::task::spawn_blocking(move || Store::open(opts)).await??;
//! let s = store.clone();
//! let layer = tokio::task::spawn_blocking(move || s.register(&tar[..], None)).await??;
//!
//! // Export: a blocking reader feeds a bounded channel, chunk by chunk.
//! let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
//! let source = layer.layer().clone();
//! tokio::task::spawn_blocking(move || {
//!     let mut stream = match source.tar_stream() {
//!         Ok(stream) => stream,
//!         Err(e) => return drop(tx.blocking_send(Err(std::io::Error::other(e)))),
//!     };
//!     loop {
//!         let mut chunk = vec![0; 64 << 10];
//!         let item = match stream.read(&mut chunk) {
//!             Ok(0) => return,
//!             Ok(n) => {
//!                 chunk.truncate(n);
//!                 Ok(chunk)
//!             }
//!             Err(e) => Err(e),
//!         };
//!         let failed = item.is_err();
//!         // A closed receiver (the client went away) ends the export.
//!         if tx.blocking_send(item).is_err() || failed {
//!             return;
//!         }
//!     }
//! });
//!
//! // The async side: here collected; in a server, the response body.
//! let mut body = Vec::new();
//! while let Some(chunk) = rx.recv().await {
//!     body.extend_from_slice(&chunk?);
//! }
//! assert_eq!(body, input); // the exact bytes registered
//!
//! tokio::task::spawn_blocking(move || store.release(layer)).await??;
//! # Ok(()) }
//! ```
//!
//! Reference counting follows moby: a layer counts the references handed out by
//! [`Store::register`] and [`Store::get`], its children, and the RW layers on it; the release
//! that drops the count to zero deletes it and releases its parent in turn. An image store on
//! top holds a [`LayerRef`] per image (as dockerd's does) and the store respects it like any
//! other count; [`Store::users`] says who holds a layer.
//!
//! # Destroying only what nothing references
//!
//! Every destructive operation ([`Store::release`], [`Store::release_rw_layer`],
//! [`Store::collect_garbage`], [`Store::check`]'s repair) removes only what is provably
//! unreferenced: a driver directory or record named by a layer record (loadable or not), a
//! mount record (loadable or not), a parent link, a held reference or work in flight stays.
//! What cannot be loaded is reported and kept, and holds a count on the layer it names as
//! its parent. Before writing to a root, a tool should ask [`live::live_users`] whether
//! another engine (a running dockerd...) uses it: the root's lock only keeps stores apart.
//!
//! Where this store deliberately differs from moby, the method docs say so. In short: a
//! failed or duplicate register, a failed RW create and a repair never delete a parent nothing
//! else holds (moby's release there can); a failed release leaves memory matching the disk;
//! unloadable records count as users; gc collects what moby leaks (stale write-sets, unnamed
//! driver directories); a second open of a root in one process is an error, not a hang.

#![warn(missing_docs, unreachable_pub)]

mod check;
mod drivers;
mod error;
mod gc;
mod ids;
mod layer;
pub mod live;
mod locks;
mod pipeline;
mod remap;
mod rwlayer;
mod store;
mod tarstream;

pub use check::{CheckOptions, CheckReport, Problem};
pub use drivers::{DRIVERS, choose as choose_driver, in_use as driver_in_use};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use layer::{EmptyLayer, Layer, LayerRef, Metadata};
pub use remap::store_root;
pub use rwlayer::{CreateRwOptions, InitFn, RwLayer, RwLayerRef};
pub use store::{DEFAULT_MAX_DEPTH, LayerUsers, Store, StoreOptions};
