//! The zone editor's changes to the config file, pure except for [`write_with_backup`]:
//! one camera's `[[cameras.<id>.zones]]` are replaced in the TOML text with `toml_edit`, so
//! everything else in the file (comments, order, other cameras) stays as the ops person
//! wrote it. A zone keeps the comments above it when its id is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::config::raw::{RawConfig, RawZone};

/// A camera's zones as written in the config text.
pub fn zones_of(text: &str, camera: &str) -> Result<Option<Vec<RawZone>>, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| error.to_string())?;
    Ok(raw.cameras.get(camera).map(|camera| camera.zones.clone()))
}

/// The config text with `camera`'s zones replaced by `zones`; `None` when the file has no
/// such camera.
pub fn replace_zones(text: &str, camera: &str, zones: &[RawZone]) -> Result<Option<String>, String> {
    let mut document: DocumentMut = text.parse().map_err(|error: toml_edit::TomlError| error.to_string())?;
    let Some(camera_table) = document
        .get_mut("cameras")
        .and_then(Item::as_table_like_mut)
        .and_then(|cameras| cameras.get_mut(camera))
        .and_then(Item::as_table_mut)
    else {
        return Ok(None);
    };
    let old: Vec<Table> = match camera_table.get("zones") {
        Some(Item::ArrayOfTables(tables)) => tables.iter().cloned().collect(),
        _ => Vec::new(),
    };
    // New zone sections go where the old ones were, or right after the camera's table.
    let first_position = old.first().and_then(Table::position).or(camera_table.position());
    let mut tables = ArrayOfTables::new();
    for zone in zones {
        let mut table = zone_table(zone)?;
        if let Some(previous) = old.iter().find(|t| t.get("id").and_then(Item::as_str) == zone.id.as_deref()) {
            *table.decor_mut() = previous.decor().clone();
        }
        if let Some(position) = first_position {
            table.set_position(position);
        }
        tables.push(table);
    }
    if zones.is_empty() {
        camera_table.remove("zones");
    } else {
        camera_table.insert("zones", Item::ArrayOfTables(tables));
    }
    Ok(Some(document.to_string()))
}

/// One zone as a TOML table: `id`, `kind`, `polygon` first, then the parameters set.
fn zone_table(zone: &RawZone) -> Result<Table, String> {
    let json = serde_json::to_value(zone).map_err(|error| error.to_string())?;
    let serde_json::Value::Object(mut fields) = json else { return Err("a zone must be an object".into()) };
    let mut table = Table::new();
    for key in ["id", "kind", "polygon"] {
        if let Some(value) = fields.remove(key) {
            table.insert(key, Item::Value(toml_value(&value)?));
        }
    }
    for (key, value) in fields {
        table.insert(&key, Item::Value(toml_value(&value)?));
    }
    Ok(table)
}

fn toml_value(value: &serde_json::Value) -> Result<Value, String> {
    Ok(match value {
        serde_json::Value::Bool(flag) => Value::from(*flag),
        serde_json::Value::String(text) => Value::from(text.as_str()),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => Value::from(integer),
            // Every float in a zone is an f32: print it as the f32 it was, not its f64 widening.
            None => Value::from(shortest(number.as_f64().unwrap_or(0.0))),
        },
        serde_json::Value::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(toml_value(item)?);
            }
            Value::Array(array)
        }
        serde_json::Value::Null | serde_json::Value::Object(_) => {
            return Err(format!("{value} cannot be a zone value"));
        }
    })
}

fn shortest(value: f64) -> f64 {
    (value as f32).to_string().parse().unwrap_or(value)
}

