//! Teaching a bin area from the console (issue 15), against a running gateway on footage
//! made from two real photos of collection points (tidy, then overflowing, looping): examples
//! from the live crop through the authenticated API, training with its cross-validated
//! accuracy, the learned model hot-applied to the running zone (its readings change source
//! and follow the labels, and `gateway bin-state --camera --zone` reads it too), a false
//! alarm's crop added as a "normal" example in one click, and the editor's panel clicked
//! through in headless Chromium. Also: few-shot figures on footage made with ffmpeg.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::broker::Mosquitto;
use super::console::{chromium, encode, run_browser, Gateway, TOKEN};
use super::support::{eventually, project_root, require_runtime, shared_media};

/// A tidy and an overflowing collection point with nothing the detector takes for a person or
/// a vehicle (a container read as a car would hide the zone's reading), and different colours.
const TIDY: &str = "bins/dordns_018_normal.jpg";
const OVERFLOWING: &str = "bins/dordns_025_overflowing.jpg";
const ZONE: &str = "/api/cameras/bins/bin-zones/bins";

/// 15 s of the tidy photo, then 15 s of the overflowing one (the gateway loops footage).
fn tidy_then_overflowing_clip() -> PathBuf {
    let (tidy, overflowing) = (shared_media(TIDY), shared_media(OVERFLOWING));
    let inputs = [
        "-loop",
        "1",
        "-framerate",
        "5",
        "-t",
        "15",
        "-i",
        tidy.to_str().unwrap(),
        "-loop",
        "1",
        "-framerate",
        "5",
        "-t",
        "15",
        "-i",
        overflowing.to_str().unwrap(),
    ];
    super::replay::make_clip(
        "bins_dordns_018_then_025.mp4",
        &inputs,
        "[0]scale=640:360,setsar=1[a];[1]scale=640:360,setsar=1[b];[a][b]concat=n=2:v=1:a=0",
        30,
    )
}

fn camera_toml(clip: &Path) -> String {
    format!(
        "\n[cameras.bins]\nurl = \"file:{}\"\ngrid = \"grid-15\"\nanalysis_interval_ms = 1000\n\n\
         [[cameras.bins.zones]]\nid = \"bins\"\nkind = \"bin_area\"\n\
         polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n\
         raise_after_ms = 6000\nclear_after_ms = 6000\nupdate_min_interval_ms = 60000\n",
        clip.display()
    )
}

/// GET of a binary body with the token: (status, headers lower-cased, bytes).
fn get_bytes(gateway: &Gateway, path: &str) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let output = Command::new("curl")
        .args(["-s", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}", "-H", &format!("Authorization: Bearer {TOKEN}"), &gateway.url(path)])
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&headers).unwrap_or_default().to_ascii_lowercase();
    (status, headers, std::fs::read(&body).unwrap_or_default())
}

