//! Starting a stdio upstream from its pinned artifact.
//!
//! The artifact's digest is checked before every spawn: a local program's file; an npm package's
//! tarball (fetched once with `npm pack` into the cache, then re-hashed from the cache each time);
//! a PyPI file (fetched once with `pip download`, re-hashed each time, installed into a private
//! virtual environment). A mismatch stops the launch and names both digests. The process gets no
//! shell and a cleared environment: only the variables the config lists (each from a secret
//! reference), plus `PATH` and `HOME` for the package launchers.

use std::path::{Path, PathBuf};

use registry::{Artifact, CommandSource, Integrity};

/// Why a launch was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    #[error(
        "`{what}` does not match its pinned digest: pinned {pinned}, found {found}; not started"
    )]
    Mismatch {
        what: String,
        pinned: String,
        found: String,
    },
    #[error("cannot read `{0}`: {1}")]
    Read(String, String),
    #[error("fetching `{0}` failed: {1}")]
    Fetch(String, String),
    #[error("`{0}` is not pinned (a digest is required in the production profile)")]
    Unpinned(String),
    #[error(
        "`{package}` has no executable `{wanted}`; it declares {}; fix: set `bin:` under the server's `command` to one of them",
        declared_list(.declared)
    )]
    Bin {
        package: String,
        wanted: String,
        declared: Vec<String>,
    },
}

