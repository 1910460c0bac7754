//! Property tests of config loading (issue 11): whatever text an ops person or an attacker
//! writes, `parse` returns the config or problems, never panics, and every problem names a key
//! path under a known section (or none, for the file as a whole).

use proptest::prelude::*;

/// A config that validates, touching most sections (no `file:` camera: that would probe a file).
const BASE: &str = r#"
[ingest]
reconnect_initial_ms = 500
reconnect_max_ms = 5000
[decode]
workers = 2
[detector]
score_threshold = 0.4
sessions = 1
[storage]
state_dir = "state"
[outbox]
max_entries = 1000
[console]
bind = "127.0.0.1:8080"
max_connections = 32
allowed_hosts = ["gateway.lan"]
[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "gw-1"
[cameras.gate-3]
url = "rtsp://10.0.0.3/stream1"
street = "wenhua"
grid = "grid-08"
analysis_interval_ms = 2000
[[cameras.gate-3.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
dwell_ms = 60000
[[cameras.gate-3.zones]]
id = "door"
kind = "fall_watch"
polygon = [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]]
"#;

const SECTIONS: [&str; 10] =
    ["ingest", "decode", "detector", "limits", "storage", "outbox", "mqtt", "escalation", "console", "cameras"];

fn check(text: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    if let Err(problems) = super::parse(text, dir.path()) {
        prop_assert!(!problems.0.is_empty(), "an error without problems");
        for problem in &problems.0 {
            let section = problem.path.split(['.', '[']).next().unwrap_or("");
            // A key path under a known section, none (the file as a whole), or the unknown
            // top-level key itself.
            prop_assert!(
                problem.path.is_empty() || SECTIONS.contains(&section) || problem.message.starts_with("unknown field"),
                "problem outside the known sections: {problem}"
            );
            prop_assert!(!problem.message.is_empty(), "a problem without words at {}", problem.path);
        }
    }
    Ok(())
}

/// One edit of the base text.
#[derive(Debug, Clone)]
enum Mutation {
    /// Bytes `start..start+len` removed.
    Cut(usize, usize),
    /// Text inserted at a position.
    Insert(usize, String),
    /// The n-th number replaced.
    Number(usize, String),
    /// A line repeated.
    Repeat(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let numbers = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("\"text\"".to_string()),
        Just("[]".to_string()),
        Just("18446744073709551615".to_string()),
    ];
    prop_oneof![
        (0..BASE.len(), 0..40usize).prop_map(|(start, len)| Mutation::Cut(start, len)),
        (0..BASE.len(), "[\\[\\]=\".,a-z0-9 \n#{}-]{0,12}").prop_map(|(at, text)| Mutation::Insert(at, text)),
        (0..40usize, numbers).prop_map(|(n, value)| Mutation::Number(n, value)),
        (0..40usize).prop_map(Mutation::Repeat),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let boundary = |mut at: usize| {
        at = at.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match mutation {
        Mutation::Cut(start, len) => {
            let (start, end) = (boundary(*start), boundary(start + len));
            format!("{}{}", &text[..start], &text[end..])
        }
        Mutation::Insert(at, inserted) => {
            let at = boundary(*at);
            format!("{}{inserted}{}", &text[..at], &text[at..])
        }
        Mutation::Number(n, value) => {
            let mut seen = 0;
            let mut out = String::new();
            let mut chars = text.char_indices().peekable();
            while let Some((_, c)) = chars.next() {
                if c.is_ascii_digit() {
                    let mut number = c.to_string();
                    while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit() || *d == '.') {
                        number.push(*d);
                        chars.next();
                    }
                    out.push_str(if seen == *n { value } else { &number });
                    seen += 1;
                } else {
                    out.push(c);
                }
            }
            out
        }
        Mutation::Repeat(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let index = n % lines.len();
            let mut out: Vec<&str> = lines.clone();
            out.insert(index, lines[index]);
            out.join("\n")
        }
    }
}

#[test]
fn the_base_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    super::parse(BASE, dir.path()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text)?;
    }

    #[test]
    fn mutated_configs_never_panic_and_name_their_keys(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let text = mutations.iter().fold(BASE.to_string(), |text, m| apply(&text, m));
        check(&text)?;
    }

    #[test]
    fn arbitrary_polygons_are_accepted_or_refused_with_their_path(
        points in proptest::collection::vec((-0.5f32..1.5, -0.5f32..1.5), 0..12)
    ) {
        let polygon: Vec<String> = points.iter().map(|(x, y)| format!("[{x:?}, {y:?}]")).collect();
        let text = format!(
            "[cameras.c]\nurl = \"rtsp://h/\"\n[[cameras.c.zones]]\nid = \"z\"\nkind = \"mask\"\npolygon = [{}]\n",
            polygon.join(", ")
        );
        let dir = tempfile::tempdir().unwrap();
        match super::parse(&text, dir.path()) {
            Ok(config) => {
                let zone = &config.cameras[0].zones[0];
                prop_assert!(zone.polygon.self_intersection().is_none(), "a crossing polygon was accepted");
            }
            Err(problems) => {
                for problem in &problems.0 {
                    prop_assert!(problem.path.starts_with("cameras.c.zones[0].polygon"), "{problem}");
                }
            }
        }
    }
}
