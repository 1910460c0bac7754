//! What a new config changes, pure: which cameras to stop, start, restart (their video source
//! or sampling changed) or only re-zone (their engine is rebuilt, their stream is not
//! touched), and which global sections only a restart applies. Cameras the new config leaves
//! as they were are not touched at all.

use crate::config::{CameraConfig, CameraId, Config};

/// The changes from one config to the next.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// Cameras gone from the config (or disabled).
    pub removed: Vec<CameraId>,
    /// New cameras.
    pub added: Vec<CameraConfig>,
    /// Cameras whose stream must be reconnected: source, sampling or decoding changed.
    pub restarted: Vec<CameraConfig>,
    /// Cameras whose zones or place labels changed, stream untouched.
    pub rezoned: Vec<CameraConfig>,
    /// Global sections that changed; they take effect at the next restart.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
            && self.added.is_empty()
            && self.restarted.is_empty()
            && self.rezoned.is_empty()
            && self.needs_restart.is_empty()
    }
}

/// Compares the config in force with a new, validated one.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for camera in &old.cameras {
        if !new.cameras.iter().any(|c| c.id == camera.id) {
            plan.removed.push(camera.id.clone());
        }
    }
    for camera in &new.cameras {
        match old.cameras.iter().find(|c| c.id == camera.id) {
            None => plan.added.push(camera.clone()),
            Some(previous) if previous == camera => {}
            Some(previous) if stream_changed(previous, camera) => plan.restarted.push(camera.clone()),
            Some(_) => plan.rezoned.push(camera.clone()),
        }
    }
    let sections: [(&'static str, bool); 8] = [
        ("ingest", old.ingest != new.ingest),
        ("decode", old.decode != new.decode),
        ("detector", old.detector != new.detector),
        ("storage", old.state_dir != new.state_dir),
        ("outbox", old.outbox_max_entries != new.outbox_max_entries),
        ("mqtt", old.mqtt != new.mqtt),
        ("escalation", old.escalation != new.escalation),
        ("console", old.console != new.console),
    ];
    plan.needs_restart = sections.into_iter().filter(|(_, changed)| *changed).map(|(name, _)| name).collect();
    plan
}

/// Whether the camera's ingest task must restart to apply the change.
fn stream_changed(old: &CameraConfig, new: &CameraConfig) -> bool {
    old.source != new.source
        || old.analysis_interval != new.analysis_interval
        || old.active_interval != new.active_interval
        || old.priority != new.priority
        || old.decode_mode != new.decode_mode
        || old.snapshot_url != new.snapshot_url
        || old.rotated_pass() != new.rotated_pass()
        // The decoders pick the model by this rule; it is fixed when the camera's sink is made.
        || old.detector_model != new.detector_model
        || old.has_fall_watch() != new.has_fall_watch()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("/")).expect("valid test config")
    }

    const BASE: &str = r#"
[storage]
state_dir = "/tmp/state"
[cameras.a]
url = "rtsp://10.0.0.1/s"
[cameras.b]
url = "rtsp://10.0.0.2/s"
[[cameras.b.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]
[cameras.c]
url = "rtsp://10.0.0.3/s"
"#;

    #[test]
    fn only_what_changed_is_touched() {
        let old = config(BASE);
        assert!(plan(&old, &old).is_empty());
        let new = config(
            &BASE
                .replace("[0.9, 0.9]]\n[cameras.c]", "[0.5, 0.9]]\n[cameras.c]")
                .replace("rtsp://10.0.0.1/s", "rtsp://10.0.0.9/s")
                .replace("[cameras.c]\nurl = \"rtsp://10.0.0.3/s\"\n", "[cameras.d]\nurl = \"rtsp://10.0.0.4/s\"\n")
                .replace("[storage]", "[decode]\nworkers = 2\n[storage]"),
        );
        let plan = plan(&old, &new);
        assert_eq!(plan.removed, vec![CameraId::try_new("c").unwrap()]);
        assert_eq!(plan.added.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["d"]);
        assert_eq!(plan.restarted.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(plan.rezoned.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(plan.needs_restart, vec!["decode"]);
    }

    #[test]
    fn a_new_detector_model_needs_the_stream_restarted() {
        let old = config(BASE);
        let new = config(
            &BASE.replace("url = \"rtsp://10.0.0.3/s\"", "url = \"rtsp://10.0.0.3/s\"\ndetector_model = \"square\""),
        );
        let plan = plan(&old, &new);
        assert_eq!(plan.restarted.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["c"]);
        assert!(plan.rezoned.is_empty());
    }

    #[test]
    fn a_rotated_pass_needs_the_stream_restarted() {
        let fall = "[storage]\nstate_dir = \"/s\"\n[cameras.a]\nurl = \"rtsp://h/s\"\n[[cameras.a.zones]]\n\
                    id = \"f\"\nkind = \"fall_watch\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n";
        let plan = plan(&config(fall), &config(&format!("{fall}rotated_pass = true\n")));
        assert_eq!(plan.restarted.len(), 1);
        assert!(plan.rezoned.is_empty());
    }
}