fn declared_list(names: &[String]) -> String {
    if names.is_empty() {
        return "no executables".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check `bytes` against `integrity`.
fn verify(what: &str, integrity: &Integrity, bytes: &[u8]) -> Result<(), LaunchError> {
    let found = integrity.of(bytes);
    if found == integrity.digest {
        return Ok(());
    }
    Err(LaunchError::Mismatch {
        what: what.to_string(),
        pinned: integrity.text.clone(),
        found: integrity.render(&found),
    })
}

/// Fetching, verifying and installing a package is one at a time per package in a process: two
/// servers on the same package would otherwise race to fill the same cache entry and virtual
/// environment. Different packages prepare side by side.
static PREPARING: std::sync::Mutex<Vec<(String, std::sync::Arc<tokio::sync::Mutex<()>>)>> =
    std::sync::Mutex::new(Vec::new());

/// The lock for preparing the package `spec`.
fn preparing(spec: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    let mut all = match PREPARING.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some((_, lock)) = all.iter().find(|(s, _)| s == spec) {
        return lock.clone();
    }
    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    all.push((spec.to_owned(), lock.clone()));
    lock
}

/// A command for the verified artifact, before arguments and environment.
pub(crate) async fn command(
    cmd: &CommandSource,
    cache: &Path,
    profile: registry::Profile,
) -> Result<tokio::process::Command, LaunchError> {
    match &cmd.artifact {
        Artifact::Unpinned { program } => match profile {
            registry::Profile::Development => Ok(bare(program)),
            registry::Profile::Production => Err(LaunchError::Unpinned(program.clone())),
        },
        Artifact::Local { program, integrity } => {
            let bytes = tokio::fs::read(program)
                .await
                .map_err(|e| LaunchError::Read(program.clone(), e.kind().to_string()))?;
            verify(program, integrity, &bytes)?;
            Ok(bare(program))
        }
        Artifact::Npm {
            name,
            version,
            integrity,
            bin,
        } => {
            let tarball = {
                let lock = preparing(&format!("npm:{name}@{version}"));
                let _one = lock.lock().await;
                npm_tarball(name, version, integrity, cache).await?
            };
            let wanted = bin.clone().unwrap_or_else(|| default_bin(name));
            // Checked here so a wrong name is a clear error, not `sh: 1: <bin>: not found`.
            let declared = {
                let (name, tarball) = (name.clone(), tarball.clone());
                tokio::task::spawn_blocking(move || npm_bins(&name, &tarball))
                    .await
                    .ok()
                    .flatten()
            };
            if let Some(declared) = declared
                && !declared.contains(&wanted)
            {
                return Err(LaunchError::Bin {
                    package: format!("npm:{name}@{version}"),
                    wanted,
                    declared,
                });
            }
            let mut c = launcher("npm", cache);
            c.arg("exec")
                .arg("--yes")
                .arg("--ignore-scripts")
                .arg(format!("--package={}", tarball.display()))
                .arg("--");
            c.arg(wanted);
            Ok(c)
        }
        Artifact::Pypi {
            name,
            version,
            integrity,
            bin,
        } => {
            let venv = {
                let lock = preparing(&format!("pypi:{name}=={version}"));
                let _one = lock.lock().await;
                pypi_env(name, version, integrity, cache).await?
            };
            let script = bin.clone().unwrap_or_else(|| name.clone());
            // The package's own console scripts when its entry points can be read (not the
            // environment's python or pip, nor a dependency's scripts); else whatever is there.
            let declared = package_scripts(name, &venv);
            let runs = match &declared {
                Some(names) => names.contains(&script),
                None => venv.join("bin").join(&script).is_file(),
            };
            if !runs {
                return Err(LaunchError::Bin {
                    package: format!("pypi:{name}=={version}"),
                    wanted: script,
                    declared: declared.unwrap_or_else(|| venv_scripts(&venv)),
                });
            }
            let mut c = tokio::process::Command::new(venv.join("bin").join(script));
            c.env_clear();
            Ok(c)
        }
    }
}

fn bare(program: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear();
    c
}

/// A package launcher with the cleared environment plus `PATH` and a private `HOME`.
fn launcher(program: &str, cache: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    // A launch given up on (its deadline passed) stops its fetch or install too, so the next
    // attempt never runs beside it in the same cache entry.
    c.kill_on_drop(true);
    c.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    c.env("HOME", cache.join("home"));
    c
}

/// The executable an npm package is run by when none is named: its name without the scope.
fn default_bin(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

/// The executables an npm tarball's `package.json` declares, or `None` when it cannot be read
/// (the launch then goes ahead and npm reports what it finds).
fn npm_bins(name: &str, tarball: &Path) -> Option<Vec<String>> {
    let file = std::fs::File::open(tarball).ok()?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entry = archive.entries().ok()?.filter_map(Result::ok).find(|e| {
        e.path()
            .is_ok_and(|p| p.components().count() == 2 && p.ends_with("package.json"))
    })?;
    // A package.json is small; one that is not is not read.
    let manifest: serde_json::Value =
        serde_json::from_reader(std::io::Read::take(entry, 4 << 20)).ok()?;
    declared_bins(name, &manifest)
}

/// The names in a package.json's `bin`: a string names the package's own (unscoped) name.
/// `None` without a `bin` (a package may declare `directories.bin` instead): not checked here.
fn declared_bins(name: &str, manifest: &serde_json::Value) -> Option<Vec<String>> {
    match manifest.get("bin") {
        Some(serde_json::Value::String(_)) => Some(vec![default_bin(name)]),
        Some(serde_json::Value::Object(m)) => Some(m.keys().cloned().collect()),
        _ => None,
    }
}

/// The console scripts the package itself declares (its `entry_points.txt` in the virtual
/// environment), or `None` when they cannot be read.
fn package_scripts(name: &str, venv: &Path) -> Option<Vec<String>> {
    let dist = name.to_ascii_lowercase().replace(['-', '.'], "_");
    std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|py| py.path().join("site-packages"))
        .flat_map(|site| std::fs::read_dir(site).into_iter().flatten())
        .filter_map(Result::ok)
        .find(|e| {
            let n = e.file_name().to_string_lossy().to_ascii_lowercase();
            n.starts_with(&format!("{dist}-")) && n.ends_with(".dist-info")
        })
        .and_then(|e| std::fs::read_to_string(e.path().join("entry_points.txt")).ok())
        .map(|text| console_scripts(&text))
}

/// Every script in the environment but its own tools, for a message when the package's own
/// list cannot be read.
fn venv_scripts(venv: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(venv.join("bin"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            !(n.starts_with("python")
                || n.starts_with("pip")
                || n.starts_with("activate")
                || n.starts_with("Activate"))
        })
        .collect();
    names.sort();
    names
}

/// The names in the `[console_scripts]` section of an `entry_points.txt`.
fn console_scripts(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[console_scripts]";
        } else if inside && let Some((name, _)) = line.split_once('=') {
            names.push(name.trim().to_owned());
        }
    }
    names
}

