//! Teaching a bin area from the console (issue 15): ops label the zone's live crop "normal" or
//! "overflowing", see the examples in a gallery and delete one, train the zone's own model
//! (seconds, on a blocking thread) and read its live reading with its score. A trash incident
//! answered `false_alarm` can give its zone crop as a "normal" example, in one click.
//!
//! ```text
//! GET    /api/cameras/{id}/bin-zones/{zone}               examples, training, live reading
//! GET    /api/cameras/{id}/bin-zones/{zone}/live.jpg      the zone's crop of the latest frame
//!                                                         (X-Frame-T-Ms names the frame)
//! POST   /api/cameras/{id}/bin-zones/{zone}/examples      {"label", "frame_t_ms"?}
//! GET    /api/cameras/{id}/bin-zones/{zone}/examples/{n}  an example's crop (JPEG)
//! DELETE /api/cameras/{id}/bin-zones/{zone}/examples/{n}
//! POST   /api/cameras/{id}/bin-zones/{zone}/train         → cross-validated accuracy
//! DELETE /api/cameras/{id}/bin-zones/{zone}/model         back to the generic model
//! POST   /api/incidents/{id}/normal-example               a false alarm's crop as "normal"
//! ```
//!
//! Reads need the token or the session cookie, changes the `Authorization` header, like every
//! other route (`auth`). Storage is `bin_state::zone_store` (bounded: examples per zone, crop
//! size). Architecture invariant: the console writes only the zone's examples and model file;
//! the run loop swaps the model into the running zone (`ConfigRequest::ReloadZoneModel`), so
//! the engine and its hysteresis are untouched.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::api::error;
use super::{ConfigRequest, Shared};
use crate::bin_state::embedder::Embedder;
use crate::bin_state::zone_store::{AddRefused, Label, ZoneStore, MAX_EXAMPLES_PER_ZONE};
use crate::config::{CameraConfig, CameraId};
use crate::geometry::BoxNorm;
use crate::zones::{TrashParams, TrashSource, ZoneRule};

/// Crops shown by `live.jpg` that are held so that "this looks normal" labels the picture the
/// operator saw, not a newer one. A few per gateway: a handful of people teach zones at once.
const HELD_CROPS: usize = 16;

/// A zone's latest reading as the run loop took it.
#[derive(Debug, Clone, Copy)]
pub struct ZoneReading {
    /// P(overflowing), 0–1.
    pub score: f32,
    /// When the frame arrived, ms since the Unix epoch.
    pub t_ms: i64,
    /// Which model read it (`generic`, `learned`, `file`, `classifier`).
    pub source: &'static str,
}

struct HeldCrop {
    camera: String,
    zone: String,
    t_ms: i64,
    crop: Arc<image::RgbImage>,
}

/// What the console keeps for teaching bin areas.
#[derive(Default)]
pub struct BinLearning {
    /// Latest reading per (camera, zone).
    readings: Mutex<HashMap<(String, String), ZoneReading>>,
    /// Crops recently shown, newest last.
    held: Mutex<VecDeque<HeldCrop>>,
    /// One change to the stores at a time (taken on blocking threads only).
    writes: Mutex<()>,
    /// A training is running (one at a time: it takes a core for a second or two).
    training: AtomicBool,
    /// The embedder, loaded at the first training (an ONNX Runtime session, ~14 MB).
    embedder: Mutex<Option<Embedder>>,
    /// Examples refused because the zone was full.
    refused_full: AtomicU64,
    /// Trainings refused because one was running.
    refused_busy: AtomicU64,
    last_refusal_log_ms: AtomicI64,
}

