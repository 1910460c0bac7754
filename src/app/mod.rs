//! The service behind `gateway run`: [`run`] takes a checked config, its *world* and a
//! shutdown token, and runs the pipeline, delivery, the console and the run loop until the
//! token is cancelled. The world ([`World`]) is everything that touches the process's
//! surroundings — the console's bound listener, systemd's notify socket, the wall clock,
//! the channel config reloads arrive on — so `cli::run` (signals, sockets, environment, exit
//! codes) builds the real one and tests pass their own (`127.0.0.1:0`, a clock that follows
//! tokio's paused time), as mini-redis's `server::run(listener, shutdown)` does.
//!
//! The run loop is the one owner of the cameras' engines and of the config: analysed frames,
//! config reloads (SIGHUP, or the file changed on disk) and the zone editor's saves all come
//! to it, so a change is applied between two frames, to the cameras it concerns only
//! ([`reload`]). It pings systemd's watchdog only while it turns and the detector makes
//! progress, so a hang is caught, not masked. Its timers are tokio's, its wall time the
//! world's clock, so a paused tokio clock drives all of it. It decides and hands over:
//! incident events go to the `recorder` thread (`crate::recorder`), which writes their
//! evidence and commits them.
//!
//! What it does not do: read the environment, install signal handlers, bind sockets or exit.

mod commits;
mod spill;
// Stamps frames with their ingest time (`received_at`, a monotonic instant) and times the
// commits: the run loop's own edges, next to the recorder work of issue 12.
#[allow(clippy::disallowed_methods)]
mod incidents;
pub mod reload;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::{load_and_check, model_problems};
use crate::config::{CameraConfig, CameraId, Config, ConfigProblem, ConfigProblems};
use crate::console::{ConfigRequest, DetectionView, EditRefused, LatestFrame, Shared, ZonesSaved};
use crate::deliver::{Clock, Delivery, DeliverySettings};
use crate::detect::{AnalysedFrame, Model};
use crate::engine::CameraEngine;
use crate::evidence;
use crate::notify::Notifier;
use crate::outbox::Outbox;
use crate::pipeline::Pipeline;
use crate::recorder::Recorder;
use incidents::{Evidence, Sinks};

/// How often the per-camera summary is logged.
const STATS_EVERY: Duration = Duration::from_secs(10);
/// How often the loop samples queues, recovers degraded cameras and checks the config file.
const TICK: Duration = Duration::from_secs(1);
/// How often evidence retention runs (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// The detector counts as stuck when frames wait for it and none was analysed this long.
const DETECTOR_STUCK_AFTER: Duration = Duration::from_secs(30);
/// The recorder counts as stuck when one job (or retry) takes this long: a hung disk.
const RECORDER_STUCK_AFTER: Duration = Duration::from_secs(30);

/// A camera's config, engine and zone classifiers, as the run loop keeps them.
pub(super) struct CameraRuntime {
    camera: CameraConfig,
    engine: CameraEngine,
    classifiers: crate::cli::ZoneClassifiers,
}

/// Everything the run loop owns.
struct Gateway {
    config: Arc<Config>,
    config_path: PathBuf,
    classes: Vec<String>,
    cameras: HashMap<CameraId, CameraRuntime>,
    pipeline: Pipeline,
    outbox: Arc<Outbox>,
    /// The recorder thread: evidence and commits of incident events and books (held and
    /// retried there while the disk refuses them).
    recorder: Recorder<Evidence>,
    /// Jobs the recorder's full queue handed back, in order: while any waits, the loop takes
    /// no frames and awaits room (`crate::recorder`'s backpressure rule).
    kept: VecDeque<Evidence>,
    /// Since when `kept` waits.
    waiting_since: Option<Instant>,
    model: Arc<Model>,
    shared: Arc<Shared>,
    /// Modification time of the config file as last loaded or written.
    config_modified: Option<SystemTime>,
    /// Wall-clock time (the world's).
    clock: Arc<dyn Clock>,
}

/// A config that passed `check-config`'s validation, with the class names of the model it
/// names (zone classifiers and reloads are checked against them).
pub struct CheckedConfig {
    /// The validated config.
    pub config: Config,
    /// The detector's class names, in its output order.
    pub classes: Vec<String>,
}

impl CheckedConfig {
    /// Loads and validates `path` as `check-config` does, model included.
    pub fn load(path: &Path) -> Result<CheckedConfig, ConfigProblems> {
        let (config, detector) = load_and_check(path)?;
        Ok(CheckedConfig { classes: detector.square().model().manifest.classes.clone(), config })
    }
}

/// Config requests from outside the console (SIGHUP): a channel the run loop reads, whose
/// sender the caller keeps. The console gets its own sender of the same channel.
pub struct Requests {
    sender: mpsc::Sender<ConfigRequest>,
    receiver: mpsc::Receiver<ConfigRequest>,
}

