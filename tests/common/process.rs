//! Child processes: the gateway binary (so a test can SIGKILL it) and the
//! command-line tools the tests use as a person would.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;

use super::DEADLINE;

/// The gateway binary as a child process, so a test can SIGKILL it.
pub struct GatewayProcess {
    child: std::process::Child,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
}

impl GatewayProcess {
    /// Starts `fleetgate --config <config_path>` and waits until it says
    /// where it serves.
    pub fn start(config_path: &Path) -> GatewayProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(["--config", config_path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the gateway binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("fleetgate serving") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("the gateway says where it serves");
        let addr = |key: &str| -> SocketAddr {
            let rest = &line[line.find(key).unwrap() + key.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        GatewayProcess {
            child,
            mqtt: addr("mqtt_addr="),
            http: addr("http_addr="),
        }
    }

    pub fn sigkill(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix: no chance to flush anything
        self.child.wait().unwrap();
    }

    /// SIGTERM, as systemd stops it; waits for a clean exit.
    pub fn sigterm(mut self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "the gateway exits cleanly on SIGTERM: {status}"
                );
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails with a clear message when a command-line tool the test needs is
/// missing: these tests use the real tools, never a stand-in.
pub fn require_tool(name: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: run `bash scripts/test.sh`, which installs it (Debian: mosquitto-clients)"
    );
}