impl BinLearning {
    /// Keeps a camera's zone readings of one frame (called by the run loop).
    pub fn keep_readings(
        &self,
        camera: &str,
        readings: &[(String, f32)],
        sources: &[(String, &'static str)],
        t_ms: i64,
    ) {
        let mut kept = self.readings.lock().unwrap();
        for (zone, score) in readings {
            let source = sources.iter().find(|(id, _)| id == zone).map_or("model", |(_, s)| s);
            kept.insert((camera.to_string(), zone.clone()), ZoneReading { score: *score, t_ms, source });
        }
    }

    fn reading(&self, camera: &str, zone: &str) -> Option<ZoneReading> {
        self.readings.lock().unwrap().get(&(camera.to_string(), zone.to_string())).copied()
    }

    fn hold(&self, camera: &str, zone: &str, t_ms: i64, crop: Arc<image::RgbImage>) {
        let mut held = self.held.lock().unwrap();
        held.retain(|h| !(h.camera == camera && h.zone == zone && h.t_ms == t_ms));
        held.push_back(HeldCrop { camera: camera.to_string(), zone: zone.to_string(), t_ms, crop });
        while held.len() > HELD_CROPS {
            held.pop_front();
        }
    }

    fn held(&self, camera: &str, zone: &str, t_ms: i64) -> Option<Arc<image::RgbImage>> {
        let held = self.held.lock().unwrap();
        held.iter().rev().find(|h| h.camera == camera && h.zone == zone && h.t_ms == t_ms).map(|h| h.crop.clone())
    }

    fn refuse(&self, counter: &AtomicU64, what: &str) {
        counter.fetch_add(1, Ordering::Relaxed);
        if super::server::due(&self.last_refusal_log_ms) {
            tracing::warn!(what, "bin-area learning request refused (counted in /metrics; logged once a minute)");
        }
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "# HELP gateway_bin_learning_refused_total Bin-area examples and trainings refused by the console.\n\
             # TYPE gateway_bin_learning_refused_total counter\n\
             gateway_bin_learning_refused_total{{reason=\"zone_full\"}} {}\n\
             gateway_bin_learning_refused_total{{reason=\"training_busy\"}} {}\n",
            read(&self.refused_full),
            read(&self.refused_busy)
        )
    }
}

/// The routes (merged into the console's router, behind its guard).
pub(super) fn routes() -> Router<Arc<Shared>> {
    let zone = "/api/cameras/{id}/bin-zones/{zone}";
    Router::new()
        .route(zone, get(zone_state))
        .route(&format!("{zone}/live.jpg"), get(live_jpeg))
        .route(&format!("{zone}/examples"), post(add_example))
        .route(&format!("{zone}/examples/{{n}}"), get(example_jpeg).delete(delete_example))
        .route(&format!("{zone}/train"), post(train))
        .route(&format!("{zone}/model"), delete(forget_model))
        .route("/api/incidents/{id}/normal-example", post(normal_example_from_incident))
}

type Refusal = (StatusCode, Json<serde_json::Value>);

/// The camera and its bin zone in the config in force.
fn bin_zone(shared: &Shared, camera: &str, zone: &str) -> Result<(CameraConfig, BoxNorm, TrashParams), Refusal> {
    let config = shared.config();
    let Some(found) = config.cameras.iter().find(|c| c.id.as_str() == camera) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no camera {camera:?} in the config in force")));
    };
    let Some(zone_config) = found.zones.iter().find(|z| z.id == zone) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("camera {camera} has no zone {zone:?} (save the zones first)"),
        ));
    };
    let ZoneRule::Trash(params) = &zone_config.rule else {
        return Err(error(StatusCode::CONFLICT, format!("zone {zone:?} is not a bin_area")));
    };
    Ok((found.clone(), zone_config.polygon.bounds(), params.clone()))
}

fn store(shared: &Shared, camera: &str, zone: &str) -> Result<ZoneStore, Refusal> {
    ZoneStore::open(&shared.config().state_dir, camera, zone)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{e:#}")))
}

fn internal(error_text: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, error_text.to_string()).into_response()
}

/// Runs `work` on a blocking thread, one store change at a time.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let shared = shared.clone();
    match tokio::task::spawn_blocking(move || {
        let _one_at_a_time = shared.bins.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work()
    })
    .await
    {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(internal(format!("{e:#}"))),
        Err(e) => Err(internal(e)),
    }
}

/// Which model the zone reads, as its config says (the run loop's readings say what it did).
fn configured_source(params: &TrashParams, learned: bool) -> &'static str {
    match &params.source {
        TrashSource::Classifier { .. } => "classifier",
        TrashSource::ReferenceDiff { .. } => "reference",
        TrashSource::Model { model: Some(_) } => "file",
        TrashSource::Model { model: None } if learned => "learned",
        TrashSource::Model { model: None } => "generic",
    }
}

/// Why a learned model is not what the zone reads, in words (None: it is, or there is none).
fn not_applied_note(params: &TrashParams) -> Option<&'static str> {
    match &params.source {
        TrashSource::Model { model: None } => None,
        TrashSource::Model { model: Some(_) } => {
            Some("the zone's config names its own model file (model = …): remove it to read the learned model")
        }
        _ => Some("the zone's source is not \"model\": set source = \"model\" to read the learned model"),
    }
}