impl Requests {
    /// A fresh channel (16 requests waiting: a reload storm waits, never grows).
    pub fn new() -> Requests {
        let (sender, receiver) = mpsc::channel(16);
        Requests { sender, receiver }
    }

    /// A sender for a signal handler (or a test).
    pub fn sender(&self) -> mpsc::Sender<ConfigRequest> {
        self.sender.clone()
    }
}

impl Default for Requests {
    fn default() -> Self {
        Requests::new()
    }
}

/// Everything [`run`] gets from the process's surroundings.
pub struct World {
    /// The config file: reloaded when it changes, rewritten by the zone editor.
    pub config_path: PathBuf,
    /// The console's listener, already bound (`None`: no console).
    pub console: Option<tokio::net::TcpListener>,
    /// systemd's notify socket, when run under systemd.
    pub notifier: Option<Notifier>,
    /// Wall-clock time: incident times, follow-up timers, evidence age.
    pub clock: Arc<dyn Clock>,
    /// Reload requests from outside (SIGHUP).
    pub requests: Requests,
}

/// Why [`run`] could not run; the exit code is the caller's to choose.
#[derive(Debug)]
pub enum Failure {
    /// A camera's reference pictures or zone models cannot be loaded (`gateway run` exits 64).
    Config(anyhow::Error),
    /// Something the gateway needs cannot start: the outbox, the incident books, the
    /// detector, MQTT delivery (exit 1).
    Start(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Config(err) | Failure::Start(err) => write!(f, "{err:#}"),
        }
    }
}

