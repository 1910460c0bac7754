//! The routes: pages, JSON API, live events, health and metrics. Handlers only read
//! [`Shared`], answer incidents through the outbox and pass zone edits to the run loop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, oneshot};

use super::{epoch_ms, ConfigRequest, EditRefused, Shared, STALLED_AFTER};
use crate::config::raw::RawZone;
use crate::config::{CameraConfig, CameraId, DecodeMode};
use crate::followup::{AckAction, Answer};
use crate::health::{CameraHealth, CameraState, StateChange};
use crate::outbox::{AnswerOutcome, TrackedIncident};

/// Largest request body accepted (a zone edit of a busy camera is a few KB).
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The console's routes, behind the authentication guard.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { page(include_str!("assets/console.html")) }))
        .route("/editor", get(|| async { page(include_str!("assets/editor.html")) }))
        .route("/assets/{file}", get(asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/cameras", get(cameras))
        .route("/api/cameras/{id}", get(camera))
        .route("/api/cameras/{id}/frame.jpg", get(frame_jpeg))
        .route("/api/cameras/{id}/detections", get(detections))
        .route("/api/cameras/{id}/zones", put(save_zones))
        .route("/api/zone-kinds", get(zone_kinds))
        .route("/api/incidents", get(incidents))
        .route("/api/incidents/{id}", get(incident))
        .route("/api/incidents/{id}/snapshot.jpg", get(snapshot_jpeg))
        .route("/api/incidents/{id}/main.jpg", get(main_jpeg))
        .route("/api/incidents/{id}/clip.mp4", get(clip_mp4))
        .route("/api/incidents/{id}/answer", post(answer))
        .route("/api/events", get(events))
        .route("/api/session", post(start_session).delete(end_session))
        .merge(super::bins::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), super::auth::guard))
        .layer(axum::middleware::from_fn_with_state(shared.http.clone(), super::server::request_timeout))
        .with_state(shared)
}

/// `POST /api/session` (the guard checked the bearer token): sets the session cookie the pages
/// read with, so images and the live stream need no header and the token stays out of URLs.
async fn start_session(State(shared): State<Arc<Shared>>) -> Response {
    let config = shared.config();
    let Some(token) = config.console.as_ref().and_then(|console| console.token.as_ref()) else {
        return error(StatusCode::FORBIDDEN, "no token is configured").into_response();
    };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        super::auth::SESSION_COOKIE,
        super::auth::session_value(token.expose()),
        super::auth::SESSION_MAX_AGE_SECS
    );
    ([(header::SET_COOKIE, cookie), (header::CACHE_CONTROL, "no-store".to_string())], Json(json!({ "session": true })))
        .into_response()
}

/// `DELETE /api/session`: forgets the session cookie.
async fn end_session() -> Response {
    let cookie = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", super::auth::SESSION_COOKIE);
    ([(header::SET_COOKIE, cookie)], Json(json!({ "session": false }))).into_response()
}

/// A JSON error: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<serde_json::Value>) {
    (status, Json(json!({ "error": message.into() })))
}

/// The pages use no inline scripts or styles and load images as blobs: a strict policy holds.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