async fn zone_state(State(shared): State<Arc<Shared>>, Path((id, zone)): Path<(String, String)>) -> Response {
    let (_, _, params) = match bin_zone(&shared, &id, &zone) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    let index = match tokio::task::spawn_blocking(move || store.index()).await {
        Ok(Ok(index)) => index,
        Ok(Err(e)) => return internal(format!("{e:#}")),
        Err(e) => return internal(e),
    };
    let (overflowing, normal) = index.counts();
    let reading = shared.bins.reading(&id, &zone).map(|r| {
        let state = if r.score >= params.overflow_share {
            "overflowing"
        } else if r.score <= params.normal_share {
            "normal"
        } else {
            "between"
        };
        json!({ "score": round4(r.score), "reads": state, "t_ms": r.t_ms, "source": r.source })
    });
    Json(json!({
        "camera": id,
        "zone": zone,
        "source": configured_source(&params, index.trained.is_some()),
        "note": not_applied_note(&params),
        "overflow_share": round4(params.overflow_share),
        "normal_share": round4(params.normal_share),
        "examples": index.examples,
        "counts": { "overflowing": overflowing, "normal": normal },
        "max_examples": MAX_EXAMPLES_PER_ZONE,
        "trained": index.trained,
        "reading": reading,
    }))
    .into_response()
}

fn round4(value: f32) -> f64 {
    (f64::from(value) * 10_000.0).round() / 10_000.0
}

/// The zone's crop of the camera's latest analysed frame, and that frame's time.
fn live_crop(shared: &Shared, camera: &str, bounds: &BoxNorm) -> Result<(i64, Arc<image::RgbImage>), Refusal> {
    let frames = shared.frames.lock().unwrap();
    let Some((_, frame)) = frames.iter().find(|(id, _)| id.as_str() == camera) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no analysed frame of {camera:?} yet")));
    };
    // The same crop the zone's model reads (`cli::ZoneClassifiers::read_zone`).
    Ok((frame.t_ms, Arc::new(crate::bin_state::crop(&frame.picture, bounds))))
}

async fn live_jpeg(State(shared): State<Arc<Shared>>, Path((id, zone)): Path<(String, String)>) -> Response {
    let (_, bounds, _) = match bin_zone(&shared, &id, &zone) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let (t_ms, crop) = match live_crop(&shared, &id, &bounds) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    shared.bins.hold(&id, &zone, t_ms, crop.clone());
    match tokio::task::spawn_blocking(move || crate::evidence::encode_jpeg(&crop)).await {
        Ok(Ok(jpeg)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg".to_string()),
                (header::HeaderName::from_static("x-frame-t-ms"), t_ms.to_string()),
            ],
            jpeg,
        )
            .into_response(),
        Ok(Err(e)) => internal(format!("{e:#}")),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleBody {
    label: Label,
    /// The frame whose crop the operator saw (`X-Frame-T-Ms` of `live.jpg`); without it, the
    /// latest frame's crop.
    frame_t_ms: Option<i64>,
}

async fn add_example(
    State(shared): State<Arc<Shared>>,
    Path((id, zone)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: ExampleBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"label\": \"normal\"|\"overflowing\", \"frame_t_ms\": n (optional)}}: {e}"),
            )
            .into_response()
        }
    };
    let (_, bounds, _) = match bin_zone(&shared, &id, &zone) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let (t_ms, crop) =
        match body.frame_t_ms {
            Some(t_ms) => match shared.bins.held(&id, &zone, t_ms) {
                Some(crop) => (t_ms, crop),
                None => match live_crop(&shared, &id, &bounds) {
                    Ok((latest, crop)) if latest == t_ms => (t_ms, crop),
                    Ok(_) => return error(
                        StatusCode::CONFLICT,
                        "the picture shown is no longer held (newer frames came since): look at the live crop again",
                    )
                    .into_response(),
                    Err(refused) => return refused.into_response(),
                },
            },
            None => match live_crop(&shared, &id, &bounds) {
                Ok(found) => found,
                Err(refused) => return refused.into_response(),
            },
        };
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    let from = format!("live frame {t_ms}");
    add(&shared, store, crop, body.label, from, false).await
}