/// Runs the gateway until `shutdown` is cancelled (or the pipeline ends); Ok after a clean stop.
pub async fn run(config: CheckedConfig, world: World, shutdown: CancellationToken) -> Result<(), Failure> {
    let CheckedConfig { config, classes } = config;
    let World { config_path, console: console_listener, notifier, clock, requests } = world;
    let Requests { sender: requests, receiver: mut request_receiver } = requests;
    let config_modified = modified(&config_path);
    let config = Arc::new(config);
    let mut cameras = build_cameras(&config, &classes).map_err(Failure::Config)?;
    let outbox_path = config.state_dir.join("outbox.redb");
    let outbox = Outbox::open(&outbox_path, config.outbox_max_entries).map(Arc::new).map_err(|err| {
        Failure::Start(err.context("cannot open the outbox: refusing to run without somewhere to keep incidents"))
    })?;
    // Events a stop while the disk refused commits spilled: into the outbox before anything
    // else, or, while it still refuses, held in memory in front of everything (their books too).
    let spilled = import_spill(config.outbox_spill_dir.as_deref(), &outbox);
    restore_books(&config, &outbox, &mut cameras, clock.now_ms())
        .map_err(|err| Failure::Start(err.context("cannot read the incident books: refusing to run without them")))?;
    for commit in &spilled.commits {
        if let Some((_, runtime)) = cameras.iter_mut().find(|(id, _)| id.as_str() == commit.camera) {
            runtime.engine.restore(commit.book.clone());
        }
    }
    match outbox.depth() {
        Ok(0) => {}
        Ok(depth) => info!(depth, path = %outbox_path.display(), "outbox holds undelivered events"),
        Err(err) => error!(error = format!("{err:#}"), "cannot read the outbox"),
    }
    let (pipeline, mut analysed) = Pipeline::start(&config, shutdown.clone())
        .await
        .map_err(|err| Failure::Start(err.context("cannot start the pipeline")))?;
    // The square model: class names (the wide one lists the same), events made by config
    // changes rather than frames.
    let model = pipeline.models().square.clone();
    let wide_model = pipeline.models().wide.as_ref().map(|wide| wide.manifest.name.clone());
    let delivery = match &config.mqtt {
        Some(mqtt) => {
            let settings = DeliverySettings {
                mqtt: mqtt.clone(),
                escalation: config.escalation.clone(),
                health: Some(pipeline.health.clone()),
            };
            match Delivery::start(settings, outbox.clone(), clock.clone(), shutdown.clone()) {
                Ok(delivery) => Some(delivery),
                Err(err) => {
                    shutdown.cancel();
                    pipeline.stop().await;
                    return Err(Failure::Start(err.context("cannot set up MQTT delivery")));
                }
            }
        }
        None => {
            warn!("no [mqtt] in the config: incident events are kept in the outbox, not delivered");
            None
        }
    };
    let shared = Arc::new(Shared::new(
        config.clone(),
        config_path.clone(),
        pipeline.health.clone(),
        outbox.clone(),
        delivery.as_ref().map(|d| (d.stats.clone(), d.waker())),
        requests,
        shutdown.clone(),
        clock.clone(),
    ));
    let _ = shared.clips.set(pipeline.clips.clone());
    let _ = shared.models.set(pipeline.models().clone());
    let console = console_listener.map(|listener| {
        let read_only = config.console.as_ref().is_none_or(|console| console.token.is_none());
        if let Ok(address) = listener.local_addr() {
            info!(address = %address, read_only, "console listening");
        }
        tokio::spawn(crate::console::serve(listener, shared.clone(), shutdown.clone()))
    });
    let recorder = start_recorder(&config, &outbox, &model, &shared, delivery.as_ref().map(Delivery::waker), spilled);
    let mut gateway = Gateway {
        config: config.clone(),
        config_path,
        classes,
        cameras,
        pipeline,
        outbox,
        recorder,
        kept: VecDeque::new(),
        waiting_since: None,
        model: model.clone(),
        shared,
        config_modified,
        clock,
    };
    info!(
        cameras = config.cameras.len(),
        model = %model.manifest.name,
        wide_model = wide_model.as_deref().unwrap_or("none"),
        "gateway running"
    );
    if let Some(notifier) = &notifier {
        notifier.ready();
        notifier.status(&format!("running {} cameras", config.cameras.len()));
    }
    let watchdog_every = notifier.as_ref().and_then(Notifier::watchdog_interval).map(crate::notify::ping_period);
    let mut last_ping = monotonic_now();
    let mut progress = Progress::new(&gateway.pipeline);
    let mut capacity = Capacity::new(&config);
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.tick().await;
    let mut tick = tokio::time::interval(TICK);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
    let mut degraded: Option<String> = None;
    let mut recorder_stuck = false;
    loop {
        tokio::select! {
            // Not while the recorder's queue is full: frames (and the events they would make)
            // wait upstream, where skipping is bounded and counted.
            frame = analysed.recv(), if gateway.kept.is_empty() => match frame {
                Some(frame) => {
                    let started = monotonic_now();
                    log_frame(&frame);
                    gateway.shared.analysis_latency.lock().unwrap().record(frame.received_at.elapsed().as_secs_f64());
                    gateway.handle_frame(&frame);
                    gateway.shared.frame_handling.lock().unwrap().record(monotonic_now().saturating_duration_since(started).as_secs_f64());
                }
                None => break,
            },
            () = gateway.recorder.room(), if !gateway.kept.is_empty() => gateway.hand_over(),
            Some(request) = request_receiver.recv() => {
                if let Some(notifier) = &notifier {
                    notifier.reloading();
                }
                gateway.handle_request(request).await;
                if let Some(delivery) = &delivery {
                    delivery.wake();
                }
                if let Some(notifier) = &notifier {
                    notifier.ready();
                }
            }
            _ = tick.tick() => {
                let now_degraded = gateway.shared.commits.degraded();
                if now_degraded.is_some() != degraded.is_some() {
                    if let Some(notifier) = &notifier {
                        notifier.status(&match &now_degraded {
                            Some(_) => "degraded: incident events cannot be committed (disk full?), held and retried".to_string(),
                            None => format!("running {} cameras", gateway.config.cameras.len()),
                        });
                    }
                    degraded = now_degraded;
                }
                if !gateway.kept.is_empty() {
                    // The detector waits on us (we wait on the recorder), not stuck: keep the
                    // watchdog fed.
                    progress = Progress::new(&gateway.pipeline);
                }
                gateway.pipeline.health.recover_all();
                gateway.pipeline.clips.tick(monotonic_now());
                capacity.sample(&gateway.pipeline, &gateway.shared);
                let queues = &gateway.shared.queues;
                queues.detector.store(gateway.pipeline.detector_queue_depth(), Ordering::Relaxed);
                queues.analysed.store(analysed.len(), Ordering::Relaxed);
                // A recorder stuck on one job (a hung disk) stops the pings, as a hung run loop did.
                let busy_for = gateway.shared.recorder.busy_for();
                if (busy_for >= RECORDER_STUCK_AFTER) != recorder_stuck {
                    recorder_stuck = !recorder_stuck;
                    if recorder_stuck {
                        error!(seconds = busy_for.as_secs(), "the recorder has been on one job this long (disk hung?): no more watchdog pings, /healthz says stalled");
                    } else {
                        info!("the recorder is making progress again");
                    }
                }
                let healthy = progress.check(&gateway.pipeline) && !recorder_stuck;
                if healthy {
                    gateway.shared.beat();
                    if let (Some(notifier), Some(every)) = (&notifier, watchdog_every) {
                        if monotonic_now().saturating_duration_since(last_ping) >= every {
                            notifier.watchdog_ping();
                            last_ping = monotonic_now();
                        }
                    }
                }
                if gateway.config_file_changed() {
                    if let Some(notifier) = &notifier {
                        notifier.reloading();
                    }
                    gateway.handle_request(ConfigRequest::Reload { trigger: "config file changed" }).await;
                    if let Some(notifier) = &notifier {
                        notifier.ready();
                    }
                }
            }
            _ = stats.tick() => {
                log_stats(&gateway.pipeline, delivery.as_ref(), &gateway.outbox);
                gateway.pipeline.scheduler().rotate();
                gateway.shared.analysis_latency.lock().unwrap().rotate();
                gateway.shared.incident_latency.lock().unwrap().rotate();
                let frame_handling = gateway.shared.frame_handling.lock().unwrap().clone();
                info!(
                    frames = frame_handling.count,
                    mean_ms = format!("{:.2}", frame_handling.sum * 1e3 / frame_handling.count.max(1) as f64),
                    max_ms = format!("{:.2}", frame_handling.max * 1e3),
                    recent_max_ms = format!("{:.2}", frame_handling.recent_max() * 1e3),
                    "run loop time per analysed frame"
                );
                gateway.shared.frame_handling.lock().unwrap().rotate();
                gateway.shared.recorder.rotate();
            }
            _ = retention.tick() => {
                // One pass at a time, off the runtime; open incidents' files are kept.
                if pruning.as_ref().is_none_or(|pass| pass.is_finished()) {
                    pruning = Some(gateway.spawn_retention());
                }
            }
            () = shutdown.cancelled() => break,
        }
    }
    if let Some(notifier) = &notifier {
        notifier.stopping();
    }
    drop(analysed);
    // Every job, kept ones included, is done (or, with the disk refusing, logged as lost).
    let kept = std::mem::take(&mut gateway.kept);
    gateway.recorder.close_async(kept).await;
    log_stats(&gateway.pipeline, delivery.as_ref(), &gateway.outbox);
    shutdown.cancel();
    gateway.pipeline.stop().await;
    if let Some(delivery) = delivery {
        delivery.stopped().await;
    }
    if let Some(console) = console {
        let _ = console.await;
    }
    info!("gateway stopped");
    Ok(())
}

