//! Which detector model analyses a camera: `[detector] model` (the square 416×416 input, the
//! default) or `[detector] wide_model` (an aspect-matched input such as 416×256, for 16:9
//! substreams). Pure: the decoders call [`ModelRule::variant`] with each decoded frame's size,
//! and `replay` does the same, so a camera is analysed with the same model live and replayed.
//!
//! The automatic rule (`detector_model = "auto"`, the default): the wide model when one is
//! configured, the frame is at least [`WIDE_MIN_ASPECT`] : 1 and the camera has no fall-watch
//! zone. Why not for fall-watch cameras: the fall rule's rotated pass letterboxes the turned
//! (portrait) picture into the same input, which a 416×256 input sees at 0.62× the square
//! model's resolution; on the fall clips it raised 4 of 8 falls against 5 of 8 (BENCHMARKS.md,
//! "Detector variants"). Why not for 4:3 or portrait frames: they are fitted by their height,
//! 256 rows instead of 416, and only 62–71 % of the square model's boxes matched.

/// The model a frame is analysed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelVariant {
    /// `[detector] model`.
    Square,
    /// `[detector] wide_model`.
    Wide,
}

impl ModelVariant {
    /// Both variants, in index order.
    pub const ALL: [ModelVariant; 2] = [ModelVariant::Square, ModelVariant::Wide];

    /// The name in config files, `/metrics` and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelVariant::Square => "square",
            ModelVariant::Wide => "wide",
        }
    }

    /// 0 for square, 1 for wide (arrays indexed by variant).
    pub fn index(self) -> usize {
        match self {
            ModelVariant::Square => 0,
            ModelVariant::Wide => 1,
        }
    }
}

/// A camera's `detector_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelChoice {
    /// The automatic rule (see the module documentation).
    #[default]
    Auto,
    /// Always this variant.
    Fixed(ModelVariant),
}

impl ModelChoice {
    /// The value named `name` in a config file.
    pub fn from_name(name: &str) -> Option<ModelChoice> {
        match name {
            "auto" => Some(ModelChoice::Auto),
            "square" => Some(ModelChoice::Fixed(ModelVariant::Square)),
            "wide" => Some(ModelChoice::Fixed(ModelVariant::Wide)),
            _ => None,
        }
    }

    /// The name in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelChoice::Auto => "auto",
            ModelChoice::Fixed(variant) => variant.as_str(),
        }
    }
}

/// Frames at least this wide for their height get the wide model automatically: 16:9
/// (1.78) and 16:10 (1.6) substreams do, 4:3 (1.33), 5:4 and portrait ones do not. A 416×256
/// input is 1.625 : 1, so a 1.6 : 1 frame is letterboxed into it at 98.5 % of the square
/// model's scale.
pub const WIDE_MIN_ASPECT: f64 = 1.6;

/// What decides a camera's model: its `detector_model`, whether it has a fall-watch zone, and
/// whether the running detector has a wide model at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRule {
    /// The camera's `detector_model`.
    pub choice: ModelChoice,
    /// The camera has a fall-watch zone.
    pub fall_watch: bool,
    /// `[detector] wide_model` is loaded.
    pub wide_available: bool,
}

impl ModelRule {
    /// The model for a decoded frame of `frame_width`×`frame_height` pixels. Without a wide
    /// model every frame gets the square one (also for `detector_model = "wide"`: validation
    /// refuses that, so it only happens when a reload set it before a restart loaded the model).
    pub fn variant(self, frame_width: u32, frame_height: u32) -> ModelVariant {
        if !self.wide_available {
            return ModelVariant::Square;
        }
        match self.choice {
            ModelChoice::Fixed(variant) => variant,
            ModelChoice::Auto => {
                let wide_frame =
                    frame_height > 0 && f64::from(frame_width) >= WIDE_MIN_ASPECT * f64::from(frame_height);
                if wide_frame && !self.fall_watch {
                    ModelVariant::Wide
                } else {
                    ModelVariant::Square
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ModelVariant::{Square, Wide};

    #[test]
    fn the_automatic_rule_gives_16_9_cameras_without_fall_watch_the_wide_model() {
        let auto = ModelChoice::Auto;
        let square = ModelChoice::Fixed(Square);
        let wide = ModelChoice::Fixed(Wide);
        // (choice, fall watch, wide model loaded, frame, expected)
        type Row = (ModelChoice, bool, bool, (u32, u32), ModelVariant);
        let table: &[Row] = &[
            (auto, false, true, (640, 360), Wide),     // 16:9 substream
            (auto, false, true, (1920, 1080), Wide),   // 16:9 main stream
            (auto, false, true, (1280, 800), Wide),    // 16:10: exactly 1.6
            (auto, false, true, (1279, 800), Square),  // just under 1.6
            (auto, false, true, (768, 576), Square),   // 4:3 (the plaza clip)
            (auto, false, true, (704, 576), Square),   // D1 PAL
            (auto, false, true, (360, 640), Square),   // portrait
            (auto, false, true, (0, 0), Square),       // no size: never divides by zero
            (auto, true, true, (640, 360), Square),    // fall watch keeps the square model
            (auto, false, false, (640, 360), Square),  // no wide model configured
            (square, false, true, (640, 360), Square), // forced square on a 16:9 camera
            (wide, false, true, (768, 576), Wide),     // forced wide on a 4:3 camera
            (wide, true, true, (640, 360), Wide),      // forced wide on a fall-watch camera
            (wide, false, false, (640, 360), Square),  // forced wide before the model is loaded
        ];
        for &(choice, fall_watch, wide_available, (width, height), expected) in table {
            let rule = ModelRule { choice, fall_watch, wide_available };
            assert_eq!(rule.variant(width, height), expected, "{rule:?} {width}x{height}");
        }
    }

    #[test]
    fn choice_names_round_trip_and_unknown_ones_are_refused() {
        for name in ["auto", "square", "wide"] {
            assert_eq!(ModelChoice::from_name(name).map(ModelChoice::as_str), Some(name));
        }
        for name in ["", "Wide", "416x256", "models/yolox_nano.toml"] {
            assert_eq!(ModelChoice::from_name(name), None, "{name:?}");
        }
    }
}