fn page(html: &'static str) -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(html),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "common.js" => (include_str!("assets/common.js"), "text/javascript; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        "editor.js" => (include_str!("assets/editor.js"), "text/javascript; charset=utf-8"),
        "editor-bins.js" => (include_str!("assets/editor-bins.js"), "text/javascript; charset=utf-8"),
        "style.css" => (include_str!("assets/style.css"), "text/css; charset=utf-8"),
        _ => return error(StatusCode::NOT_FOUND, format!("no asset {file:?}")).into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let idle = shared.since_heartbeat();
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for camera in shared.health.cameras() {
        *counts.entry(camera.state().as_str()).or_default() += 1;
    }
    let stalled = idle > STALLED_AFTER;
    let degraded = shared.commits.degraded();
    let body = json!({
        // Degraded is still 200: the gateway works and holds its events; stalled is not.
        "status": if stalled { "stalled" } else if degraded.is_some() { "degraded" } else { "ok" },
        "degraded": degraded,
        "events_held": shared.commits.held_events(),
        "loop_idle_ms": idle.as_millis() as u64,
        "cameras": counts,
        "outbox_depth": shared.outbox.depth().ok(),
        "mqtt_connected": shared.mqtt_connected(),
    });
    let status = if stalled { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let cameras = shared.health.cameras();
    let incident_events = shared.incident_events.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect();
    let reloads = shared.reloads.lock().unwrap().iter().map(|(k, v)| (*k, *v)).collect();
    let text = super::metrics::render(&super::metrics::Snapshot {
        cameras: &cameras,
        schedule: &shared.schedule.lock().unwrap().clone(),
        analysis_latency: &shared.analysis_latency.lock().unwrap().clone(),
        incident_latency: &shared.incident_latency.lock().unwrap().clone(),
        detector_queue: shared.queues.detector.load(Ordering::Relaxed),
        analysed_queue: shared.queues.analysed.load(Ordering::Relaxed),
        outbox_depth: shared.outbox.depth().unwrap_or(0),
        waiting_for_answer: shared.outbox.waiting_for_answer().unwrap_or(0),
        delivery: shared.delivery.as_ref().map(|(stats, _)| stats.as_ref()),
        incident_events,
        false_alarms: shared.outbox.false_alarms().unwrap_or_default(),
        reloads,
        loop_idle_seconds: shared.since_heartbeat().as_secs_f64(),
        models: &model_names(&shared),
    });
    let refused = [
        ("token", shared.refused.load(Ordering::Relaxed)),
        ("host", shared.refused_host.load(Ordering::Relaxed)),
        ("live_streams", shared.refused_live_streams.load(Ordering::Relaxed)),
    ];
    let frame_handling = super::metrics::summary_families(
        "gateway_run_loop_frame_seconds",
        "the run loop taking an analysed frame to being done with it (engine; evidence and commit are the recorder's)",
        &shared.frame_handling.lock().unwrap().clone(),
    );
    let mut text = text
        + &shared.http.render(&refused)
        + &shared.evidence.render()
        + &shared.commits.render()
        + &shared.recorder.render()
        + &shared.bins.render()
        + &shared.access_log.render()
        + &frame_handling
        + &crate::evidence::privacy::BLUR_STATS.render();
    if let Some(clips) = shared.clips.get() {
        text += &clips.render();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The loaded models' names by variant.
fn model_names(shared: &Shared) -> Vec<(crate::config::ModelVariant, String)> {
    shared
        .models
        .get()
        .map(|models| {
            models.loaded().into_iter().map(|(variant, model)| (variant, model.manifest.name.clone())).collect()
        })
        .unwrap_or_default()
}

/// A camera as the console shows it.
#[derive(Debug, Serialize)]
struct CameraView {
    id: String,
    street: String,
    community: String,
    grid: String,
    steward: String,
    state: &'static str,
    reason: Option<String>,
    since_ms: Option<i64>,
    last_frame_age_ms: Option<u64>,
    frames_analysed: u64,
    frames_skipped: u64,
    analysis_interval_ms: u64,
    decode: &'static str,
    zones: usize,
    /// Its `detector_model` (`auto`, `square`, `wide`).
    detector_model: &'static str,
    /// The model its latest frame was prepared for: `square` or `wide` (none before its first
    /// decoded frame).
    model_variant: Option<&'static str>,
    /// That model's manifest name.
    model: Option<String>,
}

fn camera_view(
    camera: &CameraConfig,
    health: Option<&CameraHealth>,
    models: &[(crate::config::ModelVariant, String)],
) -> CameraView {
    let variant = health.and_then(|health| health.counters.model());
    let (state, reason, since_ms) = match health.map(CameraHealth::snapshot) {
        Some((state, reason, since)) => (state.as_str(), reason, Some(epoch_ms(since))),
        None => (CameraState::Starting.as_str(), None, None),
    };
    CameraView {
        id: camera.id.to_string(),
        street: camera.place.street.clone(),
        community: camera.place.community.clone(),
        grid: camera.place.grid.clone(),
        steward: camera.place.steward.clone(),
        state,
        reason,
        since_ms,
        last_frame_age_ms: health.and_then(CameraHealth::last_frame_age).map(|age| age.as_millis() as u64),
        frames_analysed: health.map_or(0, |h| h.counters.frames_analysed.load(Ordering::Relaxed)),
        frames_skipped: health.map_or(0, CameraHealth::frames_skipped),
        analysis_interval_ms: camera.analysis_interval.as_millis() as u64,
        decode: match camera.decode_mode {
            DecodeMode::Keyframes => "keyframes",
            DecodeMode::EveryFrame => "every_frame",
        },
        zones: camera.zones.len(),
        detector_model: camera.detector_model.as_str(),
        model_variant: variant.map(crate::config::ModelVariant::as_str),
        model: variant.and_then(|variant| models.iter().find(|(v, _)| *v == variant).map(|(_, name)| name.clone())),
    }
}

fn camera_views(shared: &Shared) -> Vec<CameraView> {
    let config = shared.config();
    let health: HashMap<CameraId, Arc<CameraHealth>> =
        shared.health.cameras().into_iter().map(|camera| (camera.id.clone(), camera)).collect();
    let models = model_names(shared);
    config.cameras.iter().map(|camera| camera_view(camera, health.get(&camera.id).map(Arc::as_ref), &models)).collect()
}

async fn cameras(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let views = camera_views(&shared);
    let mut summary: HashMap<&str, usize> =
        ["online", "degraded", "offline", "other"].into_iter().map(|k| (k, 0)).collect();
    for view in &views {
        let bucket = match view.state {
            "online" | "degraded" | "offline" => view.state,
            _ => "other",
        };
        *summary.entry(bucket).or_default() += 1;
    }
    Json(json!({ "cameras": views, "summary": summary }))
}

fn find_camera(shared: &Shared, id: &str) -> Result<CameraConfig, (StatusCode, Json<serde_json::Value>)> {
    shared
        .config()
        .cameras
        .iter()
        .find(|camera| camera.id.as_str() == id)
        .cloned()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no camera {id:?} in the config in force")))
}

async fn camera(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let camera = match find_camera(&shared, &id) {
        Ok(camera) => camera,
        Err(refused) => return refused.into_response(),
    };
    let health = shared.health.cameras().into_iter().find(|h| h.id == camera.id);
    let view = camera_view(&camera, health.as_deref(), &model_names(&shared));
    // The zones as written in the file, which is what the editor edits.
    let text = match std::fs::read_to_string(&shared.config_path) {
        Ok(text) => text,
        Err(err) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the config: {err}")).into_response()
        }
    };
    let zones = match super::zones_edit::zones_of(&text, &id) {
        Ok(zones) => zones.unwrap_or_default(),
        Err(problem) => {
            return error(StatusCode::CONFLICT, format!("the config file no longer parses: {problem}")).into_response()
        }
    };
    let mut body = serde_json::to_value(view).expect("view serialises");
    body["zones"] = serde_json::to_value(zones).expect("zones serialise");
    Json(body).into_response()
}

async fn frame_jpeg(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let frame = shared.frames.lock().unwrap().iter().find(|(camera, _)| camera.as_str() == id).map(|(_, f)| f.clone());
    let Some(frame) = frame else {
        return error(StatusCode::NOT_FOUND, format!("no analysed frame of {id:?} yet")).into_response();
    };
    let encoded = tokio::task::spawn_blocking(move || crate::evidence::encode_jpeg(&frame.picture)).await;
    match encoded {
        Ok(Ok(jpeg)) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response()
        }
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn detections(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let frames = shared.frames.lock().unwrap();
    let Some((_, frame)) = frames.iter().find(|(camera, _)| camera.as_str() == id) else {
        return error(StatusCode::NOT_FOUND, format!("no analysed frame of {id:?} yet")).into_response();
    };
    Json(json!({
        "t_ms": frame.t_ms,
        "width": frame.picture.width(),
        "height": frame.picture.height(),
        "detections": frame.detections,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZonesBody {
    zones: Vec<RawZone>,
}

async fn save_zones(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let zones = match serde_path_to_error::deserialize::<_, ZonesBody>(&mut deserializer) {
        Ok(body) => body.zones,
        Err(err) => {
            let path = err.path().to_string();
            let problem = json!({ "path": format!("cameras.{id}.{path}"), "message": err.into_inner().to_string() });
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "the zones are not valid JSON of the expected shape", "problems": [problem] })),
            )
                .into_response();
        }
    };
    let camera = match CameraId::try_new(&id) {
        Ok(camera) => camera,
        Err(problem) => return error(StatusCode::NOT_FOUND, problem).into_response(),
    };
    let (reply, outcome) = oneshot::channel();
    let request = ConfigRequest::EditZones { camera, zones, reply };
    if shared.requests.send(request).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping").into_response();
    }
    match outcome.await {
        Ok(Ok(saved)) => Json(json!({ "saved": true, "backup": saved.backup, "zones": saved.zones })).into_response(),
        Ok(Err(EditRefused::UnknownCamera)) => {
            error(StatusCode::NOT_FOUND, format!("no camera {id:?} in the config file")).into_response()
        }
        Ok(Err(EditRefused::Invalid(problems))) => {
            let problems: Vec<_> = problems.0.iter().map(|p| json!({ "path": p.path, "message": p.message })).collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "refused: the config would not validate; nothing was changed", "problems": problems })),
            )
                .into_response()
        }
        Ok(Err(EditRefused::Io(problem))) => error(StatusCode::INTERNAL_SERVER_ERROR, problem).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping").into_response(),
    }
}