async fn add(
    shared: &Arc<Shared>,
    store: ZoneStore,
    crop: Arc<image::RgbImage>,
    label: Label,
    from: String,
    unique_from: bool,
) -> Response {
    let now_ms = shared.clock.now_ms();
    let added = blocking(shared, move || {
        Ok(match store.add(&crop, label, &from, unique_from, now_ms) {
            Ok(example) => Ok((example, store.index()?.counts())),
            Err(refused) => Err(refused),
        })
    })
    .await;
    match added {
        Ok(Ok((example, (overflowing, normal)))) => (
            StatusCode::CREATED,
            Json(json!({ "example": example, "counts": { "overflowing": overflowing, "normal": normal } })),
        )
            .into_response(),
        Ok(Err(AddRefused::Full)) => {
            shared.bins.refuse(&shared.bins.refused_full, "zone full");
            error(
                StatusCode::CONFLICT,
                format!("this zone holds {MAX_EXAMPLES_PER_ZONE} examples, the most it keeps: delete some first"),
            )
            .into_response()
        }
        Ok(Err(AddRefused::Duplicate)) => {
            error(StatusCode::CONFLICT, "this incident's crop is already an example").into_response()
        }
        Ok(Err(AddRefused::Io(e))) => internal(format!("{e:#}")),
        Err(response) => response,
    }
}

fn example_number(text: &str) -> Result<u64, Refusal> {
    text.parse::<u64>().map_err(|_| error(StatusCode::BAD_REQUEST, format!("example {text:?} is not a number")))
}

async fn example_jpeg(
    State(shared): State<Arc<Shared>>,
    Path((id, zone, n)): Path<(String, String, String)>,
) -> Response {
    let n = match example_number(&n) {
        Ok(n) => n,
        Err(refused) => return refused.into_response(),
    };
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    match tokio::task::spawn_blocking(move || store.image(n)).await {
        Ok(Ok(Some(jpeg))) => ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("zone {zone} has no example {n}")).into_response(),
        Ok(Err(e)) => internal(format!("{e:#}")),
        Err(e) => internal(e),
    }
}

async fn delete_example(
    State(shared): State<Arc<Shared>>,
    Path((id, zone, n)): Path<(String, String, String)>,
) -> Response {
    let n = match example_number(&n) {
        Ok(n) => n,
        Err(refused) => return refused.into_response(),
    };
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    match blocking(&shared, move || store.delete(n)).await {
        Ok(true) => Json(json!({ "deleted": n })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("zone {zone} has no example {n}")).into_response(),
        Err(response) => response,
    }
}

/// Clears the training flag when the training ends, however it ends.
struct TrainingSlot<'a>(&'a AtomicBool);

impl Drop for TrainingSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn train(State(shared): State<Arc<Shared>>, Path((id, zone)): Path<(String, String)>) -> Response {
    let (_, _, params) = match bin_zone(&shared, &id, &zone) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    if shared.bins.training.swap(true, Ordering::AcqRel) {
        shared.bins.refuse(&shared.bins.refused_busy, "training busy");
        return error(StatusCode::CONFLICT, "a training is running: try again in a few seconds").into_response();
    }
    let _slot = TrainingSlot(&shared.bins.training);
    let detector = shared.config().detector.clone();
    let learning = shared.clone();
    let now_ms = shared.clock.now_ms();
    let trained = blocking(&shared, move || {
        // Missing examples are the operator's to fix, not a server fault: said before any work.
        let (overflowing, normal) = store.index()?.counts();
        if overflowing == 0 || normal == 0 {
            return Ok(Err(format!(
                "training needs at least one \"normal\" and one \"overflowing\" example \
                 (this zone has {normal} normal, {overflowing} overflowing)"
            )));
        }
        let mut embedder = learning.bins.embedder.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let generic_path = crate::cli::models_dir(&detector).join(crate::bin_state::DEFAULT_MODEL_FILE);
        let generic = crate::cli::load_bin_model(&generic_path, &detector, &mut embedder)?;
        let embedder = embedder.as_mut().expect("loaded with the generic model");
        store.train(&generic, crate::cli::bin_state::FEW_SHOT_L2, now_ms, |crop| embedder.embed(crop)).map(Ok)
    })
    .await;
    let training = match trained {
        Ok(Ok((_, training))) => training,
        Ok(Err(problem)) => return error(StatusCode::CONFLICT, problem).into_response(),
        Err(response) => return response,
    };
    tracing::info!(camera = %id, zone = %zone, examples = training.examples, accuracy = ?training.accuracy,
        seconds = training.seconds, "bin area trained from the console");
    let source = reload_zone_model(&shared, &id, &zone).await;
    Json(json!({
        "trained": training,
        "source": source.as_ref().ok(),
        "applied": source.as_deref() == Ok("learned"),
        "note": not_applied_note(&params).map(str::to_string).or_else(|| source.err()),
    }))
    .into_response()
}

