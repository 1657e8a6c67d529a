//! Finding plugins: built-ins, `--plugin`, `--plugin-dir`, `--important-plugin`,
//! `--disable-plugin`, `--clear-plugins` and the default directory, with CLN's rules.

use std::path::{Path, PathBuf};

/// A plugin-related option, in the order given (`--clear-plugins` forgets what came before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginDirective {
    /// `--plugin=PATH`.
    Plugin(PathBuf),
    /// `--plugin-dir=DIR`.
    Dir(PathBuf),
    /// `--important-plugin=PATH`.
    Important(PathBuf),
    /// `--disable-plugin=NAME`.
    Disable(String),
    /// `--clear-plugins`.
    Clear,
}

/// The plugins shipped with fulgurd, started by default and important.
pub const BUILTIN_PLUGINS: &[&str] = &[
    "pay",
    "htlc-hold",
    "autopilot",
    "autoclean",
    "bookkeeper",
    "commando",
    "sql",
    "clnrest",
];

/// A plugin to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Canonical path.
    pub path: PathBuf,
    /// Whether its death stops the node.
    pub important: bool,
}

/// Where built-in plugins live: `$FULGUR_BUILTIN_PLUGIN_DIR`, else
/// `<fulgurd's dir>/../libexec/fulgur/plugins` when installed, else fulgurd's own
/// directory (cargo's `target/<profile>`).
pub fn builtin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FULGUR_BUILTIN_PLUGIN_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let installed = dir.join("../libexec/fulgur/plugins");
    if installed.is_dir() {
        Some(installed)
    } else {
        Some(dir.to_path_buf())
    }
}

/// Whether `path` may be a plugin: a regular file (links followed) with an execute bit,
/// or a wasm module (by its magic bytes; no execute bit needed), a name of letters,
/// digits, `-`, `_` and `.`, and not `README.md`.
pub fn eligible(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name == "README.md"
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return false;
    }
    std::fs::metadata(path).is_ok_and(|m| {
        m.is_file() && (m.permissions().mode() & 0o111 != 0 || super::wasm::is_wasm(path))
    })
}

/// Eligible files in `dir`, sorted by name; with `depth` 1 also those one level down.
pub fn scan_dir(dir: &Path, depth: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if eligible(&p) {
            out.push(canonical(&p));
        } else if depth > 0 && p.is_dir() {
            out.extend(scan_dir(&p, depth - 1).unwrap_or_default());
        }
    }
    Ok(out)
}

/// The canonical form of a path, or the path itself if it cannot be resolved.
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `--disable-plugin=NAME` (or `plugin stop NAME`) names `path`: a full path when
/// NAME contains `/`, else the file name.
pub fn names(name: &str, path: &Path) -> bool {
    if name.contains('/') {
        canonical(Path::new(name)) == path
    } else {
        path.file_name().is_some_and(|f| f == name)
    }
}

/// The outcome of discovery.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Plugins to start, in registration order.
    pub plugins: Vec<Candidate>,
    /// The disable list, applied again by `plugin startdir` and `rescan`.
    pub disabled: Vec<String>,
    /// Problems to report (a missing built-in).
    pub warnings: Vec<String>,
}

/// Applies the directives in order. `Err` for a `--plugin-dir` that does not exist or a
/// plugin path that is not an executable file.
pub fn discover(
    directives: &[PluginDirective],
    builtin: Option<&Path>,
    default_dir: &Path,
) -> Result<Discovered, String> {
    let mut d = Discovered::default();
    let push = |d: &mut Discovered, path: PathBuf, important: bool| {
        if let Some(c) = d.plugins.iter_mut().find(|c| c.path == path) {
            c.important |= important;
        } else {
            d.plugins.push(Candidate { path, important });
        }
    };
    if let Some(dir) = builtin {
        for name in BUILTIN_PLUGINS {
            let p = dir.join(name);
            if eligible(&p) {
                push(&mut d, canonical(&p), true);
            } else {
                d.warnings.push(format!(
                    "built-in plugin {name} not found in {}",
                    dir.display()
                ));
            }
        }
    }
    for dir in directives {
        match dir {
            PluginDirective::Plugin(p) | PluginDirective::Important(p) => {
                let important = matches!(dir, PluginDirective::Important(_));
                if !p.exists() {
                    return Err(format!("{}: plugin not found", p.display()));
                }
                if !eligible(p) {
                    return Err(format!("{} is not executable", p.display()));
                }
                push(&mut d, canonical(p), important);
            }
            PluginDirective::Dir(dir) => {
                let found = scan_dir(dir, 0)
                    .map_err(|e| format!("Failed to open plugin-dir {}: {e}", dir.display()))?;
                for p in found {
                    push(&mut d, p, false);
                }
            }
            PluginDirective::Disable(name) => {
                d.plugins.retain(|c| !names(name, &c.path));
                d.disabled.push(name.clone());
            }
            PluginDirective::Clear => d.plugins.clear(),
        }
    }
    for p in scan_dir(default_dir, 1).unwrap_or_default() {
        push(&mut d, p, false);
    }
    let disabled = d.disabled.clone();
    d.plugins
        .retain(|c| !disabled.iter().any(|n| names(n, &c.path)));
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        canonical(&p)
    }

    #[test]
    fn directives_in_order() {
        let root = std::env::temp_dir().join(format!("fulgur-disc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (b, pd, def) = (root.join("builtin"), root.join("pd"), root.join("default"));
        for d in [&b, &pd, &def, &def.join("sub")] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        let pay = exe(&b, "pay");
        let x = exe(&pd, "x.py");
        let y = exe(&pd, "y");
        std::fs::write(pd.join("notexec"), "").unwrap_or_else(|e| panic!("{e}"));
        let z = exe(&def.join("sub"), "z");
        let dirs = vec![
            PluginDirective::Dir(pd.clone()),
            PluginDirective::Disable("y".into()),
            PluginDirective::Important(x.clone()),
        ];
        let got = discover(&dirs, Some(&b), &def).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<_> = got
            .plugins
            .iter()
            .map(|c| (c.path.clone(), c.important))
            .collect();
        assert_eq!(paths, vec![(pay, true), (x.clone(), true), (z, false)]);
        assert_eq!(
            got.warnings.len(),
            BUILTIN_PLUGINS.len() - 1,
            "every built-in but pay is missing"
        );
        assert!(!paths.iter().any(|(p, _)| *p == y));

        let cleared = discover(
            &[PluginDirective::Clear, PluginDirective::Plugin(x.clone())],
            Some(&b),
            &root.join("none"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cleared.plugins,
            vec![Candidate {
                path: x,
                important: false
            }]
        );
        assert!(discover(&[PluginDirective::Dir(root.join("missing"))], None, &def).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
