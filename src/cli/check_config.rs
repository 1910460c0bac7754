//! `gateway check-config FILE`: validates everything `run` would use, including that each
//! model (`[detector] model`, and `wide_model` when set) has its manifest's sha256, loads, and
//! has the input/output shapes its manifest names. Exit 0, or 64 with every problem.

use std::path::Path;

use super::{load_and_check, print_problems, EXIT_CONFIG};

/// Runs the subcommand.
pub fn main(path: &Path) -> i32 {
    match load_and_check(path) {
        Ok((config, detectors)) => {
            let describe = |model: &crate::detect::Model| {
                let manifest = &model.manifest;
                format!("{} {} {}x{}", manifest.name, manifest.version, manifest.input_width, manifest.input_height)
            };
            let models = detectors.models();
            let wide =
                models.wide.as_deref().map(|wide| format!(", wide model {}", describe(wide))).unwrap_or_default();
            println!(
                "{}: ok ({} camera(s), model {}{wide})",
                path.display(),
                config.cameras.len(),
                describe(&models.square)
            );
            0
        }
        Err(problems) => {
            print_problems(path, &problems);
            EXIT_CONFIG
        }
    }
}