/// Watches that the detector makes progress while frames wait for it.
struct Progress {
    analysed: u64,
    since: Instant,
    stuck: bool,
}

impl Progress {
    fn new(pipeline: &Pipeline) -> Self {
        Progress { analysed: analysed_total(pipeline), since: monotonic_now(), stuck: false }
    }

    /// False while the detector is stuck (frames waiting, none analysed for a while).
    fn check(&mut self, pipeline: &Pipeline) -> bool {
        let analysed = analysed_total(pipeline);
        if analysed != self.analysed || pipeline.detector_queue_depth() == 0 {
            self.analysed = analysed;
            self.since = monotonic_now();
            if self.stuck {
                info!("the detector is making progress again");
                self.stuck = false;
            }
            return true;
        }
        let stuck = monotonic_now().saturating_duration_since(self.since) >= DETECTOR_STUCK_AFTER;
        if stuck && !self.stuck {
            error!(
                waiting = pipeline.detector_queue_depth(),
                seconds = monotonic_now().saturating_duration_since(self.since).as_secs(),
                "the detector has analysed nothing while frames wait: no more watchdog pings, /healthz says stalled"
            );
        }
        self.stuck = stuck;
        !stuck
    }
}

/// Estimates what the gateway can analyse per second from the measured cost of a frame, and
/// says so when the cameras ask for more.
struct Capacity {
    cpus: f64,
    sessions: f64,
    over: bool,
    meter: crate::schedule::CapacityMeter,
    started: Instant,
}

impl Capacity {
    fn new(config: &Config) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let sessions = (config.detector.sessions * config.detector.intra_op_threads) as f64;
        Capacity { cpus, sessions, over: false, meter: Default::default(), started: monotonic_now() }
    }

    fn sample(&mut self, pipeline: &Pipeline, shared: &Shared) {
        let demand = pipeline.scheduler().demand_by_camera();
        let mut analysed = 0u64;
        let mut costs = Vec::new();
        for camera in pipeline.health.cameras() {
            let c = &camera.counters;
            let frames = c.frames_analysed.load(Ordering::Relaxed);
            analysed += frames;
            costs.push(crate::schedule::CameraCost {
                demand_per_second: demand.get(&camera.id).copied().unwrap_or(0.0),
                analysed: frames,
                // The pose stage runs on the CPUs, not on a detector session: a frame with
                // crops costs more CPU, like a longer decode.
                decode_ms: (c.decode_us_total.load(Ordering::Relaxed) + c.pose_us_total.load(Ordering::Relaxed)) as f64
                    / 1e3,
                inference_ms: c.inference_us_total.load(Ordering::Relaxed) as f64 / 1e3,
            });
        }
        let stats = pipeline.scheduler().stats();
        // Each camera at its own model's (and gating's) cost, weighed by what it asks for.
        let (decode_ms, inference_ms) = crate::schedule::cost_at_demand(&costs);
        let estimate = crate::schedule::capacity_per_second(self.cpus, self.sessions, decode_ms, inference_ms);
        let now_ms = monotonic_now().saturating_duration_since(self.started).as_millis() as i64;
        let capacity = self.meter.update(now_ms, analysed, stats.waiting, estimate);
        let over = capacity > 0.0 && stats.demand_per_second > capacity;
        if over != self.over {
            if over {
                warn!(
                    demand = format!("{:.1}", stats.demand_per_second),
                    capacity = format!("{:.1}", capacity),
                    "the cameras ask for more frames per second than this machine can analyse: every camera will be revisited later than its interval (see gateway_camera_revisit_seconds)"
                );
            } else {
                info!(
                    demand = format!("{:.1}", stats.demand_per_second),
                    capacity = format!("{:.1}", capacity),
                    "demand is within capacity again"
                );
            }
            self.over = over;
        }
        *shared.schedule.lock().unwrap() =
            crate::console::metrics::ScheduleView { stats, capacity_per_second: capacity };
    }
}

