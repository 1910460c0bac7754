//! Times bystander pixelation (`src/evidence/pixelate.rs`) on its own, optimised, without
//! building the gateway in release (issue 16). Run from the repository root:
//!
//! ```sh
//! rustc -O --edition 2021 -o /tmp/pixelate_bench benches/privacy/pixelate_bench.rs && /tmp/pixelate_bench
//! ```
//!
//! Pictures: the analysed snapshot (416x234) with 3 people and a 1920x1080 main-stream
//! snapshot with 3 people (boxes of the same normalised size, 10% margin, blocks of 1/6 of
//! the box's height as `evidence::privacy` uses).

#[path = "../../src/evidence/pixelate.rs"]
#[allow(dead_code)]
mod pixelate;

use std::time::Instant;

fn main() {
    // Normalised person boxes (x1, y1, x2, y2), as the detector gives them.
    let people: [(f64, f64, f64, f64); 3] = [(0.10, 0.30, 0.22, 0.95), (0.45, 0.20, 0.55, 0.70), (0.70, 0.40, 0.78, 0.90)];
    for (width, height) in [(416u32, 234u32), (1280, 720), (1920, 1080)] {
        let mut pixels: Vec<u8> = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
        let rounds = 2000;
        let started = Instant::now();
        for _ in 0..rounds {
            for &(x1, y1, x2, y2) in &people {
                let (mx, my) = ((x2 - x1) * 0.1, (y2 - y1) * 0.1);
                let rect = [
                    ((x1 - mx).max(0.0) * width as f64) as u32,
                    ((y1 - my).max(0.0) * height as f64) as u32,
                    ((x2 + mx).min(1.0) * width as f64).ceil() as u32,
                    ((y2 + my).min(1.0) * height as f64).ceil() as u32,
                ];
                let block = ((rect[3] - rect[1]) / 6).max(4);
                pixelate::pixelate_rgb(&mut pixels, width, height, rect, block);
            }
        }
        let per_snapshot = started.elapsed().as_secs_f64() / f64::from(rounds);
        println!("{width}x{height}, 3 people: {:.1} µs per snapshot", per_snapshot * 1e6);
    }
}
