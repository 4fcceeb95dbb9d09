//! Shared input generators for the criterion benches in this directory.
