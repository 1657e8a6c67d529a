//! The `config.setconfig` file that a non-transient `setconfig` writes. (The options'
//! `listconfigs` entries are CLN JSON: the rpc crate renders them.)

use std::path::Path;

use crate::config::Source;

/// Persists a non-transient `setconfig` to `config.setconfig`, replacing earlier lines for
/// the same option; returns the source (file and line) of the new value.
pub fn persist_setconfig(
    file: &Path,
    name: &str,
    texts: &[Option<String>],
) -> std::io::Result<Source> {
    let old = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            key != name
        })
        .map(String::from)
        .collect();
    if lines.is_empty() {
        lines.push(
            "# Written by fulgurd's setconfig: values here override the config files.".into(),
        );
    }
    for t in texts {
        lines.push(match t {
            Some(v) => format!("{name}={v}"),
            None => name.to_string(),
        });
    }
    let line = lines.len();
    let tmp = file.with_extension("setconfig.tmp");
    std::fs::write(&tmp, lines.join("\n") + "\n")?;
    std::fs::rename(&tmp, file)?;
    Ok(Source::File(file.to_path_buf(), line))
}
