//! `gateway check-config FILE`: validates everything `run` would use, including that the model
//! loads and its input/output shapes match the manifest. Exit 0, or 64 with every problem.

use std::path::Path;

use super::{load_and_check, print_problems, EXIT_CONFIG};

/// Runs the subcommand.
pub fn main(path: &Path) -> i32 {
    match load_and_check(path) {
        Ok((config, detector)) => {
            let manifest = &detector.model().manifest;
            println!(
                "{}: ok ({} camera(s), model {} {} {}x{})",
                path.display(),
                config.cameras.len(),
                manifest.name,
                manifest.version,
                manifest.input_width,
                manifest.input_height
            );
            0
        }
        Err(problems) => {
            print_problems(path, &problems);
            EXIT_CONFIG
        }
    }
}
