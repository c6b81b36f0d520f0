//! `cargo xtask examples`: builds the forkd crate's examples, and the Rust
//! snippets of the guide and the README, as a user would: in a crate of
//! its own outside the workspace that depends on `forkd` by path.
//!
//! The crate is written under `target/outside/`, with its own `[workspace]`
//! table so that cargo does not take it for a member. Each example becomes
//! one of its binaries (`src/bin/NAME.rs`, unchanged); each snippet becomes
//! a `no_run` doctest of its library, so that it is compiled and linked but
//! never run (most snippets start a daemon). A snippet that uses a function
//! or a type that an earlier snippet of the same file defines (the guide
//! builds `daemon()` up over several blocks) is compiled after those
//! snippets, their `use` lines merged. A block preceded by the line
//! `<!-- not compiled: WHY -->` is left out.
//!
//! The workspace's `Cargo.lock` is copied so that the versions are the
//! workspace's, the build is `--offline`, and it shares the workspace's
//! target directory, so that the dependencies compiled for the workspace
//! (with the same features and profile) are reused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// A fenced ```rust block of a Markdown file.
struct Snippet {
    /// `docs/guide/03-using.md:87`, for messages.
    place: String,
    /// A name usable in a file name: `03-using-87`.
    id: String,
    code: String,
}

pub fn examples(root: &Path) -> Result<(), String> {
    let started = Instant::now();
    let dir = root.join("target").join("outside");
    let write = |path: &Path, text: &str| -> Result<(), String> {
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .and_then(|()| std::fs::write(path, text))
            .map_err(|e| format!("write {}: {e}", path.display()))
    };
    // Start from nothing, so that no example or snippet removed since the
    // last run lingers.
    for stale in ["src", "snippets"] {
        let _ = std::fs::remove_dir_all(dir.join(stale));
    }
    write(&dir.join("Cargo.toml"), &manifest(root))?;
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).map_err(|e| format!("copy Cargo.lock: {e}"))?;

    let examples = root.join("daemon").join("examples");
    let mut names = Vec::new();
    for path in crate::files_in(&examples) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".rs")) else { continue };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        write(&dir.join("src").join("bin").join(name), &text)?;
        names.push(name.trim_end_matches(".rs").to_string());
    }
    if names.is_empty() {
        return Err(format!("no examples in {}", examples.display()));
    }

    let mut lib = String::from(
        "//! Written by `cargo xtask examples`: the guide's and the README's Rust\n\
         //! snippets, each a `no_run` doctest.\n\n",
    );
    let snippets = snippets(root)?;
    for s in &snippets {
        let file = format!("{}.md", s.id);
        write(&dir.join("snippets").join(&file), &format!("{}\n\n```no_run\n{}```\n", s.place, s.code))?;
        let module = s.id.replace('-', "_");
        lib.push_str(&format!("#[doc = include_str!(\"../snippets/{file}\")]\npub mod guide_{module} {{}}\n\n"));
    }
    write(&dir.join("src").join("lib.rs"), &lib)?;

    let target = root.join("target");
    let cargo = |args: &[&str]| -> Result<(), String> {
        eprintln!("$ cargo {} (in {})", args.join(" "), dir.display());
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map_err(|e| format!("run cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`cargo {}` in {} failed ({status})", args.join(" "), dir.display()))
        }
    };
    cargo(&["build", "--offline", "--bins"])?;
    cargo(&["test", "--offline", "--doc"])?;
    eprintln!(
        "built {} examples ({}) and {} snippets outside the workspace in {:.1}s",
        names.len(),
        names.join(", "),
        snippets.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The outside crate's manifest: `forkd` by path, and what the examples
/// and snippets use besides, with the workspace's features (so that the
/// compiled dependencies are the same) and its dev profile.
fn manifest(root: &Path) -> String {
    let forkd = root.join("daemon");
    format!(
        r#"# Written by `cargo xtask examples`.
[package]
name = "forkd-outside"
version = "0.0.0"
edition = "2021"
publish = false

# Not a member of forkd's workspace: a crate of its own.
[workspace]

[dependencies]
forkd = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
clap = {{ version = "4", default-features = false, features = ["std", "help", "usage", "error-context"] }}
log = "0.4"

[profile.dev]
debug = 1
"#,
        forkd.display()
    )
}

/// The Rust blocks of the guide's chapters and the README, each with the
/// earlier blocks of its file that it builds on.
fn snippets(root: &Path) -> Result<Vec<Snippet>, String> {
    let mut files: Vec<PathBuf> = crate::files_in(&root.join("docs").join("guide"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(root.join("README.md"));
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("file").to_lowercase();
        // The blocks of this file so far that define items and no `main`.
        let mut earlier: Vec<(BTreeSet<String>, String)> = Vec::new();
        for (line, code) in blocks(&text) {
            let defined = defined_names(&code);
            let mut parts: Vec<&str> = Vec::new();
            let mut wanted: BTreeSet<String> = mentioned(&code).difference(&defined).cloned().collect();
            // Walk back: a block used pulls in what it uses in turn.
            let mut take = vec![false; earlier.len()];
            for (i, (names, body)) in earlier.iter().enumerate().rev() {
                if names.iter().any(|n| wanted.contains(n)) {
                    take[i] = true;
                    wanted.extend(mentioned(body).difference(names).cloned());
                }
            }
            for (i, (_, body)) in earlier.iter().enumerate() {
                if take[i] {
                    parts.push(body);
                }
            }
            parts.push(&code);
            out.push(Snippet { place: format!("{rel}:{line}"), id: format!("{stem}-{line}"), code: merge(&parts) });
            if !code.contains("fn main") && !defined.is_empty() {
                earlier.push((defined, code));
            }
        }
    }
    Ok(out)
}

/// The ```rust blocks of a Markdown text: (line of the fence, code).
fn blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    let mut skip = false;
    let mut previous = "";
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match &mut open {
            Some((start, code)) if fence => {
                if !skip {
                    out.push((*start, std::mem::take(code)));
                }
                open = None;
            }
            Some((_, code)) => {
                code.push_str(line);
                code.push('\n');
            }
            None if fence => {
                let info = line.trim_start().trim_start_matches('`').trim();
                skip = info != "rust" || previous.trim_start().starts_with("<!-- not compiled");
                open = Some((i + 1, String::new()));
            }
            None => {}
        }
        previous = line;
    }
    out
}

