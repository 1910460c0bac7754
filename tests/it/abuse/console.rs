//! Abuse of the console surface (see ../mod.rs).