/// Mean colour of a picture.
fn mean_rgb(picture: &image::RgbImage) -> [f64; 3] {
    let n = f64::from(picture.width() * picture.height()).max(1.0);
    let mut sum = [0.0; 3];
    for pixel in picture.pixels() {
        for (s, v) in sum.iter_mut().zip(pixel.0) {
            *s += f64::from(v) / n;
        }
    }
    sum
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

/// The live crop and its frame time, and whether it shows the overflowing photo (nearest
/// mean colour of the two).
fn live_crop(gateway: &Gateway, tidy: [f64; 3], overflowing: [f64; 3]) -> Option<(i64, bool)> {
    let (status, headers, jpeg) = get_bytes(gateway, &format!("{ZONE}/live.jpg"));
    if status != 200 {
        return None;
    }
    let t_ms = headers.lines().find_map(|l| l.strip_prefix("x-frame-t-ms:")).and_then(|v| v.trim().parse().ok())?;
    let crop = image::load_from_memory(&jpeg).ok()?.to_rgb8();
    let mean = mean_rgb(&crop);
    Some((t_ms, distance(mean, overflowing) < distance(mean, tidy)))
}

fn zone_state(gateway: &Gateway) -> Value {
    gateway.json(ZONE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bin_area_is_taught_from_the_console_and_its_model_is_hot_applied() {
    require_runtime();
    let clip = tidy_then_overflowing_clip();
    let broker = Mosquitto::start();
    let mut gateway = Gateway::start(broker.port, &camera_toml(&clip));
    let state_dir = gateway.config.parent().unwrap().join("state");
    assert!(eventually(Duration::from_secs(30), || gateway.http("GET", "/healthz", None, None).0 == 200).await);
    let reading = eventually(Duration::from_secs(60), || !zone_state(&gateway)["reading"]["score"].is_null()).await;
    assert!(reading, "no reading of the bin zone; logs:\n{}", gateway.stop());
    let state = zone_state(&gateway);
    assert_eq!((state["source"].as_str(), state["reading"]["source"].as_str()), (Some("generic"), Some("generic")));
    assert_eq!(state["examples"], serde_json::json!([]));

    // Reads need the token; changes need the header (the cookie is not enough).
    assert_eq!(gateway.http("GET", ZONE, None, None).0, 401);
    let normal = r#"{"label":"normal"}"#;
    assert_eq!(gateway.http("POST", &format!("{ZONE}/examples"), None, Some(normal)).0, 401);
    // Bad inputs are refused with a reason.
    let (status, body) = gateway.http("POST", &format!("{ZONE}/examples"), Some(TOKEN), Some(r#"{"label":"full"}"#));
    assert!(status == 400 && body.contains("normal"), "{status} {body}");
    let (status, body) = gateway.http("POST", "/api/cameras/bins/bin-zones/nope/examples", Some(TOKEN), Some(normal));
    assert!(status == 404 && body.contains("no zone"), "{status} {body}");
    let (status, body) =
        gateway.http("POST", &format!("{ZONE}/examples"), Some(TOKEN), Some(r#"{"label":"normal","frame_t_ms":12}"#));
    assert!(status == 409 && body.contains("look at the live crop again"), "{status} {body}");
    let (status, body) = gateway.http("POST", &format!("{ZONE}/train"), Some(TOKEN), None);
    assert!(status == 409 && body.contains("at least one"), "{status} {body}");

    // Label the crops shown, as an operator would: 3 of each state.
    let tidy_mean = mean_rgb(&image::open(shared_media(TIDY)).unwrap().to_rgb8());
    let overflowing_mean = mean_rgb(&image::open(shared_media(OVERFLOWING)).unwrap().to_rgb8());
    let (mut labelled, mut seen) = ([0usize; 2], std::collections::HashSet::new());
    let done = eventually(Duration::from_secs(120), || {
        if let Some((t_ms, overflowing)) = live_crop(&gateway, tidy_mean, overflowing_mean) {
            if labelled[usize::from(overflowing)] < 3 && seen.insert(t_ms) {
                let label = if overflowing { "overflowing" } else { "normal" };
                let body = format!(r#"{{"label":"{label}","frame_t_ms":{t_ms}}}"#);
                let (status, answer) = gateway.http("POST", &format!("{ZONE}/examples"), Some(TOKEN), Some(&body));
                assert_eq!(status, 201, "{answer}");
                labelled[usize::from(overflowing)] += 1;
            }
        }
        labelled == [3, 3]
    })
    .await;
    assert!(done, "labelled {labelled:?} in 2 minutes");
    let state = zone_state(&gateway);
    assert_eq!(state["counts"], serde_json::json!({ "overflowing": 3, "normal": 3 }));
    let first = state["examples"][0]["id"].as_u64().unwrap();
    let (status, headers, jpeg) = get_bytes(&gateway, &format!("{ZONE}/examples/{first}"));
    assert!(status == 200 && headers.contains("image/jpeg") && jpeg.starts_with(&[0xFF, 0xD8]), "{status}");

    // Training: the cross-validated accuracy comes back, the model is written and swapped in.
    let (status, body) = gateway.http("POST", &format!("{ZONE}/train"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    let trained: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((trained["applied"].as_bool(), trained["source"].as_str()), (Some(true), Some("learned")), "{trained}");
    assert_eq!(trained["trained"]["examples"], 6);
    assert_eq!(trained["trained"]["accuracy"].as_f64(), Some(1.0), "{trained}");
    assert!(state_dir.join("bin-zones/bins/bins/model.json").is_file());
    let learned =
        eventually(Duration::from_secs(20), || zone_state(&gateway)["reading"]["source"].as_str() == Some("learned"))
            .await;
    assert!(learned, "the running zone did not take the learned model: {}", zone_state(&gateway));
    // The learned model reads each photo as it was labelled.
    let follows = eventually(Duration::from_secs(60), || {
        let Some((t_ms, overflowing)) = live_crop(&gateway, tidy_mean, overflowing_mean) else { return false };
        let state = zone_state(&gateway);
        let reading = &state["reading"];
        // The same frame (its time is taken twice in the run loop: within a few ms).
        reading["t_ms"].as_i64().is_some_and(|t| (t - t_ms).abs() < 300)
            && reading["source"] == "learned"
            && reading["reads"] == if overflowing { "overflowing" } else { "normal" }
    })
    .await;
    assert!(follows, "the learned reading does not follow the labels: {}", zone_state(&gateway));

    // `gateway bin-state --config … --camera --zone` reads the zone's learned model too: its
    // scores are not the generic model's on the same picture.
    let photos = [shared_media(TIDY), shared_media(OVERFLOWING)];
    let read = |args: &[&str]| -> Vec<f64> {
        let output = Command::new(env!("CARGO_BIN_EXE_gateway")).args(args).args(&photos).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["score"].as_f64().unwrap()).collect()
    };
    let config = gateway.config.to_str().unwrap().to_string();
    let zone_scores = read(&["bin-state", "--json", "--config", &config, "--camera", "bins", "--zone", "bins"]);
    let generic_scores = read(&["bin-state", "--json"]);
    assert!(zone_scores[0] < 0.5 && zone_scores[1] >= 0.5, "the learned model on the photos: {zone_scores:?}");
    assert!(
        zone_scores.iter().zip(&generic_scores).any(|(z, g)| (z - g).abs() > 0.01),
        "bin-state read the generic model for the zone: {zone_scores:?} vs {generic_scores:?}"
    );

    // Deleting an example; the gallery shrinks.
    let (status, _) = gateway.http("DELETE", &format!("{ZONE}/examples/{first}"), Some(TOKEN), None);
    assert_eq!(status, 200);
    assert_eq!(gateway.http("DELETE", &format!("{ZONE}/examples/{first}"), Some(TOKEN), None).0, 404);
    assert_eq!(zone_state(&gateway)["examples"].as_array().unwrap().len(), 5);

    // The trash incident the overflowing half opened: a false alarm's crop becomes a "normal"
    // example, once, and only after the false_alarm answer.
    let incident = eventually(Duration::from_secs(60), || {
        gateway.json("/api/incidents")["incidents"].as_array().unwrap().iter().any(|i| i["camera"] == "bins")
    })
    .await;
    assert!(incident, "no trash incident opened; logs:\n{}", gateway.stop());
    let id =
        gateway.json("/api/incidents")["incidents"].as_array().unwrap().iter().find(|i| i["camera"] == "bins").unwrap()
            ["incident_id"]
            .as_str()
            .unwrap()
            .to_string();
    let teach = format!("/api/incidents/{}/normal-example", encode(&id));
    let (status, body) = gateway.http("POST", &teach, Some(TOKEN), None);
    assert!(status == 409 && body.contains("false_alarm first"), "{status} {body}");
    let answer = r#"{"action":"false_alarm","by":"operator li"}"#;
    let answered = gateway.http("POST", &format!("/api/incidents/{}/answer", encode(&id)), Some(TOKEN), Some(answer));
    assert_eq!(answered.0, 200, "{}", answered.1);
    assert_eq!(gateway.http("POST", &teach, None, None).0, 401);
    let (status, body) = gateway.http("POST", &teach, Some(TOKEN), None);
    assert_eq!(status, 201, "{body}");
    let added: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(added["example"]["label"], "normal");
    assert_eq!(added["example"]["from"], format!("incident {id}"));
    let (status, body) = gateway.http("POST", &teach, Some(TOKEN), None);
    assert!(status == 409 && body.contains("already"), "{status} {body}");

    // Back to the generic model: the examples stay.
    let (status, body) = gateway.http("DELETE", &format!("{ZONE}/model"), Some(TOKEN), None);
    assert!(status == 200 && body.contains("\"generic\""), "{status} {body}");
    assert!(!state_dir.join("bin-zones/bins/bins/model.json").exists());
    assert_eq!(zone_state(&gateway)["examples"].as_array().unwrap().len(), 6);
    let (_, metrics) = gateway.http("GET", "/metrics", None, None);
    assert!(metrics.contains("gateway_bin_learning_refused_total{reason=\"zone_full\"} 0"), "{metrics}");

    // The editor's panel, clicked through once in headless Chromium.
    let browser = project_root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir() && Path::new(&chromium()).exists(),
        "the browser tests need Chromium and tests/browser/node_modules: run scripts/setup --for-tests"
    );
    let artefacts = project_root().join("tests/artifacts/browser");
    std::fs::create_dir_all(&artefacts).unwrap();
    let report = run_browser(&gateway, "bins", "bins", &artefacts, &[("BIN_ZONE", "bins")]);
    assert_eq!(report["examples_added"], 2, "{report}");
    assert!(report["accuracy_text"].as_str().unwrap_or("").contains("cross-validated accuracy"), "{report}");
    assert!(report["reading_score"].as_f64().is_some_and(|s| (0.0..=1.0).contains(&s)), "{report}");
    assert_eq!(report["examples_deleted"], 1, "{report}");
    assert_eq!(zone_state(&gateway)["examples"].as_array().unwrap().len(), 7);
    assert!(artefacts.join("editor-bins.png").metadata().is_ok_and(|m| m.len() > 10_000));
    let logs = gateway.stop();
    assert!(logs.contains("bin area trained from the console"), "training not logged");
}

/// The development set's one scene with both states: a fixed CCTV view of wheelie bins.
const SCENE: &str = "abhi_iiith_wm12_0002";
const SCENE_OVERFLOWING: &str = "bins/abhisigningin_001_overflowing.jpg";
const SCENE_NORMAL: &str = "bins/abhisigningin_002_normal.jpg";
/// Seconds of each state in the made footage.
const STATE_SECONDS: usize = 60;

/// Footage of the scene as a fixed camera would give it: 60 s overflowing, then 60 s tidy,
/// 640×360 H.264, with temporal sensor noise, a slow dusk-and-back cycle (40 s, down to
/// −0.22 brightness) and a 3 s flicker (±0.05). Returns one PNG frame a second, with its state.
fn scene_footage_frames(dir: &Path) -> Vec<(image::RgbImage, bool)> {
    let (overflowing, normal) = (shared_media(SCENE_OVERFLOWING), shared_media(SCENE_NORMAL));
    let seconds = STATE_SECONDS.to_string();
    let inputs = [
        "-loop",
        "1",
        "-framerate",
        "5",
        "-t",
        &seconds,
        "-i",
        overflowing.to_str().unwrap(),
        "-loop",
        "1",
        "-framerate",
        "5",
        "-t",
        &seconds,
        "-i",
        normal.to_str().unwrap(),
    ];
    let clip = super::replay::make_clip(
        "bins_scene_noise_dusk.mp4",
        &inputs,
        "[0]scale=640:360,setsar=1[a];[1]scale=640:360,setsar=1[b];[a][b]concat=n=2:v=1:a=0,\
         noise=alls=14:allf=t,\
         eq=brightness='-0.11*(1-cos(2*PI*t/40))+0.05*sin(2*PI*t/3)':eval=frame",
        2 * STATE_SECONDS as u32,
    );
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&clip)
        .args(["-vf", "fps=1"])
        .arg(dir.join("%03d.png"))
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not take frames from {}", clip.display());
    let mut frames = Vec::new();
    for second in 0..2 * STATE_SECONDS {
        // Frame n (1-based file) shows t ≈ n − 1 s; the two seconds at the cut are left out.
        if second.abs_diff(STATE_SECONDS) <= 1 {
            continue;
        }
        let path = dir.join(format!("{:03}.png", second + 1));
        let Ok(picture) = image::open(&path) else { continue };
        frames.push((picture.to_rgb8(), second < STATE_SECONDS));
    }
    frames
}

/// Few-shot learning per zone on footage made with ffmpeg from the scene's photos: k frames
/// of each state (k = 1, 3, 5) teach a zone model that starts from the generic model trained
/// **without** the scene; the other frames test it (mean balanced accuracy over 20 draws).
/// Then a k = 3 model runs the footage through the engine: one incident, opened in the
/// overflowing minute and cleared in the tidy one. The figures go to BENCHMARKS.md:
/// `cargo test --test it bin_learning::few_shot -- --nocapture`.
#[test]
fn few_shot_on_footage_made_from_a_scene_learns_the_zone_and_drives_its_incident() {
    use gateway::bin_state::{self, embedder::Embedder, Confusion, FeatureSet, ViewFeatures, DEFAULT_L2};
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let frames = scene_footage_frames(dir.path());
    assert!(frames.len() >= 2 * STATE_SECONDS - 6, "only {} frames", frames.len());
    let models = project_root().join("models");
    let library = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let mut embedder = Embedder::load(&models.join(bin_state::EMBEDDER_MANIFEST_FILE), library.as_deref()).unwrap();
    let embed = |embedder: &mut Embedder, picture: &image::RgbImage| {
        ViewFeatures::new(&embedder.embed(picture).unwrap(), picture)
    };

    // The generic model without this scene: what a new camera here would start from.
    let dataset = shared_media(SCENE_NORMAL).parent().unwrap().to_path_buf();
    let images = bin_state::load_labels(&dataset).unwrap();
    let views: Vec<Vec<ViewFeatures>> = images
        .iter()
        .map(|image| {
            let picture = gateway::cli::bin_state::read_image(&dataset.join(&image.file)).unwrap();
            bin_state::training_views(&picture, 4).iter().map(|view| embed(&mut embedder, view)).collect()
        })
        .collect();
    let prior = bin_state::train_without_scene(&images, &views, SCENE, FeatureSet::Embedding, DEFAULT_L2, 4);
    let footage: Vec<(ViewFeatures, bool)> =
        frames.iter().map(|(p, state)| (embed(&mut embedder, p), *state)).collect();

    let l2 = gateway::cli::bin_state::FEW_SHOT_L2;
    let mut rng = bin_state::Lcg(15);
    let mut figures = Vec::new();
    let mut k3_model = None;
    for k in [0usize, 1, 3, 5] {
        let draws = if k == 0 { 1 } else { 20 };
        let mut total = 0.0;
        for _ in 0..draws {
            let mut chosen = Vec::new();
            for state in [true, false] {
                let mut pool: Vec<usize> = (0..footage.len()).filter(|&i| footage[i].1 == state).collect();
                for _ in 0..k {
                    let pick = ((rng.next_unit() * pool.len() as f32) as usize).min(pool.len() - 1);
                    chosen.push(pool.swap_remove(pick));
                }
            }
            let examples: Vec<(&ViewFeatures, bool)> = chosen.iter().map(|&i| (&footage[i].0, footage[i].1)).collect();
            let model = bin_state::train(&examples, FeatureSet::Embedding, l2, Some(&prior), "", "", "");
            let confusion = Confusion::of(
                (0..footage.len())
                    .filter(|i| !chosen.contains(i))
                    .map(|i| (footage[i].1, model.probability(&footage[i].0) >= 0.5)),
            );
            total += confusion.balanced_accuracy().unwrap();
            if k == 3 && k3_model.is_none() {
                k3_model = Some(model);
            }
        }
        figures.push((k, total / draws as f64));
    }
    let line: Vec<String> = figures.iter().map(|(k, a)| format!("k={k} {:.1} %", a * 100.0)).collect();
    eprintln!(
        "few-shot on footage made from scene {SCENE} ({} frames, noise + dusk + flicker; 20 draws): {}",
        footage.len(),
        line.join(", ")
    );
    let k3 = figures.iter().find(|(k, _)| *k == 3).unwrap().1;
    assert!(k3 >= 0.95, "k = 3 reads {:.1} % of the footage right (target 95 %)", k3 * 100.0);

    // The most examples a zone keeps (30 per state): the fit and its cross-validation folds,
    // as the console's Train runs them (the crops' embeddings, ~10 ms each, come on top).
    let most: Vec<(ViewFeatures, bool)> = [true, false]
        .iter()
        .flat_map(|&state| footage.iter().filter(move |(_, s)| *s == state).take(30).cloned())
        .collect();
    let started = std::time::Instant::now();
    let (_, accuracy) = bin_state::train_zone(&most, &prior, l2, "");
    eprintln!(
        "training on {} examples with 5-fold cross-validation: {:.2} s (accuracy {:.1} %)",
        most.len(),
        started.elapsed().as_secs_f64(),
        accuracy.unwrap_or(0.0) * 100.0
    );

    // The k = 3 zone model drives the incident through the engine: one frame a second.
    let model = k3_model.unwrap();
    model.check().unwrap();
    let mut model = model;
    model.embedder_sha256 = embedder.sha256().to_string();
    std::fs::write(dir.path().join("zone.json"), model.to_json()).unwrap();
    let text = format!(
        "[detector]\nmodel = {:?}\n\n[cameras.yard]\nurl = \"rtsp://192.0.2.1/stream\"\n\n\
         [[cameras.yard.zones]]\nid = \"bins\"\nkind = \"bin_area\"\n\
         polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n\
         raise_after_ms = 20000\nclear_after_ms = 20000\nmodel = \"zone.json\"\n",
        project_root().join("models/yolox_nano.toml")
    );
    let config = gateway::config::parse(&text, dir.path()).unwrap_or_else(|p| panic!("{p}"));
    let camera = &config.cameras[0];
    let mut classifiers = gateway::cli::ZoneClassifiers::load(camera, &config.detector).unwrap();
    let mut engine = gateway::engine::CameraEngine::new(camera, &[], &[]);
    let mut events = Vec::new();
    for (second, (picture, _)) in frames.iter().enumerate() {
        let readings = classifiers.read(picture);
        let frame = gateway::engine::EngineFrame {
            now_ms: second as i64 * 1000,
            observations: Vec::new(),
            picture: Some(picture),
            frame_aspect: 16.0 / 9.0,
            zone_readings: &readings,
            poses: &[],
        };
        events.extend(engine.update(frame).into_iter().map(|e| format!("{:?}", e.event).to_lowercase()));
    }
    assert_eq!(events, ["opened", "cleared"], "the learned zone's incidents on the footage");
}