async fn zone_kinds() -> Json<serde_json::Value> {
    Json(json!({ "kinds": crate::config::zone_kinds() }))
}

/// An incident as the console shows it.
#[derive(Debug, Serialize)]
struct IncidentView {
    incident_id: String,
    kind: &'static str,
    camera: String,
    zone: String,
    street: String,
    community: String,
    grid: String,
    steward: String,
    state: &'static str,
    opened_ms: i64,
    updated_ms: i64,
    cleared_ms: Option<i64>,
    reminded: bool,
    escalated: bool,
    answers: Vec<Answer>,
    score: f64,
    count: usize,
    detail: String,
    seq: u32,
    has_snapshot: bool,
    /// A clip is recorded for it (`/api/incidents/{id}/clip.mp4` once written).
    has_clip: bool,
}

fn incident_view(incident: TrackedIncident) -> IncidentView {
    let TrackedIncident { latest, followup } = incident;
    let last_answer = followup.answers.last().map(|answer| answer.action);
    let state = match (last_answer, followup.cleared_at_ms) {
        (Some(AckAction::Resolved), _) => "resolved",
        (Some(AckAction::FalseAlarm), _) => "false_alarm",
        (_, Some(_)) => "cleared",
        (Some(AckAction::Ack), None) => "acknowledged",
        (None, None) => "open",
    };
    let event = latest.event;
    IncidentView {
        incident_id: event.incident_id,
        kind: event.kind.as_str(),
        camera: event.camera,
        zone: event.zone,
        street: latest.street,
        community: latest.community,
        grid: latest.grid,
        steward: latest.steward,
        state,
        opened_ms: followup.opened_at_ms,
        updated_ms: event.t_ms,
        cleared_ms: followup.cleared_at_ms,
        reminded: followup.reminded,
        escalated: followup.escalated,
        answers: followup.answers,
        score: (f64::from(event.score) * 1000.0).round() / 1000.0,
        count: event.count,
        detail: event.detail,
        seq: event.seq,
        has_snapshot: latest.snapshot.is_some(),
        has_clip: latest.clip_url.is_some(),
    }
}