fn analysed_total(pipeline: &Pipeline) -> u64 {
    pipeline.health.cameras().iter().map(|c| c.counters.frames_analysed.load(Ordering::Relaxed)).sum()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Now on tokio's clock, as the std instant commits and clips take: the paused clock in tests.
// The run loop's one monotonic clock read (app is the shell that owns the clocks).
#[allow(clippy::disallowed_methods)]
fn monotonic_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Gateway {
    /// Starts one evidence-retention pass on a blocking thread: deletes evidence past the
    /// configured age or size, never an open incident's (`evidence::retention`).
    fn spawn_retention(&self) -> tokio::task::JoinHandle<()> {
        let open: std::collections::HashSet<String> = self
            .cameras
            .values()
            .flat_map(|runtime| runtime.engine.book().open_incidents().into_iter().map(evidence::retention::sanitised))
            .collect();
        let (state_dir, policy) = (self.config.state_dir.clone(), self.config.evidence_retention);
        let clip_policy = self.config.evidence.clip_retention;
        let shared = self.shared.clone();
        let now_ms = self.clock.now_ms();
        tokio::task::spawn_blocking(move || {
            let result = evidence::retention::prune(&state_dir, &open, now_ms, policy, clip_policy);
            shared.evidence.record(&result);
            match result {
                Ok(pruned) if pruned.files > 0 => info!(
                    deleted_files = pruned.files,
                    freed_bytes = pruned.bytes,
                    kept_bytes = pruned.kept_bytes,
                    "evidence retention deleted old evidence"
                ),
                Ok(_) => {}
                Err(err) => warn!(error = %err, "evidence retention could not list the evidence directory"),
            }
        })
    }

    fn sinks(&self) -> Sinks<'_> {
        Sinks { config: &self.config, model: &self.model, shared: &self.shared }
    }

    /// Hands `job` to the recorder, behind any job kept before it; a full queue hands it back
    /// and it is kept (never dropped) until [`Gateway::hand_over`] finds room.
    fn record(&mut self, job: Evidence) {
        self.kept.push_back(job);
        self.hand_over();
    }

    /// Hands the kept jobs to the recorder, in order, while its queue has room.
    fn hand_over(&mut self) {
        while let Some(job) = self.kept.pop_front() {
            if let Err(job) = self.recorder.try_submit(job) {
                self.kept.push_front(job);
                self.waiting_since.get_or_insert_with(monotonic_now);
                return;
            }
        }
        if let Some(since) = self.waiting_since.take() {
            self.shared.recorder.waited(monotonic_now().saturating_duration_since(since));
        }
    }

    /// Incidents from one analysed frame; keeps the frame for the zone editor.
    fn handle_frame(&mut self, frame: &AnalysedFrame) {
        let detections = frame
            .detections
            .iter()
            .map(|d| DetectionView {
                class: self.model.class_name(d.class_id).to_string(),
                score: (f64::from(d.score) * 1000.0).round() / 1000.0,
                box_norm: normalised(d.box_px, frame.frame_width, frame.frame_height),
            })
            .collect();
        // The frame's ingest time on the world's clock.
        let t_ms = self.clock.now_ms() - frame.received_at.elapsed().as_millis() as i64;
        self.shared.keep_frame(&frame.camera, LatestFrame { picture: frame.picture.clone(), detections, t_ms });
        // Evidence names the model that analysed the frame.
        let sinks = Sinks { config: &self.config, model: &frame.model, shared: &self.shared };
        let Some(runtime) = self.cameras.get_mut(&frame.camera) else {
            return;
        };
        let health = self.pipeline.health.camera(&frame.camera);
        let outcome = incidents::handle_frame(runtime, frame, &health, &sinks);
        if runtime.camera.active_interval.is_some() {
            self.pipeline.scheduler().people_in_view(&frame.camera, outcome.people_in_fall_zones);
        }
        if let Some(job) = outcome.job {
            self.record(job);
        }
    }

    /// Whether the config file changed on disk since it was last loaded or written.
    fn config_file_changed(&mut self) -> bool {
        let now = modified(&self.config_path);
        if now.is_some() && now != self.config_modified {
            self.config_modified = now;
            return true;
        }
        false
    }

    async fn handle_request(&mut self, request: ConfigRequest) {
        match request {
            ConfigRequest::Reload { trigger } => {
                info!(trigger, path = %self.config_path.display(), "reloading the config");
                let checked = crate::config::load(&self.config_path).and_then(|config| self.check(config));
                self.config_modified = modified(&self.config_path);
                match checked {
                    Ok(config) => self.apply(config).await,
                    Err(problems) => {
                        self.shared.count_reload("rejected");
                        error!(
                            problems = %problems.to_string().replace('\n', "; "),
                            "the new config is refused; the running one stays"
                        );
                    }
                }
            }
            ConfigRequest::EditZones { camera, zones, reply } => {
                let outcome = self.edit_zones(&camera, &zones).await;
                match &outcome {
                    Ok(saved) => {
                        info!(camera = %camera, zones = saved.zones, backup = %saved.backup.display(), "zones saved from the editor and applied")
                    }
                    Err(EditRefused::Invalid(problems)) => {
                        warn!(camera = %camera, problems = %problems.to_string().replace('\n', "; "), "zone edit refused")
                    }
                    Err(refused) => warn!(camera = %camera, refused = ?refused, "zone edit refused"),
                }
                let _ = reply.send(outcome);
            }
            ConfigRequest::ReloadZoneModel { camera, zone, reply } => {
                let outcome = match self.cameras.get_mut(&camera) {
                    None => Err(format!("camera {camera} is not running")),
                    Some(CameraRuntime { camera: config, classifiers, .. }) => classifiers
                        .reload_zone_model(config, &zone, &self.config.detector, &self.config.state_dir)
                        .map(crate::cli::ModelSource::as_str)
                        .map_err(|err| format!("{err:#}")),
                };
                match &outcome {
                    Ok(source) => info!(camera = %camera, zone = %zone, source, "bin zone's model swapped in"),
                    Err(problem) => {
                        warn!(camera = %camera, zone = %zone, problem = %problem, "bin zone's model not swapped")
                    }
                }
                let _ = reply.send(outcome);
            }
        }
    }

    /// A validated config, re-checked against the running model (classes, classifiers).
    fn check(&self, config: Config) -> Result<Config, ConfigProblems> {
        let mut problems = model_problems(&config, &self.classes);
        if self.pipeline.models().wide.is_none() {
            // `[detector]` changes wait for a restart: a camera cannot ask for a model that
            // is not loaded yet.
            for camera in &config.cameras {
                if camera.detector_model == crate::config::ModelChoice::Fixed(crate::config::ModelVariant::Wide) {
                    problems.push(ConfigProblem {
                        path: format!("cameras.{}.detector_model", camera.id),
                        message: "the running gateway has no [detector] wide_model loaded: restart it to apply the new [detector] section first".to_string(),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigProblems(problems))
        }
    }

    async fn edit_zones(
        &mut self,
        camera: &CameraId,
        zones: &[crate::config::raw::RawZone],
    ) -> Result<ZonesSaved, EditRefused> {
        let text = std::fs::read_to_string(&self.config_path)
            .map_err(|err| EditRefused::Io(format!("cannot read {}: {err}", self.config_path.display())))?;
        let edited = crate::console::zones_edit::replace_zones(&text, camera.as_str(), zones)
            .map_err(|problem| EditRefused::Io(format!("the config file does not parse: {problem}")))?
            .ok_or(EditRefused::UnknownCamera)?;
        // The same validation as `check-config`, on the whole file as it would be written.
        let config = crate::config::parse(&edited, &self.config.base_dir)
            .and_then(|config| self.check(config))
            .map_err(EditRefused::Invalid)?;
        let backup = crate::console::zones_edit::write_with_backup(&self.config_path, &edited)
            .map_err(|err| EditRefused::Io(format!("{err:#}")))?;
        self.config_modified = modified(&self.config_path);
        let zones = config.cameras.iter().find(|c| c.id == *camera).map_or(0, |c| c.zones.len());
        self.apply(config).await;
        let _ = self.shared.zones_applied.send(camera.clone());
        Ok(ZonesSaved { backup, zones })
    }

    /// Applies a validated config: only the cameras it changes are touched.
    async fn apply(&mut self, config: Config) {
        let plan = reload::plan(&self.config, &config);
        if plan.is_empty() {
            info!("the config is unchanged");
            self.shared.count_reload("applied");
            return;
        }
        let now = self.clock.now_ms();
        let config = Arc::new(config);
        let mut committed = Vec::new();
        for id in &plan.removed {
            self.pipeline.remove_camera(id).await;
            self.shared.frames.lock().unwrap().remove(id);
            if let Some(runtime) = self.cameras.remove(id) {
                // Its open incidents end with it (and its saved book is emptied).
                let mut book = runtime.engine.book().clone();
                let events = book.retire(now, &|_, _| false);
                committed.push((runtime.camera, book, events));
            }
            info!(camera = %id, "camera removed");
        }
        for camera in plan.added.iter().chain(&plan.restarted).chain(&plan.rezoned) {
            let mut runtime = match build_camera(camera, &config, &self.classes) {
                Ok(runtime) => runtime,
                Err(err) => {
                    error!(camera = %camera.id, error = format!("{err:#}"), "cannot apply the camera's new config");
                    continue;
                }
            };
            if let Some(previous) = self.cameras.remove(&camera.id) {
                let events = runtime.engine.take_over(previous.engine.book().clone(), now);
                if !events.is_empty() {
                    committed.push((camera.clone(), runtime.engine.book().clone(), events));
                }
            }
            self.cameras.insert(camera.id.clone(), runtime);
        }
        for camera in plan.added.iter().chain(&plan.restarted) {
            self.pipeline.add_camera(camera).await;
        }
        for camera in &plan.rezoned {
            self.pipeline.rezone_camera(camera);
        }
        self.config = config.clone();
        *self.shared.config.write().unwrap() = config;
        for (camera, book, events) in committed {
            if let Some(job) = incidents::prepare(&camera, &book, events, None, &[], now, &self.sinks()) {
                self.record(job);
            }
        }
        let names = |cameras: &[CameraConfig]| cameras.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(",");
        info!(
            added = names(&plan.added),
            restarted = names(&plan.restarted),
            rezoned = names(&plan.rezoned),
            removed = plan.removed.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
            "config applied; other cameras untouched"
        );
        if !plan.needs_restart.is_empty() {
            warn!(
                sections = plan.needs_restart.join(","),
                "these sections changed and take effect at the next restart"
            );
        }
        self.shared.count_reload("applied");
    }
}

fn normalised(box_px: [f32; 4], width: u32, height: u32) -> [f64; 4] {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let round = |v: f64| (v.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0;
    [
        round(f64::from(box_px[0]) / w),
        round(f64::from(box_px[1]) / h),
        round(f64::from(box_px[2]) / w),
        round(f64::from(box_px[3]) / h),
    ]
}

/// Starts the recorder thread: evidence written, then the commit (held and retried while the
/// disk refuses it); each commit that goes through is counted and wakes delivery.
fn start_recorder(
    config: &Config,
    outbox: &Arc<Outbox>,
    model: &Model,
    shared: &Arc<Shared>,
    delivery: Option<Arc<tokio::sync::Notify>>,
    spilled: spill::Spilled,
) -> Recorder<Evidence> {
    let (state_dir, manifest) = (config.state_dir.clone(), model.manifest.clone());
    let reported = shared.clone();
    let commits = commits::Commits::new(outbox.clone(), shared.commits.clone()).with_spill(
        config.outbox_spill_dir.clone(),
        spilled,
        monotonic_now(),
    );
    let recording = commits::Recording {
        commits,
        write: Box::new(move |job| incidents::write(job, &state_dir, &manifest)),
        committed: Box::new(move |committed| {
            commits::report(committed, &reported);
            if let Some(delivery) = &delivery {
                delivery.notify_one();
            }
        }),
    };
    Recorder::start(recording, shared.recorder.clone())
}

/// Reads the spill files in `dir` ([`spill`]) and commits them to the outbox in one
/// transaction (each camera's newest book with them), deleting the files after; what the
/// outbox does not take is returned, to be held in memory in front of every new commit.
fn import_spill(dir: Option<&std::path::Path>, outbox: &Outbox) -> spill::Spilled {
    let Some(dir) = dir else {
        return spill::Spilled::default();
    };
    if spill::same_file_system(dir, outbox.path()) {
        warn!(
            spill_dir = %dir.display(),
            "outbox.spill_dir is on the outbox's file system: a full disk would refuse the spill too"
        );
    }
    let (spilled, problems) = spill::read(dir);
    for (file, err) in problems {
        error!(file = %file.display(), error = format!("{err:#}"), "an unreadable spill file is left where it is");
    }
    let Some(newest) = spilled.commits.last() else {
        return spilled;
    };
    let records: Vec<_> = spilled.commits.iter().flat_map(|commit| commit.records.iter().cloned()).collect();
    let mut books: Vec<(&str, &crate::incident::IncidentBook)> = Vec::new();
    for commit in spilled.commits.iter().rev() {
        if !books.iter().any(|(camera, _)| *camera == commit.camera) {
            books.push((commit.camera.as_str(), &commit.book));
        }
    }
    match outbox.commit(&records, &books, newest.now_ms) {
        Ok(enqueued) => {
            warn!(
                events = records.len(),
                files = spilled.files.len(),
                depth = enqueued.depth,
                "incident events spilled at the last stop are in the outbox now"
            );
            spill::remove_logged(&spilled.files);
            spill::Spilled::default()
        }
        Err(err) => {
            error!(
                error = format!("{err:#}"),
                events = records.len(),
                "the outbox does not take the incident events spilled at the last stop: they are held in memory and retried first"
            );
            spilled
        }
    }
}

/// Each camera's runtime (restored from the outbox by [`restore_books`]).
fn build_cameras(config: &Config, classes: &[String]) -> anyhow::Result<HashMap<CameraId, CameraRuntime>> {
    let mut cameras = HashMap::new();
    for camera in &config.cameras {
        cameras.insert(camera.id.clone(), build_camera(camera, config, classes)?);
    }
    Ok(cameras)
}

/// Restores each camera's incident book from the outbox, where it was committed with the
/// camera's latest events, after moving books an older version kept in `incidents/` into it.
/// An unreadable book is state, not config: it is set aside and the camera starts afresh.
fn restore_books(
    config: &Config,
    outbox: &Outbox,
    cameras: &mut HashMap<CameraId, CameraRuntime>,
    now_ms: i64,
) -> anyhow::Result<()> {
    for migration in outbox.migrate_book_files(&config.state_dir, now_ms)? {
        match migration {
            crate::outbox::BookMigration::Migrated { camera, open } => {
                info!(camera, open, "incident book moved into the outbox (the file is kept as .migrated)")
            }
            crate::outbox::BookMigration::AlreadyMigrated { camera } => {
                info!(camera, "incident book file already in the outbox: renamed .migrated")
            }
            crate::outbox::BookMigration::Corrupt { camera, moved_to, reason } => error!(
                camera, moved_to = %moved_to.display(), reason = %reason,
                "the saved incident state was unreadable: moved aside, the camera starts with no open incidents"
            ),
        }
    }
    for (id, runtime) in cameras.iter_mut() {
        match outbox.book(id.as_str(), now_ms)? {
            crate::outbox::StoredBook::None => {}
            crate::outbox::StoredBook::Restored(book) => {
                let open = book.open_incidents().len();
                runtime.engine.restore(book);
                if open > 0 {
                    info!(camera = %id, open, "restored open incidents");
                }
            }
            crate::outbox::StoredBook::Quarantined { reason } => error!(
                camera = %id, reason = %reason,
                "the stored incident book was unreadable: kept in the outbox's dead_books table, the camera starts with no open incidents"
            ),
        }
    }
    Ok(())
}

fn build_camera(camera: &CameraConfig, config: &Config, classes: &[String]) -> anyhow::Result<CameraRuntime> {
    let references = crate::cli::load_references(camera)?;
    let engine = CameraEngine::new(camera, classes, &references);
    let classifiers =
        crate::cli::ZoneClassifiers::load_with_learned(camera, &config.detector, Some(&config.state_dir))?;
    Ok(CameraRuntime { camera: camera.clone(), engine, classifiers })
}

fn log_frame(frame: &AnalysedFrame) {
    let summary: Vec<String> =
        frame.detections.iter().map(|d| format!("{} {:.2}", frame.model.class_name(d.class_id), d.score)).collect();
    info!(
        camera = %frame.camera,
        model = %frame.model.manifest.name,
        t_ms = frame.media_time_ms,
        decode_ms = format!("{:.1}", frame.decode_time.as_secs_f64() * 1e3),
        inference_ms = format!("{:.1}", frame.inference_time.as_secs_f64() * 1e3),
        count = frame.detections.len(),
        detections = summary.join(", "),
        "analysed"
    );
}

fn log_stats(pipeline: &Pipeline, delivery: Option<&Delivery>, outbox: &crate::outbox::Outbox) {
    let depth = outbox.depth().unwrap_or(0);
    match delivery {
        Some(delivery) => {
            let s = &delivery.stats;
            info!(
                connected = s.connected.load(Ordering::Relaxed),
                outbox_depth = depth,
                published = s.published.load(Ordering::Relaxed),
                acknowledged = s.acknowledged.load(Ordering::Relaxed),
                connections = s.connections.load(Ordering::Relaxed),
                answers = s.answers.load(Ordering::Relaxed),
                answers_ignored = s.answers_ignored.load(Ordering::Relaxed),
                followups_fired = s.followups_fired.load(Ordering::Relaxed),
                "delivery stats"
            );
        }
        None if depth > 0 => tracing::warn!(outbox_depth = depth, "undelivered events (no [mqtt] configured)"),
        None => {}
    }
    for camera in pipeline.health.cameras() {
        let (state, reason, _) = camera.snapshot();
        let c = &camera.counters;
        info!(
            camera = %camera.id,
            state = state.as_str(),
            reason = reason.unwrap_or_default(),
            frames_received = c.frames_received.load(Ordering::Relaxed),
            keyframes = c.keyframes_received.load(Ordering::Relaxed),
            decoded = c.frames_decoded.load(Ordering::Relaxed),
            analysed = c.frames_analysed.load(Ordering::Relaxed),
            skipped_over_capacity = c.skipped_over_capacity.load(Ordering::Relaxed),
            revisit_max_ms = c.revisit_max_ms.load(Ordering::Relaxed),
            reconnects = c.reconnects.load(Ordering::Relaxed),
            "camera stats"
        );
    }
}