/// Asks the run loop to read the zone's model again; the source it reads now.
async fn reload_zone_model(shared: &Shared, camera: &str, zone: &str) -> Result<String, String> {
    let camera = CameraId::try_new(camera)?;
    let (reply, outcome) = oneshot::channel();
    let request = ConfigRequest::ReloadZoneModel { camera, zone: zone.to_string(), reply };
    if shared.requests.send(request).await.is_err() {
        return Err("the gateway is stopping".to_string());
    }
    match outcome.await {
        Ok(Ok(source)) => Ok(source.to_string()),
        Ok(Err(problem)) => Err(problem),
        Err(_) => Err("the gateway is stopping".to_string()),
    }
}

async fn forget_model(State(shared): State<Arc<Shared>>, Path((id, zone)): Path<(String, String)>) -> Response {
    if let Err(refused) = bin_zone(&shared, &id, &zone) {
        return refused.into_response();
    }
    let store = match store(&shared, &id, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    let forgotten = match blocking(&shared, move || store.forget_model()).await {
        Ok(forgotten) => forgotten,
        Err(response) => return response,
    };
    let source = reload_zone_model(&shared, &id, &zone).await;
    Json(json!({ "forgotten": forgotten, "source": source.as_ref().ok(), "note": source.err() })).into_response()
}

/// `POST /api/incidents/{id}/normal-example`: the zone crop kept with a trash incident's
/// evidence becomes a "normal" example of its zone. Only after a `false_alarm` answer, and
/// only when asked: see docs/operations.md for why it is never automatic.
async fn normal_example_from_incident(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let found = match shared.outbox.incident(&id) {
        Ok(Some(found)) => found,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no incident {id:?}")).into_response(),
        Err(e) => return internal(format!("{e:#}")),
    };
    let event = &found.latest.event;
    if event.kind != crate::rules::IncidentKind::TrashOverflow {
        return error(StatusCode::CONFLICT, "only a trash_overflow incident's crop can teach a bin area")
            .into_response();
    }
    if !found.followup.answers.iter().any(|a| a.action == crate::followup::AckAction::FalseAlarm) {
        return error(
            StatusCode::CONFLICT,
            "answer the incident false_alarm first: only what someone called a false alarm becomes a \"normal\" example",
        )
        .into_response();
    }
    let (camera, zone) = (event.camera.clone(), event.zone.clone());
    if let Err(refused) = bin_zone(&shared, &camera, &zone) {
        return refused.into_response();
    }
    let Some(snapshot) = found.latest.snapshot.clone() else {
        return error(StatusCode::NOT_FOUND, "this incident kept no picture").into_response();
    };
    // The evidence's `<stem>-crop.jpg`: for a trash incident, the zone's bounds of the analysed
    // picture, without the drawing the snapshot has. Only ever read from the evidence folder.
    let evidence = shared.config().state_dir.join("evidence");
    let crop_path =
        std::path::PathBuf::from(snapshot.strip_suffix(".jpg").unwrap_or(&snapshot).to_string() + "-crop.jpg");
    if !crop_path.starts_with(&evidence) || crop_path.components().any(|c| c == std::path::Component::ParentDir) {
        return error(StatusCode::NOT_FOUND, "the incident's picture is not in the evidence folder").into_response();
    }
    let store = match store(&shared, &camera, &zone) {
        Ok(store) => store,
        Err(refused) => return refused.into_response(),
    };
    let from = format!("incident {id}");
    let picture = tokio::task::spawn_blocking(move || crate::evidence::read_picture(&crop_path)).await;
    let crop = match picture {
        Ok(Ok(picture)) => Arc::new(picture.to_rgb8()),
        Ok(Err(e)) => {
            return error(StatusCode::NOT_FOUND, format!("the incident's crop is no longer kept: {e:#}"))
                .into_response()
        }
        Err(e) => return internal(e),
    };
    // Once per incident: checked under the store's lock, with the add.
    let response = add(&shared, store, crop, Label::Normal, from, true).await;
    if response.status() == StatusCode::CREATED {
        tracing::info!(incident_id = %id, camera = %camera, zone = %zone, "false alarm's crop added as a normal example");
    }
    response
}
