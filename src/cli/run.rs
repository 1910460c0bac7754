//! `gateway run --config FILE`: validates the config before anything starts (exit 64 on
//! problems), builds the real world — the console's socket bound, systemd's notify socket
//! from the environment, the system clock, SIGINT/SIGTERM/SIGHUP handlers, `--run-for-secs`
//! — and runs [`crate::app::run`] in it, mapping its outcome to an exit code.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{print_problems, EXIT_CONFIG};
use crate::app::{self, CheckedConfig, Failure, Requests, World};
use crate::console::ConfigRequest;
use crate::deliver::SystemClock;
use crate::notify::Notifier;

/// Runs the subcommand; returns the exit code.
pub async fn main(config_path: &Path, run_for: Option<Duration>) -> i32 {
    // Validate everything (model included) before binding anything.
    let config = match CheckedConfig::load(config_path) {
        Ok(config) => config,
        Err(problems) => {
            print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let console = match &config.config.console {
        Some(console) => match tokio::net::TcpListener::bind(console.bind).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                error!(address = %console.bind, error = %err, "cannot bind the console");
                return 1;
            }
        },
        None => None,
    };
    let shutdown = CancellationToken::new();
    let requests = Requests::new();
    spawn_signal_handlers(shutdown.clone(), requests.sender());
    if let Some(run_for) = run_for {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(run_for).await;
            info!(seconds = run_for.as_secs(), "--run-for-secs elapsed, stopping");
            shutdown.cancel();
        });
    }
    let world = World {
        config_path: config_path.to_path_buf(),
        console,
        notifier: Notifier::from_env(),
        clock: Arc::new(SystemClock),
        requests,
    };
    match app::run(config, world, shutdown).await {
        Ok(()) => 0,
        Err(Failure::Config(err)) => {
            eprintln!("{err:#}");
            EXIT_CONFIG
        }
        Err(failure @ Failure::Start(_)) => {
            error!(error = %failure, "cannot start");
            1
        }
    }
}

fn spawn_signal_handlers(shutdown: CancellationToken, requests: mpsc::Sender<ConfigRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (mut terminate, mut hangup) = match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(terminate), Ok(hangup)) => (terminate, hangup),
            (Err(err), _) | (_, Err(err)) => {
                error!(error = %err, "cannot install signal handlers");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    info!("SIGINT received, stopping");
                    break;
                }
                _ = terminate.recv() => {
                    info!("SIGTERM received, stopping");
                    break;
                }
                _ = hangup.recv() => {
                    if requests.send(ConfigRequest::Reload { trigger: "SIGHUP" }).await.is_err() {
                        return;
                    }
                }
            }
        }
        shutdown.cancel();
    });
}
