//! `gateway run --config FILE`: the service; the run loop lives in [`crate::app`].

pub use crate::app::main;
