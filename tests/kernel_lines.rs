//! Every `Kernel:` line in the workspace names the kernel version it models
//! (`docs/kernel-map.md`, "Kernel version"): `main`, `7.0`/`7.1`, a fix
//! commit or CVE, `v6` (the unmerged proposal) or an earlier `vN` of it,
//! `never`, `6.19`, `history`, `mainline`, or `none (model only)`.
//!
//! Kernel: none (model only): a check of the repository's own docs.

use std::fs;
use std::path::{Path, PathBuf};

/// The directories holding the workspace's Rust sources.
const ROOTS: [&str; 7] = [
    "crates",
    "src",
    "loom-tests",
    "benches",
    "examples",
    "tests",
    "fuzz",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == "corpus")
            {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text of a doc comment line (`///` or `//!`), if it is one.
fn doc_text(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t.strip_prefix("///").or_else(|| t.strip_prefix("//!"))?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Every paragraph with a kernel tag: (line number, text from the tag to the end
/// of its doc paragraph).
fn kernel_paragraphs(src: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        match doc_text(lines[i]).and_then(|t| t.find("Kernel:").map(|k| &t[k..])) {
            Some(start) => {
                let mut text = start.to_owned();
                let mut j = i + 1;
                while let Some(t) = lines.get(j).and_then(|l| doc_text(l)) {
                    if t.trim().is_empty() {
                        break;
                    }
                    text.push(' ');
                    text.push_str(t);
                    j += 1;
                }
                out.push((i + 1, text));
                i = j;
            }
            None => i += 1,
        }
    }
    out
}

/// `true` if `word` occurs in `text` as a whole word.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        edge(before) && edge(after)
    })
}

/// `true` if `text` holds a 12-digit (or longer) hex commit id.
fn has_commit(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
        w.len() >= 12
            && w.chars().all(|c| c.is_ascii_hexdigit())
            && w.chars().any(|c| c.is_ascii_digit())
    })
}

fn names_a_version(text: &str) -> bool {
    const WORDS: [&str; 16] = [
        "main", "mainline", "7.0", "7.1", "v6", "v1", "v2", "v3", "v4", "v5", "never", "6.19",
        "history", "v6.7", "6.12", "6.1",
    ];
    WORDS.iter().any(|w| has_word(text, w))
        || text.contains("Kernel: none")
        || text.contains("model only")
        || text.contains("CVE-20")
        || has_commit(text)
}

#[test]
fn every_kernel_line_names_its_version() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let mut checked = 0;
    let mut missing = Vec::new();
    for f in &files {
        let Ok(src) = fs::read_to_string(f) else {
            continue;
        };
        for (line, text) in kernel_paragraphs(&src) {
            checked += 1;
            if !names_a_version(&text) {
                let rel = f.strip_prefix(root).unwrap_or(f);
                missing.push(format!("{}:{line}: {text}", rel.display()));
            }
        }
    }
    assert!(checked > 500, "found only {checked} Kernel: lines");
    assert!(
        missing.is_empty(),
        "{} Kernel: lines name no kernel version (main, 7.0, a fix, v6, never, model only):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn the_version_check_can_fail() {
    assert!(!names_a_version("Kernel: `foo()`, `mm/foo.c`."));
    assert!(!names_a_version("Kernel: `remains` in a `domain`."));
    assert!(names_a_version("Kernel: `foo()`, `mm/foo.c` (main)."));
    assert!(names_a_version("Kernel: `foo()` (v6)."));
    assert!(names_a_version("Kernel: fixed by 399289849560."));
    assert!(names_a_version("Kernel: none (model only)."));
    let src = "/// Kernel: `a()`.\n/// more (7.0).\n///\n/// Kernel: `b()`.\nfn x() {}\n";
    let p = kernel_paragraphs(src);
    assert_eq!(p.len(), 2);
    assert!(names_a_version(&p[0].1) && !names_a_version(&p[1].1));
}
