//! The guide's shell examples, run as a reader would run them.
//!
//! Every fenced block of `docs/guide/*.md` marked ```sh is run with bash
//! (`set -euo pipefail`) in a fresh directory of its own, with the fixture
//! binaries' directory first on `PATH`, and must exit 0 within the
//! deadline. A comment line `# prints: TEXT` in a block says that its
//! standard output holds TEXT. Blocks that cannot run here (systemd,
//! kubectl, an interactive terminal) are marked ```console or ```text, and
//! Rust code ```rust; a block with no info string is refused, so that no
//! example is skipped by accident.
//!
//! Each block cleans up what it starts: a pid file left in its directory
//! that names a live process fails the test (the process is killed). The
//! guide's examples use the seed's port, 10042; each block gets a free port
//! in its place, so that blocks and other tests run in parallel.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use forkd_tests::{alive, bin, wait_exit, TempDir};

/// The bound on one block; the slowest runs in well under a second.
const BLOCK_DEADLINE: Duration = Duration::from_secs(15);

/// The info strings a fenced block of the guide may have.
const KNOWN: [&str; 8] = ["sh", "console", "text", "rust", "toml", "ini", "yaml", "json"];

/// One fenced block: where it is, its info string, its text.
struct Block {
    file: String,
    line: usize,
    info: String,
    body: String,
}

fn guide_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guide")
}

/// The fenced blocks of one chapter, in order.
fn blocks(file: &str) -> Vec<Block> {
    let path = guide_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                let info = info.trim().to_string();
                open = Some(Block { file: file.to_string(), line: i + 1, info, body: String::new() })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(open.take()),
            (Some(b), _) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{file}: a fenced block is not closed");
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// What the block says its standard output holds.
fn expected(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.trim_start().strip_prefix("# prints: ")).map(str::to_string).collect()
}

/// Kills what a block left running, and says what it was.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") {
            let pid = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pid) = pid.filter(|&p| p > 0 && alive(p)) {
                // Safety: kill a process group the block started and left.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                unsafe { libc::kill(pid, libc::SIGKILL) };
                left.push(format!("{} (pid {pid})", path.display()));
            }
        }
    }
    left
}

/// Runs one ```sh block in a directory of its own; the failure, if any.
fn run(block: &Block) -> Result<(), String> {
    let dir = TempDir::new(&format!("guide-{}", block.line));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("create the block's directory");
    let script = format!("set -euo pipefail\n{}", block.body.replace("10042", &free_port().to_string()));
    let bins = bin("echo-daemon").parent().expect("the binaries' directory").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bins).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env_remove("FORKD_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("run bash: {e}"))?;
    let status = wait_exit(&mut child, BLOCK_DEADLINE);
    // What the block ran in the background is in its process group (a
    // daemon started with -d has left it, and has a pid file): whatever
    // the outcome, nothing of it outlives the block.
    // Safety: the block's own process group.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let left = leftovers(&work);
    let said = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    match status {
        None => return Err(format!("did not finish within {BLOCK_DEADLINE:?}\n{said}")),
        Some(s) if !s.success() => return Err(format!("exited with {s}\n{said}")),
        Some(_) => {}
    }
    if !left.is_empty() {
        return Err(format!("left running: {}\n{said}", left.join(", ")));
    }
    match expected(&block.body).into_iter().find(|e| !stdout.contains(e.as_str())) {
        Some(missing) => Err(format!("stdout lacks {missing:?}\n{said}")),
        None => Ok(()),
    }
}

/// Runs every ```sh block of `file`; there must be `at_least` of them.
fn check(file: &str, at_least: usize) {
    let blocks = blocks(file);
    for b in &blocks {
        assert!(KNOWN.contains(&b.info.as_str()), "{}:{}: fenced block with info string {:?}", b.file, b.line, b.info);
    }
    let runnable: Vec<&Block> = blocks.iter().filter(|b| b.info == "sh").collect();
    assert!(runnable.len() >= at_least, "{file}: {} sh blocks, expected at least {at_least}", runnable.len());
    let failures: Vec<String> =
        runnable.iter().filter_map(|b| run(b).err().map(|e| format!("{}:{}: {e}", b.file, b.line))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The chapters, with how many shell examples each runs at least.
const CHAPTERS: [(&str, usize); 10] = [
    ("README.md", 0),
    ("01-concepts.md", 0),
    ("02-installation.md", 1),
    ("03-using.md", 2),
    ("04-configuration.md", 1),
    ("05-workers.md", 4),
    ("06-rpc.md", 4),
    ("07-signals-and-events.md", 1),
    ("08-deployment.md", 2),
    ("09-testing.md", 1),
];

#[test]
fn every_chapter_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(guide_dir())
        .expect("docs/guide")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    files.sort();
    let mut listed: Vec<&str> = CHAPTERS.iter().map(|(f, _)| *f).collect();
    listed.sort();
    assert_eq!(files, listed, "docs/guide and this test's CHAPTERS differ");
    let index = std::fs::read_to_string(guide_dir().join("README.md")).expect("the index");
    for (file, _) in &CHAPTERS[1..] {
        assert!(index.contains(&format!("({file})")), "the index does not link {file}");
    }
}

#[test]
fn the_index_and_concepts() {
    check("README.md", CHAPTERS[0].1);
    check("01-concepts.md", CHAPTERS[1].1);
}

#[test]
fn installation() {
    check("02-installation.md", CHAPTERS[2].1);
}

#[test]
fn using_the_library() {
    check("03-using.md", CHAPTERS[3].1);
}

#[test]
fn configuration() {
    check("04-configuration.md", CHAPTERS[4].1);
}

#[test]
fn workers() {
    check("05-workers.md", CHAPTERS[5].1);
}

#[test]
fn rpc_protocol() {
    check("06-rpc.md", CHAPTERS[6].1);
}

#[test]
fn signals_and_events() {
    check("07-signals-and-events.md", CHAPTERS[7].1);
}

#[test]
fn deployment() {
    check("08-deployment.md", CHAPTERS[8].1);
}

#[test]
fn testing_your_daemon() {
    check("09-testing.md", CHAPTERS[9].1);
}

/// A heading's anchor, as GitHub makes it: lowercase, spaces to hyphens,
/// other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn links_between_pages_resolve() {
    let mut broken = Vec::new();
    for (file, _) in CHAPTERS {
        let text = std::fs::read_to_string(guide_dir().join(file)).expect("a chapter");
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let page = if path.is_empty() { guide_dir().join(file) } else { guide_dir().join(path) };
            let Ok(page_text) = std::fs::read_to_string(&page) else {
                broken.push(format!("{file}: {target}: no such page"));
                continue;
            };
            let headings =
                page_text.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#')));
            if !fragment.is_empty() && !headings.into_iter().any(|h| h == fragment) {
                broken.push(format!("{file}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
