//! The repository explains itself (`docs/design.md#the-repository-explains-itself`).
//!
//! Every file tracked by git is checked for references that point outside the repository:
//! notes kept elsewhere, section signs, issue numbers of another tracker, rule codes of outside
//! checklists. And every `docs/<name>.md` mentioned anywhere must exist, with every
//! `#anchor` after it a heading of that file, and every "checklist #N" must be an item of the
//! numbered conformance checklist in `docs/semantics.md`. References inside the repository
//! look like `docs/semantics.md#stale-events`, "checklist #54" (an item of
//! `docs/semantics.md`), or a Go function name; Go's own bugs are cited as `golang/go#59545`.
//!
//! The sample strings in the checker's own tests are assembled with `concat!` so that this
//! file passes its own check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root: the parent of this crate's folder.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the conformance crate lives one level below the workspace root")
        .to_path_buf()
}

/// Folders whose contents are generated or fuzzer data, never prose.
fn is_skipped_dir(name: &str) -> bool {
    matches!(
        name,
        "target" | ".git" | "corpus" | "artifacts" | "coverage" | "__pycache__"
    )
}

/// Files tracked by git (relative paths), or, without git, every file under `root` outside
/// the skipped folders.
fn repo_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    let mut files = match listed {
        Some(out) => out
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect(),
        None => {
            let mut found = Vec::new();
            walk(root, Path::new(""), &mut found);
            found
        }
    };
    files.retain(|p| {
        !p.components()
            .any(|c| is_skipped_dir(&c.as_os_str().to_string_lossy()))
    });
    files.sort();
    files
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = rel.join(&name);
        match entry.file_type() {
            Ok(t) if t.is_dir() && !is_skipped_dir(&name) => walk(root, &path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// The part of a line the rule-code check reads: the comment of a Rust line, the whole line
/// elsewhere (Markdown, TOML, scripts are prose or comments nearly line for line).
fn checked_text<'a>(path: &Path, line: &'a str) -> &'a str {
    if path.extension().is_some_and(|e| e == "rs") {
        line.find("//").map_or("", |i| &line[i..])
    } else {
        line
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `text` names an outside checklist or rule code: a capital `C`, `D` or `I` followed
/// by one or two digits, as a whole word (not `I2C`, `0xD1` or `CD4`).
fn has_rule_code(text: &str) -> bool {
    let b = text.as_bytes();
    (0..b.len()).any(|i| {
        if !matches!(b[i], b'C' | b'D' | b'I') || (i > 0 && is_word_byte(b[i - 1])) {
            return false;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        (1..=2).contains(&digits) && b.get(i + 1 + digits).is_none_or(|&c| !is_word_byte(c))
    })
}

/// Whether `text` cites a numbered issue or rule of a tracker or notes kept elsewhere:
/// the word `issue`, `issues` or `rule`, a space, maybe `#`, then a digit (any case).
fn has_numbered_reference(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let b = lower.as_bytes();
    ["issue", "rule"].iter().any(|word| {
        lower.match_indices(word).any(|(i, _)| {
            if i > 0 && is_word_byte(b[i - 1]) {
                return false;
            }
            let mut j = i + word.len();
            if *word == "issue" && b.get(j) == Some(&b's') {
                j += 1;
            }
            if b.get(j) != Some(&b' ') {
                return false;
            }
            j += 1;
            if b.get(j) == Some(&b'#') {
                j += 1;
            }
            b.get(j).is_some_and(u8::is_ascii_digit)
        })
    })
}

/// Every reason `line` of `path` points outside the repository.
fn outside_references(path: &Path, line: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let patterns: [(&str, &str); 5] = [
        (
            concat!("..", "/shared"),
            "a path to notes outside the repository",
        ),
        (
            concat!("DESIGN", ".md"),
            "the design notes outside the repository",
        ),
        (
            concat!("go-netpoll", ".md"),
            "the spec notes outside the repository",
        ),
        (
            concat!("house", "-style"),
            "the style notes outside the repository",
        ),
        ("\u{a7}", "a section sign (cite a docs/ heading instead)"),
    ];
    for (needle, why) in patterns {
        if line.contains(needle) {
            found.push(why);
        }
    }
    if has_numbered_reference(line) {
        found.push("an issue or rule number (cite docs/ or a Go function instead)");
    }
    if has_rule_code(checked_text(path, line)) {
        found.push("a rule code of an outside checklist (cite docs/semantics.md instead)");
    }
    found
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
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

/// The anchors of a Markdown file's headings (outside code blocks), with GitHub's `-1`,
/// `-2` suffixes for repeated headings.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let hashes = trimmed.bytes().take_while(|&b| b == b'#').count();
        if !(1..=6).contains(&hashes) || trimmed.as_bytes().get(hashes) != Some(&b' ') {
            continue;
        }
        let base = slug(&trimmed[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// A reference to a document of `docs/`: the file name and the anchor, if any.
#[derive(Debug, PartialEq, Eq)]
struct DocRef {
    file: String,
    anchor: Option<String>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// Reads `name.md` and an optional `#anchor` at the start of `rest`.
fn doc_ref_at(rest: &str) -> Option<DocRef> {
    let end = rest.find(".md")?;
    let name = &rest[..end];
    if name.is_empty() || !name.chars().all(is_name_char) {
        return None;
    }
    let after = &rest[end + 3..];
    if after.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return None;
    }
    let anchor = after.strip_prefix('#').map(|a| {
        a.chars()
            .take_while(|&c| c.is_alphanumeric() || c == '-' || c == '_')
            .collect::<String>()
    });
    Some(DocRef {
        file: format!("{name}.md"),
        anchor: anchor.filter(|a| !a.is_empty()),
    })
}

/// The `docs/<name>.md[#anchor]` references in a line; inside `docs/` also the relative
/// Markdown links `](name.md#anchor)` and `](#anchor)` (`self_name` is the file's own name).
fn doc_refs(line: &str, self_name: Option<&str>) -> Vec<DocRef> {
    let mut refs = Vec::new();
    for (i, _) in line.match_indices("docs/") {
        if line[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            continue;
        }
        if let Some(r) = doc_ref_at(&line[i + 5..]) {
            refs.push(r);
        }
    }
    if let Some(own) = self_name {
        for (i, _) in line.match_indices("](") {
            let target = &line[i + 2..];
            if let Some(anchor) = target.strip_prefix('#') {
                let a: String = anchor
                    .chars()
                    .take_while(|&c| c.is_alphanumeric() || c == '-' || c == '_')
                    .collect();
                refs.push(DocRef {
                    file: own.to_string(),
                    anchor: Some(a),
                });
            } else if !target.contains("://") && !target.starts_with("docs/") {
                if let Some(r) = doc_ref_at(target) {
                    refs.push(r);
                }
            }
        }
    }
    refs
}

/// The item numbers of the conformance checklist in `docs/semantics.md`: the numbered list
/// items (`12. ...`) after its `## Conformance checklist` heading.
fn checklist_items(semantics: &str) -> BTreeSet<u32> {
    semantics
        .lines()
        .skip_while(|l| l.trim() != "## Conformance checklist")
        .filter_map(|l| {
            let (number, rest) = l.split_once(". ")?;
            (!rest.is_empty()).then_some(number)?.parse().ok()
        })
        .collect()
}

/// The numbers cited as `checklist #N` or `checklist item N` (any case) in a line.
fn checklist_citations(line: &str) -> Vec<u32> {
    let lower = line.to_ascii_lowercase();
    let mut found = Vec::new();
    for (i, _) in lower.match_indices("checklist ") {
        let rest = &lower[i + "checklist ".len()..];
        let rest = rest
            .strip_prefix('#')
            .or_else(|| rest.strip_prefix("item "))
            .unwrap_or("");
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            found.push(n);
        }
    }
    found
}

/// Runs the checks over the repository and returns one `file:line: reason` per problem.
fn problems(root: &Path) -> Vec<String> {
    let files = repo_files(root);
    let mut out = Vec::new();
    let items = std::fs::read_to_string(root.join("docs/semantics.md"))
        .map(|md| checklist_items(&md))
        .unwrap_or_default();
    let last = items.last().copied().unwrap_or(0);
    if items.is_empty() || items.len() != last as usize {
        out.push(format!(
            "docs/semantics.md: the conformance checklist must number its items 1 to N without \
             gaps; found {} items up to {last}",
            items.len()
        ));
    }
    let mut doc_anchors: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for rel in &files {
        let Ok(bytes) = std::fs::read(root.join(rel)) else {
            continue;
        };
        // Binary files (and anything that is not UTF-8 text) carry no prose.
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        if text.contains('\0') {
            continue;
        }
        let in_docs = rel.parent() == Some(Path::new("docs"));
        let own_name = in_docs
            .then(|| rel.file_name().map(|n| n.to_string_lossy().into_owned()))
            .flatten();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", rel.display(), n + 1);
            for why in outside_references(rel, line) {
                out.push(format!("{at}: {why}: {}", line.trim()));
            }
            for n in checklist_citations(line) {
                if !items.contains(&n) {
                    out.push(format!("{at}: docs/semantics.md has no checklist item {n}"));
                }
            }
            for r in doc_refs(line, own_name.as_deref()) {
                let known = doc_anchors.entry(r.file.clone()).or_insert_with(|| {
                    std::fs::read_to_string(root.join("docs").join(&r.file))
                        .ok()
                        .map(|md| anchors(&md))
                });
                match (known, &r.anchor) {
                    (None, _) => out.push(format!("{at}: docs/{} does not exist", r.file)),
                    (Some(set), Some(a)) if !set.contains(a) => out.push(format!(
                        "{at}: docs/{} has no heading with anchor #{a}",
                        r.file
                    )),
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn repository_refers_to_nothing_outside_itself() {
    let found = problems(&repo_root());
    assert!(
        found.is_empty(),
        "{} reference(s) point outside the repository or to missing docs:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_outside_references() {
    let rs = Path::new("core/src/x.rs");
    let md = Path::new("NOTES.md");
    let flagged = [
        (rs, concat!("// see ../", "shared/notes")),
        (md, concat!("as DESIGN", ".md says")),
        (md, concat!("spec/go-netpoll", ".md")),
        (rs, concat!("// house", "-style")),
        (rs, "// spec \u{a7}6 #12"),
        (md, concat!("the harness of iss", "ue 4")),
        (md, concat!("Iss", "ue #12 again")),
        (md, concat!("see iss", "ues #45211")),
        (md, concat!("DESIGN rul", "e 5")),
        (rs, concat!("// sticky expiry (D", "2)")),
        (rs, concat!("/// the Dekker pair, I", "1.")),
        (rs, concat!("// D", "11 allows it")),
        (rs, concat!("// edges (C", "4)")),
        (md, concat!("checklist D", "15.")),
    ];
    for (path, line) in flagged {
        assert!(
            !outside_references(path, line).is_empty(),
            "not flagged: {line:?}"
        );
    }
}

#[test]
fn the_checker_leaves_ordinary_text_alone() {
    let rs = Path::new("core/src/x.rs");
    let md = Path::new("NOTES.md");
    let clean = [
        (rs, "// checklist #12 of docs/semantics.md"),
        (rs, "// Go: netpollblock (golang/go#59545)"),
        (rs, "let d1 = D1;"), // code, not a comment
        (rs, "// an I2C bus, register 0xD1, CD4 and I/O"),
        (rs, "// the issue is that nothing wakes it"),
        (rs, "// a rule of thumb: 10 ms"),
        (
            md,
            "Figures in `docs/design.md#crates`; DESIGNS.md is another file.",
        ),
        (md, "A 100 ms deadline, row 6, rows 10 and 2."),
    ];
    // Words that merely end in the flagged ones; built at run time so that this file's own
    // text holds no line that reads like a reference.
    let suffix_words = ["tis", "sue 4 and overru", "le 5 are other words"].concat();
    let clean = clean.into_iter().chain([(md, suffix_words.as_str())]);
    for (path, line) in clean {
        let found = outside_references(path, line);
        assert!(found.is_empty(), "flagged {line:?}: {found:?}");
    }
}

#[test]
fn the_checker_reads_doc_references_and_anchors() {
    assert_eq!(
        doc_refs(
            "see `docs/semantics.md#stale-events`, and docs/design.md.",
            None
        ),
        [
            DocRef {
                file: "semantics.md".into(),
                anchor: Some("stale-events".into())
            },
            DocRef {
                file: "design.md".into(),
                anchor: None
            },
        ]
    );
    assert!(doc_refs("mydocs/x.md and docs/readme.mdx", None).is_empty());
    assert_eq!(
        doc_refs(
            "[a](semantics.md#waiter-count) [b](#crates)",
            Some("design.md")
        ),
        [
            DocRef {
                file: "semantics.md".into(),
                anchor: Some("waiter-count".into())
            },
            DocRef {
                file: "design.md".into(),
                anchor: Some("crates".into())
            },
        ]
    );
    assert_eq!(
        checklist_citations("checklist #54 and Checklist item 7; checklist of docs, checklist #"),
        [54, 7]
    );
    let list = "1. before\n## Conformance checklist\n\nIntro.\n### A. Read\n\n1. **[U]** One.\n2. Two\n   wrapped 3. not an item\n10. Ten.\n";
    assert_eq!(checklist_items(list), BTreeSet::from([1, 2, 10]));
    let md = "# Top\n## A. Read\n### `fdMutex` and co.\n```\n# not a heading\n```\n## Top\n";
    let got = anchors(md);
    let want: BTreeSet<String> = ["top", "a-read", "fdmutex-and-co", "top-1"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want);
}
