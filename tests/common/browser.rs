//! A real headless Chromium for the web page's tests (Debian's `chromium`),
//! driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! NUL-separated JSON on fds 3 and 4), in real time.
//!
//! `--virtual-time-budget` with `--dump-dom` is not enough: it lets the
//! page's WebSocket deliver the snapshot frame, but virtual time runs ahead
//! of the socket, so later frames never arrive before the dump.
//!
//! Chromium is required, never stubbed: without it a test fails and says
//! to run `bash scripts/test.sh`, which installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

use super::DEADLINE;

/// The longest one DevTools call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The browser to use: `FLEETGATE_TEST_CHROMIUM` (set by scripts/test.sh),
/// else /usr/bin/chromium. Panics, saying what to do, when there is none.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("FLEETGATE_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium not found at {} (FLEETGATE_TEST_CHROMIUM unset or wrong): this test needs a \
         real headless browser. Run `bash scripts/test.sh`, which installs Debian's `chromium` \
         and sets FLEETGATE_TEST_CHROMIUM.",
        path.display()
    );
    path
}

/// A headless Chromium driven over `--remote-debugging-pipe`.
pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    log: PathBuf,
}

impl Browser {
    /// Starts [`chromium`] with its profile and log in `dir`.
    pub async fn launch(dir: &Path) -> Browser {
        let browser = chromium();
        let log = dir.join("chromium.log");
        // The pipe is fds 3 (commands in) and 4 (answers out): the shell maps
        // our stdin and stdout there, and Chromium's own stdout to its log.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 1>&2"#)
            .arg(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-proxy-server",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let to = child.stdin.take().unwrap();
        let from = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            to,
            from,
            next_id: 0,
            log,
        }
    }

    /// Opens `url` in a new tab and returns the tab's session id.
    pub async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        attached["sessionId"].as_str().unwrap().to_owned()
    }

    /// Sends one DevTools command (to a page when `session` is given) and
    /// returns its result, skipping the events that arrive meanwhile.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            self.to.write_all(&bytes).await?;
            self.to.flush().await?;
            loop {
                let mut buf = Vec::new();
                if self.from.read_until(0, &mut buf).await? == 0 {
                    return Err(std::io::Error::other("chromium closed the DevTools pipe"));
                }
                buf.pop();
                let v: Value = serde_json::from_slice(&buf).map_err(std::io::Error::other)?;
                if v["id"] == json!(id) {
                    return Ok(v);
                }
            }
        })
        .await;
        let answer = match answer {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("DevTools {method}: {e}; chromium log:\n{}", self.log_tail()),
            Err(_) => panic!(
                "DevTools {method}: no answer within {CALL_TIMEOUT:?}; chromium log:\n{}",
                self.log_tail()
            ),
        };
        assert!(
            answer.get("error").is_none(),
            "DevTools {method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value (by value;
    /// a promise is awaited).
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "page threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` every 100 ms until `done` holds for its value,
    /// and returns that value; fails after [`DEADLINE`], saying `what` was
    /// awaited and what the page showed instead.
    pub async fn await_page(
        &mut self,
        session: &str,
        expression: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.eval(session, expression).await;
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; it shows {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A left click at page coordinates (CSS pixels), as a mouse makes it:
    /// press, then release at the same point.
    pub async fn click(&mut self, session: &str, x: f64, y: f64) {
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                Some(session),
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the focused element, as a keyboard's text input.
    pub async fn type_text(&mut self, session: &str, text: &str) {
        self.call(Some(session), "Input.insertText", json!({ "text": text }))
            .await;
    }

    /// A PNG screenshot of the page, written to
    /// `$CARGO_TARGET_TMPDIR/<dir>/<name>.png` for people (and CI
    /// artifacts) to look at; returns its path.
    pub async fn screenshot(&mut self, session: &str, dir: &str, name: &str) -> PathBuf {
        let shot = self
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        path
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call(None, "Browser.close", json!({})),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// Standard base64 (DevTools sends screenshots so).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