/// Writes `text` to `path` atomically (a temporary file in the same directory, fsynced, then
/// renamed over it), keeping the previous version as `<path>.prev`. Returns the backup's path.
pub fn write_with_backup(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    let directory = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("the config path has no file name")?.to_string_lossy().to_string();
    let backup = directory.join(format!("{name}.prev"));
    let temporary = directory.join(format!(".{name}.tmp"));
    std::fs::copy(path, &backup).with_context(|| format!("keep the previous config as {}", backup.display()))?;
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("create {}", temporary.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", temporary.display()))?;
    file.sync_all().with_context(|| format!("fsync {}", temporary.display()))?;
    // Keep the original's permissions (the file may hold nothing secret, but ops chose them).
    if let Ok(metadata) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temporary, metadata.permissions());
    }
    std::fs::rename(&temporary, path).with_context(|| format!("replace {}", path.display()))?;
    if let Ok(directory) = std::fs::File::open(directory) {
        let _ = directory.sync_all();
    }
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# Gate 3 of the compound.
[cameras.gate-3]
url = "rtsp://10.0.0.3/stream1"   # substream

# The pavement by the gate: bikes pile up here.
[[cameras.gate-3.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]
dwell_ms = 300000

[[cameras.gate-3.zones]]
id = "old"
kind = "mask"
polygon = [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2]]

[cameras.yard]
url = "rtsp://10.0.0.4/stream1"
"#;

    fn zone(id: &str, kind: &str, polygon: &[[f32; 2]]) -> RawZone {
        RawZone { id: Some(id.into()), kind: Some(kind.into()), polygon: Some(polygon.to_vec()), ..RawZone::default() }
    }

    #[test]
    fn replaces_one_cameras_zones_and_keeps_the_rest_of_the_file() {
        let mut pavement = zone("pavement", "no_parking", &[[0.1, 0.1], [0.8, 0.1], [0.8, 0.7]]);
        pavement.dwell_ms = Some(60_000);
        pavement.min_score = Some(0.35);
        let drawn = zone("drawn", "fall_watch", &[[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.4]]);
        let edited = replace_zones(TEXT, "gate-3", &[pavement.clone(), drawn.clone()]).unwrap().unwrap();
        // Everything outside the zones is untouched, comments included.
        assert!(edited.starts_with(
            "# Gate 3 of the compound.\n[cameras.gate-3]\nurl = \"rtsp://10.0.0.3/stream1\"   # substream\n"
        ));
        assert!(edited
            .contains("# The pavement by the gate: bikes pile up here.\n[[cameras.gate-3.zones]]\nid = \"pavement\""));
        assert!(edited.contains("min_score = 0.35\n"), "f32 written as written, not widened:\n{edited}");
        assert!(!edited.contains("\"old\""));
        assert!(edited.contains("[cameras.yard]"));
        // And it reads back as exactly the zones given.
        assert_eq!(zones_of(&edited, "gate-3").unwrap().unwrap(), vec![pavement, drawn]);
        assert_eq!(zones_of(&edited, "yard").unwrap().unwrap(), Vec::new());
    }

    #[test]
    fn a_camera_without_zones_gets_them_and_can_lose_them_again() {
        let drawn = zone("drawn", "no_parking", &[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]);
        let added = replace_zones(TEXT, "yard", std::slice::from_ref(&drawn)).unwrap().unwrap();
        assert_eq!(zones_of(&added, "yard").unwrap().unwrap(), vec![drawn]);
        assert_eq!(zones_of(&added, "gate-3").unwrap().unwrap().len(), 2);
        let removed = replace_zones(&added, "yard", &[]).unwrap().unwrap();
        assert_eq!(zones_of(&removed, "yard").unwrap().unwrap(), Vec::new());
    }

    #[test]
    fn an_unknown_camera_changes_nothing() {
        assert_eq!(replace_zones(TEXT, "nowhere", &[]).unwrap(), None);
        assert_eq!(zones_of(TEXT, "nowhere").unwrap(), None);
    }

    #[test]
    fn writes_atomically_and_keeps_the_previous_version() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("gateway.toml");
        std::fs::write(&path, "old = 1\n").unwrap();
        let backup = write_with_backup(&path, "new = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new = 2\n");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "old = 1\n");
        assert_eq!(backup, directory.path().join("gateway.toml.prev"));
        let leftovers: Vec<_> = std::fs::read_dir(directory.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "no temporary file left: {leftovers:?}");
    }
}
