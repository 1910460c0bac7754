//! Abuse of the camera surface (see ../mod.rs).