#[derive(Deserialize)]
struct IncidentFilter {
    grid: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

async fn incidents(State(shared): State<Arc<Shared>>, Query(filter): Query<IncidentFilter>) -> Response {
    let outbox = shared.outbox.clone();
    let all = match tokio::task::spawn_blocking(move || outbox.incidents()).await {
        Ok(Ok(all)) => all,
        Ok(Err(err)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    };
    let wanted = |value: &str, filter: &Option<String>| filter.as_deref().is_none_or(|f| f.is_empty() || f == value);
    let views: Vec<IncidentView> = all
        .into_iter()
        .map(incident_view)
        .filter(|v| wanted(&v.grid, &filter.grid) && wanted(v.kind, &filter.kind) && wanted(v.state, &filter.state))
        .take(filter.limit.unwrap_or(500).min(5000))
        .collect();
    Json(json!({ "incidents": views })).into_response()
}

async fn incident(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.outbox.incident(&id) {
        Ok(Some(found)) => Json(incident_view(found)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no incident {id:?}")).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
    }
}

/// Which of an incident's evidence files is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvidenceKind {
    /// The phone-sized snapshot (bystanders blurred).
    Snapshot,
    /// The main-stream snapshot (bystanders blurred).
    Main,
    /// The MP4 clip.
    Clip,
}

impl EvidenceKind {
    fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Snapshot => "snapshot",
            EvidenceKind::Main => "main",
            EvidenceKind::Clip => "clip",
        }
    }
}

