//! Test support (feature `tap`): run a test inside a network namespace of its own.
//!
//! A TAP device must live in a namespace the test creates itself, so the test re-runs its own
//! binary there: [`in_netns`] creates a namespace, runs `ip netns exec NS <this exe> <test>
//! --exact` with [`INSIDE`] set, checks that exactly that test ran and passed, and deletes the
//! namespace whatever happened. Inside, [`in_netns`] simply runs the body. Namespace names
//! carry the process id and a counter, so tests run in parallel.
//!
//! Without root, iproute2 or `/dev/net/tun` a test skips with a message; with `CI=true` (CI
//! runs as root) that is a failure, never a silent skip.

use netpoll_core::sync::{AtomicU32, Ordering};
use std::io::Read;
use std::process::{Command, Stdio};
use std::string::String;
use std::time::{Duration, Instant};
use std::{eprint, eprintln, format, panic};

/// Set (to the namespace's name) in the re-run test binary: "you are inside, run the body".
pub const INSIDE: &str = "NETPOLL_NETNS";

/// How long the outer test waits for the re-run binary before killing it.
pub const OUTER_LIMIT: Duration = Duration::from_secs(90);

/// Runs `ip ARGS`; the error says what failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("ip {}: {e}", args.join(" "))),
    }
}

/// Skips `test` with a message, or fails it when `CI=true`.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; CI must run the tests that need a network namespace");
    }
    eprintln!("SKIP {test}: {why}");
}

/// Deletes the namespace when dropped, whatever happened.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.0]) {
            eprintln!("could not delete network namespace {}: {e}", self.0);
        }
    }
}

/// Runs `body` inside a fresh network namespace: outside, re-runs test `test` (its full
/// libtest name) of this binary in a new namespace `<prefix>-<pid>-<n>` and asserts it passed;
/// inside, runs `body`.
///
/// # Panics
/// If the test failed inside, did not run there (wrong name), or took longer than
/// [`OUTER_LIMIT`]; and when it cannot run at all under `CI=true`.
pub fn in_netns(test: &str, prefix: &str, body: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        body();
        return;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return skip(test, "no /dev/net/tun");
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = ip(&["netns", "add", &name]) {
        return skip(
            test,
            &format!("cannot create a network namespace (needs root and iproute2): {e}"),
        );
    }
    let netns = Netns(name);
    let (ok, stdout, stderr) = run_in(&netns.0, test);
    drop(netns);
    // Shown when the test fails (libtest captures this thread's output).
    eprint!("--- inside the namespace ---\n{stdout}{stderr}");
    assert!(ok, "{test} failed inside its network namespace");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run inside its namespace (test name not found?)"
    );
}

/// Runs `<exe> <test> --exact` in namespace `ns`, at most [`OUTER_LIMIT`]. Returns (passed,
/// stdout, stderr).
fn run_in(ns: &str, test: &str) -> (bool, String, String) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, ns)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test inside its namespace");
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for the inner test") {
            Some(status) => break Some(status),
            None if start.elapsed() > OUTER_LIMIT => {
                // Our own child, by its handle (pid).
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\nkilled after {OUTER_LIMIT:?}\n"));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}