/// The cached tarball of an npm package, fetched if absent, verified every time.
async fn npm_tarball(
    name: &str,
    version: &str,
    integrity: &Integrity,
    cache: &Path,
) -> Result<PathBuf, LaunchError> {
    let spec = format!("{name}@{version}");
    let dir = cache.join("npm");
    let file = dir.join(format!(
        "{}-{version}.tgz",
        name.trim_start_matches('@').replace('/', "-")
    ));
    if !file.exists() {
        let staging = tempdir_in(&dir).map_err(|e| LaunchError::Fetch(spec.clone(), e))?;
        let out = launcher("npm", cache)
            .arg("pack")
            .arg(&spec)
            .arg("--ignore-scripts")
            .arg("--pack-destination")
            .arg(&staging)
            .output()
            .await
            .map_err(|e| LaunchError::Fetch(spec.clone(), format!("cannot run npm: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(LaunchError::Fetch(spec, last_line(&out.stderr)));
        }
        let packed = single_file(&staging).map_err(|e| LaunchError::Fetch(spec.clone(), e))?;
        let bytes = std::fs::read(&packed)
            .map_err(|e| LaunchError::Read(packed.display().to_string(), e.kind().to_string()))?;
        // Verified before it enters the cache, and again below before every launch.
        let checked = verify(&format!("npm:{spec}"), integrity, &bytes);
        if checked.is_ok() {
            std::fs::rename(&packed, &file)
                .map_err(|e| LaunchError::Fetch(spec.clone(), e.to_string()))?;
        }
        let _ = std::fs::remove_dir_all(&staging);
        checked?;
    }
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| LaunchError::Read(file.display().to_string(), e.kind().to_string()))?;
    verify(&format!("npm:{spec}"), integrity, &bytes)?;
    Ok(file)
}

/// A private virtual environment with the verified PyPI file installed.
async fn pypi_env(
    name: &str,
    version: &str,
    integrity: &Integrity,
    cache: &Path,
) -> Result<PathBuf, LaunchError> {
    let spec = format!("{name}=={version}");
    let dir = cache.join("pypi");
    let key = hex::encode(&integrity.digest);
    let files = dir.join(format!("{key}.files"));
    if !files.exists() {
        let staging = tempdir_in(&dir).map_err(|e| LaunchError::Fetch(spec.clone(), e))?;
        let out = launcher("python3", cache)
            .args(["-m", "pip", "download", "--no-deps", "--dest"])
            .arg(&staging)
            .arg(&spec)
            .output()
            .await
            .map_err(|e| LaunchError::Fetch(spec.clone(), format!("cannot run pip: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(LaunchError::Fetch(spec, last_line(&out.stderr)));
        }
        let got = single_file(&staging).map_err(|e| LaunchError::Fetch(spec.clone(), e))?;
        let bytes = std::fs::read(&got)
            .map_err(|e| LaunchError::Read(got.display().to_string(), e.kind().to_string()))?;
        let checked = verify(&format!("pypi:{spec}"), integrity, &bytes);
        if checked.is_ok() {
            std::fs::rename(&staging, &files)
                .map_err(|e| LaunchError::Fetch(spec.clone(), e.to_string()))?;
        } else {
            let _ = std::fs::remove_dir_all(&staging);
        }
        checked?;
    }
    let file = single_file(&files).map_err(|e| LaunchError::Fetch(spec.clone(), e))?;
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| LaunchError::Read(file.display().to_string(), e.kind().to_string()))?;
    verify(&format!("pypi:{spec}"), integrity, &bytes)?;
    let venv = dir.join(format!("{key}.venv"));
    if !venv.join("installed").exists() {
        let made = launcher("python3", cache)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .await
            .map_err(|e| LaunchError::Fetch(spec.clone(), e.to_string()))?;
        let installed = launcher(&venv.join("bin").join("pip").display().to_string(), cache)
            .args(["install", "--quiet", "--no-input"])
            .arg(&file)
            .status()
            .await
            .map_err(|e| LaunchError::Fetch(spec.clone(), e.to_string()))?;
        if !(made.success() && installed.success()) {
            return Err(LaunchError::Fetch(
                spec,
                "installing into the virtual environment failed".into(),
            ));
        }
        std::fs::write(venv.join("installed"), &integrity.text)
            .map_err(|e| LaunchError::Fetch(spec.clone(), e.to_string()))?;
    }
    Ok(venv)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let staging = dir.join(format!(".fetch-{}", hex::encode(rand::random::<[u8; 8]>())));
    std::fs::create_dir(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    Ok(staging)
}

fn single_file(dir: &Path) -> Result<PathBuf, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    match (files.pop(), files.is_empty()) {
        (Some(f), true) => Ok(f),
        _ => Err("expected exactly one downloaded file".into()),
    }
}

fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_string();
    crate::redact::shorten(&mut line, 300);
    line
}

#[cfg(test)]
mod tests;