/// `?operator=` on evidence reads: who is looking (the page's operator name), for the access
/// log; a `<video>` cannot send a header.
#[derive(Deserialize)]
struct EvidenceQuery {
    operator: Option<String>,
}

/// Largest range answered at once, bytes; a larger or open-ended range gets this much (206).
pub(super) const MAX_RANGE_BYTES: u64 = 8 * 1024 * 1024;
/// Largest file answered whole; above, a request without a range gets its first
/// [`MAX_RANGE_BYTES`] (206).
pub(super) const MAX_WHOLE_BYTES: u64 = 64 * 1024 * 1024;

async fn snapshot_jpeg(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<EvidenceQuery>,
    headers: HeaderMap,
) -> Response {
    evidence_read(shared, peer, id, query, headers, EvidenceKind::Snapshot).await
}

async fn main_jpeg(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<EvidenceQuery>,
    headers: HeaderMap,
) -> Response {
    evidence_read(shared, peer, id, query, headers, EvidenceKind::Main).await
}

async fn clip_mp4(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<EvidenceQuery>,
    headers: HeaderMap,
) -> Response {
    evidence_read(shared, peer, id, query, headers, EvidenceKind::Clip).await
}

/// Serves one of an incident's evidence files (the guard checked the token) and writes the
/// read to the access log, whatever the answer.
async fn evidence_read(
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    id: String,
    query: EvidenceQuery,
    headers: HeaderMap,
    kind: EvidenceKind,
) -> Response {
    let range = headers.get(header::RANGE).and_then(|value| value.to_str().ok()).map(str::to_string);
    let (response, bytes) = evidence_response(&shared, &id, kind, range.as_deref()).await;
    let header_text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let entry = super::access_log::AccessEntry {
        at_ms: super::wall_now_ms(),
        operator: super::access_log::operator_name(header_text("x-operator"), query.operator.as_deref()),
        auth: if headers.contains_key(header::AUTHORIZATION) {
            "bearer"
        } else if headers.contains_key(header::COOKIE) {
            "cookie"
        } else {
            "none"
        },
        peer: peer.to_string(),
        incident_id: id.chars().take(crate::deliver::payload::INCIDENT_ID_MAX_CHARS).collect(),
        what: kind.as_str(),
        status: response.status().as_u16(),
        bytes,
        range: range.map(|r| r.chars().take(64).collect()),
    };
    let log = shared.clone();
    let _ = tokio::task::spawn_blocking(move || log.access_log.record(&entry)).await;
    response
}

