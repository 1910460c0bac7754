//! Abuse of the mqtt surface (see ../mod.rs).