/// Identifiers in `code`.
fn mentioned(code: &str) -> BTreeSet<String> {
    code.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// The functions and types `code` defines.
fn defined_names(code: &str) -> BTreeSet<String> {
    let words: Vec<&str> = code.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| matches!(w[0], "fn" | "struct" | "enum" | "const" | "type"))
        .map(|w| w[1].split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The blocks in order, their one-line `use` declarations merged (so that
/// two blocks may both import `forkd::Ctl`).
fn merge(parts: &[&str]) -> String {
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut other = Vec::new();
    let mut body = String::new();
    for part in parts {
        for line in part.lines() {
            let decl = line.strip_prefix("use ").and_then(|l| l.strip_suffix(';'));
            match decl.and_then(split_use) {
                Some((path, items)) => uses.entry(path).or_default().extend(items),
                None if decl.is_some() => other.push(line.to_string()),
                None => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
        body.push('\n');
    }
    let mut out = String::new();
    for (path, items) in uses {
        let items: Vec<String> = items.into_iter().collect();
        out.push_str(&format!("use {path}::{{{}}};\n", items.join(", ")));
    }
    other.dedup();
    for line in other {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(body.trim_start_matches('\n'));
    out
}

/// `a::b::{c, d}` or `a::b::c` as (`a::b`, [c, d]); `None` for anything
/// else (nested groups, renames), which is kept as it is.
fn split_use(decl: &str) -> Option<(String, Vec<String>)> {
    if decl.contains(" as ") {
        return None;
    }
    if let Some((path, group)) = decl.split_once("::{") {
        let group = group.strip_suffix('}')?;
        if group.contains('{') {
            return None;
        }
        let items = group.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        return Some((path.to_string(), items));
    }
    let (path, item) = decl.rsplit_once("::")?;
    Some((path.to_string(), vec![item.to_string()]))
}
