//! `gateway`: the street-camera event gateway's command line. A table of subcommands; each
//! lives in `gateway::cli`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::cli;

#[derive(Parser)]
#[command(name = "gateway", version, about = "Street-camera event gateway")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Stop after this many seconds (demos, benchmarks).
        #[arg(long)]
        run_for_secs: Option<u64>,
    },
    /// Validate a config file, model included; exit 64 listing every problem.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Run footage through one camera's full pipeline as fast as possible; print incident events.
    Replay {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Camera whose zones and rules to use.
        #[arg(long)]
        camera: String,
        /// One JSON object per event per line.
        #[arg(long)]
        json: bool,
        /// Also write the clip's figures (frames analysed, inferences run and reused by the
        /// change gate, the gate's µs per frame) to this file as one JSON object.
        #[arg(long)]
        stats: Option<PathBuf>,
        /// Footage file: H.264/H.265 in MP4, MKV or Annex B.
        footage: PathBuf,
    },
    /// Capture a clean reference picture of a camera's view for its bin areas.
    Reference {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Camera to capture.
        #[arg(long)]
        camera: String,
        /// Image file to write (PNG or JPEG, by extension).
        #[arg(long)]
        output: PathBuf,
        /// Take it from this footage instead of the camera.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Footage time of the first keyframe to consider.
        #[arg(long, default_value_t = 0.0)]
        at_secs: f64,
    },
    /// Measure the CPU cost of one analysed frame (keyframe decode + preprocess + inference)
    /// on footage, on one thread.
    Calibrate {
        /// Config file whose [detector] to use (each model in use: `model`, and `wide_model`
        /// when set); default: the bundled model.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Model manifest to run instead of the config's models (e.g.
        /// models/yolox_nano_416x256.toml).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Keyframes to measure per file.
        #[arg(long, default_value_t = 50)]
        frames: usize,
        /// One JSON object per footage file and model per line.
        #[arg(long)]
        json: bool,
        /// Footage files: H.264/H.265 in MP4, MKV or Annex B.
        #[arg(required = true)]
        footage: Vec<PathBuf>,
    },
    /// Score the fall rule on a folder of clips with a ground truth (DIR/truth.csv): each clip
    /// replayed, padded with its last picture, incidents compared with the truth.
    EvalFalls {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Camera whose zones and rules to use; default: the first with a fall_watch zone.
        #[arg(long)]
        camera: Option<String>,
        /// Footage seconds of the last picture appended to each clip (the person stays down).
        #[arg(long, default_value_t = 40)]
        pad_secs: u32,
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Folder with truth.csv and the clips it lists.
        dir: PathBuf,
    },
    /// Run the configured detector on image files.
    Detect {
        /// Config file whose [detector] to use; default: the bundled model.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Model manifest to run instead of the config's `detector.model` (e.g.
        /// models/yolox_nano_416x256.toml).
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object per image per line.
        #[arg(long)]
        json: bool,
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Read each image as one bin area: overflowing or normal, with P(overflowing).
    BinState {
        /// Config file whose models to use (with --camera and --zone: that zone's model on
        /// the zone's crop); default: the bundled generic model on the whole image.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Camera of the zone (with --config).
        #[arg(long)]
        camera: Option<String>,
        /// Bin-area zone whose model reads its crop of each image (with --config).
        #[arg(long)]
        zone: Option<String>,
        /// One JSON object per image per line.
        #[arg(long)]
        json: bool,
        /// Image files (JPEG or PNG).
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Make the generic bin-state model from a labelled set of photos (scripts/setup runs it).
    BinTrain {
        /// Folder with labels.csv and the photos; default $GATEWAY_BINS_DATASET, else
        /// ../shared/media/bins beside the project.
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// Model file to write; default models/bin_state_default.json.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also print leave-one-scene-out and few-shot figures.
        #[arg(long)]
        evaluate: bool,
        /// Make a zone's own model from the set (that zone's crops), starting from the
        /// generic default; needs --output.
        #[arg(long)]
        zone: bool,
    },
}

fn main() {
    let args = Args::parse();
    gateway::logging::init();
    let code = match args.command {
        Command::Run { config, run_for_secs } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("gateway-io")
            .build()
            .expect("tokio runtime")
            .block_on(cli::run::main(&config, run_for_secs.map(Duration::from_secs))),
        Command::CheckConfig { file } => cli::check_config::main(&file),
        Command::Replay { config, camera, json, stats, footage } => {
            cli::replay::main(&config, &camera, json, stats.as_deref(), &footage)
        }
        Command::Reference { config, camera, output, from, at_secs } => {
            cli::reference::main(&config, &camera, &output, from.as_deref(), at_secs)
        }
        Command::EvalFalls { config, camera, pad_secs, json, dir } => {
            cli::eval_falls::main(&config, camera.as_deref(), pad_secs, json, &dir)
        }
        Command::Detect { config, model, json, images } => {
            cli::detect::main(config.as_deref(), model.as_deref(), json, &images)
        }
        Command::Calibrate { config, model, frames, json, footage } => {
            cli::calibrate::main(config.as_deref(), model.as_deref(), frames, json, &footage)
        }
        Command::BinState { config, camera, zone, json, images } => {
            cli::bin_state::main(config.as_deref(), camera.as_deref(), zone.as_deref(), json, &images)
        }
        Command::BinTrain { dataset, output, evaluate, zone } => {
            cli::bin_state::train_main(dataset.as_deref(), output.as_deref(), evaluate, zone)
        }
    };
    std::process::exit(code);
}
