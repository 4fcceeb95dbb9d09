//! Content digests for container image layers.
//!
//! A layer store names everything by content:
//!
//! * a [`Digest`] is an `algorithm:hex` string such as `sha256:5f70bf18…`, validated on parse;
//! * a [`DiffId`] is the digest of a layer's *uncompressed* tar stream, every byte up to EOF;
//! * a [`ChainId`] names a layer *together with all its parents*: for a base layer it equals the
//!   DiffID, otherwise it is `sha256("<parent chain id> <diff id>")` over the string forms.
//!
//! [`Digester`] computes a digest while data streams through it, as an [`std::io::Write`] sink or
//! as a tee over an [`std::io::Read`] ([`DigestReader`]), so a caller can hash a layer in the same
//! pass that extracts it.
//!
//! ```
//! use layer_digest::{chain_id, chain_ids, DiffId, Digester, EMPTY_LAYER_DIFF_ID};
//! use std::io::Write;
//!
//! // The DiffID of an empty tar (two zero blocks) is a well-known constant.
//! let mut d = Digester::sha256();
//! d.write_all(&[0u8; 1024]).unwrap();
//! assert_eq!(d.finish().to_string(), EMPTY_LAYER_DIFF_ID.to_string());
//!
//! // Chain IDs fold the diff IDs from the base up.
//! let base: DiffId = "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba".parse().unwrap();
//! let ids = chain_ids(&[base.clone()]);
//! assert_eq!(ids[0].as_digest(), base.as_digest());
//! assert_eq!(chain_id(None, &base), ids[0]);
//! ```

#![warn(missing_docs, unreachable_pub)]

mod digest;
mod digester;
mod ids;

pub use digest::{Algorithm, Digest, DigestError};
pub use digester::{DigestReader, Digester};
pub use ids::{ChainId, DiffId, EMPTY_LAYER_DIFF_ID, chain_id, chain_ids};