/// The answer for an evidence file and the body bytes in it.
async fn evidence_response(shared: &Shared, id: &str, kind: EvidenceKind, range: Option<&str>) -> (Response, u64) {
    let not_found = |message: String| (error(StatusCode::NOT_FOUND, message).into_response(), 0);
    let found = match shared.outbox.incident(id) {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(format!("no incident {id:?}")),
        Err(err) => return (error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(), 0),
    };
    let state_dir = shared.config().state_dir.clone();
    // Only ever serve files from the state directory's evidence.
    let evidence = state_dir.join("evidence");
    let sanitised = crate::evidence::retention::sanitised(id);
    let (path, content_type) = match kind {
        EvidenceKind::Snapshot => match found.latest.snapshot {
            Some(path) => (std::path::PathBuf::from(path), "image/jpeg"),
            None => return not_found("this incident has no snapshot".to_string()),
        },
        EvidenceKind::Main => (evidence.join(format!("{sanitised}-1-main.jpg")), "image/jpeg"),
        EvidenceKind::Clip if found.latest.clip_url.is_none() => {
            return not_found("no clip is recorded for this incident".to_string())
        }
        EvidenceKind::Clip => (crate::evidence::clips::clip_path(&state_dir, id), "video/mp4"),
    };
    if !path.starts_with(&evidence) || path.components().any(|c| c == std::path::Component::ParentDir) {
        return not_found("the file is not in the evidence directory".to_string());
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(_) if kind == EvidenceKind::Clip => {
            return not_found(
                "the clip is not written yet (it is, once the post-roll has passed) or was deleted".into(),
            )
        }
        Err(err) => return not_found(format!("{} unreadable: {err}", kind.as_str())),
    };
    let length = match file.metadata().await {
        Ok(metadata) => metadata.len(),
        Err(err) => return not_found(format!("{} unreadable: {err}", kind.as_str())),
    };
    let wanted = if kind == EvidenceKind::Clip { byte_range(range, length) } else { Ok(None) };
    let (start, end, partial) = match wanted {
        Ok(Some((start, end))) => (start, end.min(start + MAX_RANGE_BYTES - 1), true),
        Ok(None) if length > MAX_WHOLE_BYTES => (0, MAX_RANGE_BYTES - 1, true),
        Ok(None) => (0, length.saturating_sub(1), false),
        Err(()) => {
            let response = (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{length}")), (header::ACCEPT_RANGES, "bytes".to_string())],
            )
                .into_response();
            return (response, 0);
        }
    };
    let size = if length == 0 { 0 } else { end - start + 1 };
    let mut body = vec![0u8; size as usize];
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read = async {
        file.seek(std::io::SeekFrom::Start(start)).await?;
        file.read_exact(&mut body).await
    };
    if let Err(err) = read.await {
        return not_found(format!("{} unreadable: {err}", kind.as_str()));
    }
    // Snapshots and clips show people: no cache keeps them.
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::ACCEPT_RANGES, if kind == EvidenceKind::Clip { "bytes" } else { "none" }.to_string()),
        ],
        body,
    )
        .into_response();
    if partial {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {start}-{end}/{length}");
        response.headers_mut().insert(header::CONTENT_RANGE, value.parse().expect("ascii header"));
    }
    (response, size)
}

