//! The `gateway` command's subcommands. `main` parses arguments and dispatches here; each
//! subcommand returns the process exit code.

pub mod check_config;
pub mod detect;
pub mod run;

use std::path::Path;

use crate::config::{self, Config, ConfigProblem, ConfigProblems};
use crate::detect::Detector;

/// Exit code for a bad config or bad usage (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Loads a config and checks that its detector starts (library, model, shapes): everything
/// `check-config` promises. Model problems are reported under `detector.model`.
pub fn load_and_check(path: &Path) -> Result<(Config, Detector), ConfigProblems> {
    let config = config::load(path)?;
    match Detector::load(&config.detector) {
        Ok(detector) => Ok((config, detector)),
        Err(error) => Err(ConfigProblems(vec![ConfigProblem {
            path: "detector.model".to_string(),
            message: format!("{error:#}"),
        }])),
    }
}

/// Prints every problem, one per line, to stderr.
pub fn print_problems(path: &Path, problems: &ConfigProblems) {
    eprintln!("{}: {} problem(s):", path.display(), problems.0.len());
    for problem in &problems.0 {
        eprintln!("{problem}");
    }
}