/// The byte range (inclusive) a `Range` header asks of a file of `length` bytes: `Ok(None)`
/// for none, several, or one this server does not understand (answered whole, as HTTP
/// allows); `Err` for one that lies outside the file (416).
pub(super) fn byte_range(header: Option<&str>, length: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else { return Ok(None) };
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), parse(first), parse(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && length > 0 => Ok(Some((length - suffix.min(length), length - 1))),
        (true, _, _) => Err(()),
        (false, Some(start), _) if start >= length => Err(()),
        (false, Some(start), None) if last.trim().is_empty() => Ok(Some((start, length - 1))),
        (false, Some(start), Some(end)) if end >= start => Ok(Some((start, end.min(length - 1)))),
        (false, Some(_), Some(_)) => Err(()),
        _ => Ok(None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    action: AckAction,
    by: String,
}

async fn answer(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    let body: AnswerBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"action\": \"ack\"|\"resolved\"|\"false_alarm\", \"by\": name}}: {err}"),
            )
            .into_response()
        }
    };
    // The same rules as an answer over MQTT (deliver::payload): a name of 1-64 characters
    // with no control characters, so neither path can put a forged log line or an unbounded
    // string into the outbox, the echo or the stewards' phones.
    let by = body.by.trim();
    let max = crate::deliver::payload::BY_MAX_CHARS;
    if by.is_empty() || by.chars().count() > max || by.chars().any(char::is_control) {
        return error(StatusCode::BAD_REQUEST, format!("by must be 1-{max} characters, no control characters"))
            .into_response();
    }
    let answer = Answer { action: body.action, by: by.to_string(), at_ms: shared.clock.now_ms() };
    let outbox = shared.outbox.clone();
    let incident_id = id.clone();
    let outcome = tokio::task::spawn_blocking(move || outbox.answer(&incident_id, answer)).await;
    match outcome {
        Ok(Ok(AnswerOutcome::Recorded { false_alarms })) => {
            tracing::info!(incident_id = %id, action = ?body.action, by, "operator answered from the console");
            if let Some((place, count)) = false_alarms {
                tracing::warn!(place = %place, count, "false alarm reported from the console");
            }
            shared.wake_delivery();
            Json(json!({ "outcome": "recorded" })).into_response()
        }
        Ok(Ok(AnswerOutcome::Duplicate)) => Json(json!({ "outcome": "duplicate" })).into_response(),
        Ok(Ok(AnswerOutcome::TooMany)) => Json(json!({ "outcome": "too_many" })).into_response(),
        Ok(Ok(AnswerOutcome::UnknownIncident)) => {
            error(StatusCode::NOT_FOUND, format!("no incident {id:?} (or it ended over a week ago)")).into_response()
        }
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// What the live stream is waiting on.
struct Listeners {
    /// Its slot among [`super::server::MAX_LIVE_STREAMS`], given back when the stream ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
    incidents: broadcast::Receiver<String>,
    cameras: broadcast::Receiver<StateChange>,
    zones: broadcast::Receiver<CameraId>,
}

async fn events(State(shared): State<Arc<Shared>>) -> Response {
    let Ok(slot) = shared.live_streams.clone().try_acquire_owned() else {
        shared.refused_live_streams.fetch_add(1, Ordering::Relaxed);
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many live streams are open").into_response();
    };
    live_stream(slot, shared).into_response()
}

fn live_stream(
    slot: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let listeners = Listeners {
        _slot: slot,
        incidents: shared.outbox.subscribe(),
        cameras: shared.health.subscribe(),
        zones: shared.zones_applied.subscribe(),
        shared,
    };
    let stream = futures::stream::unfold(listeners, |mut listeners| async move {
        let event = loop {
            let shutdown = listeners.shared.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => return None,
                received = listeners.incidents.recv() => match received {
                    Ok(id) => match listeners.shared.outbox.incident(&id) {
                        Ok(Some(found)) => break json_event("incident", &incident_view(found)),
                        _ => continue,
                    },
                    // Missed some: tell the page to re-read the list.
                    Err(broadcast::error::RecvError::Lagged(_)) => break Event::default().event("resync").data("{}"),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                received = listeners.cameras.recv() => match received {
                    Ok(change) => {
                        let config = listeners.shared.config();
                        let Some(camera) = config.cameras.iter().find(|c| c.id == change.camera) else { continue };
                        let health = listeners.shared.health.cameras().into_iter().find(|h| h.id == change.camera);
                        let models = model_names(&listeners.shared);
                        break json_event("camera", &camera_view(camera, health.as_deref(), &models));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break Event::default().event("resync").data("{}"),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                received = listeners.zones.recv() => match received {
                    Ok(camera) => break json_event("zones", &json!({ "camera": camera.as_str() })),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        };
        Some((Ok(event), listeners))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(data).expect("event serialises"))
}

#[cfg(test)]
mod range_tests {
    use super::byte_range;

    #[test]
    fn ranges_are_read_as_http_says_and_bounded_by_the_file() {
        // (header, file length, answer)
        type Range = Result<Option<(u64, u64)>, ()>;
        let table: [(Option<&str>, u64, Range); 12] = [
            (None, 100, Ok(None)),
            (Some("bytes=0-9"), 100, Ok(Some((0, 9)))),
            (Some("bytes=90-"), 100, Ok(Some((90, 99)))),
            (Some("bytes=50-500"), 100, Ok(Some((50, 99)))),
            (Some("bytes=-10"), 100, Ok(Some((90, 99)))),
            (Some("bytes=-500"), 100, Ok(Some((0, 99)))),
            (Some("bytes=100-"), 100, Err(())),
            (Some("bytes=-0"), 100, Err(())),
            (Some("bytes=9-3"), 100, Err(())),
            (Some("bytes=0-1,5-6"), 100, Ok(None)),
            (Some("items=0-1"), 100, Ok(None)),
            (Some("bytes=x-"), 100, Ok(None)),
        ];
        for (header, length, answer) in table {
            assert_eq!(byte_range(header, length), answer, "{header:?}");
        }
        assert_eq!(byte_range(Some("bytes=0-"), 0), Err(()), "nothing to serve in an empty file");
    }
}
