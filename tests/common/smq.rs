//! SMQ helpers: a consumer that talks exactly as the seed's Go client
//! (`client/conn.go`) does, `/put`, `/stats?format=json`, and
//! `mosquitto_sub` / `mosquitto_pub` on SMQ topics.
//!
//! The seed's client, call for call: `WriteCommand` sends `NAME params\n`
//! (params joined by one space); `ReadResponse` sends `GET\n`, reads a
//! big-endian `int32` size, then **one** `Read` of that many bytes; a
//! message is 16 id bytes then the body; `FIN` sends the id as
//! `%x-%x-%x-%x-%x` of bytes 0..4, 4..6, 6..8, 8..10, 10..16 and reads
//! nothing after it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use fleetgate::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{http_get, require_tool, DEADLINE};

/// A message as the seed's client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedMessage {
    pub uuid: [u8; 16],
    pub body: Vec<u8>,
}

impl SeedMessage {
    /// The seed's `util.UuidToStr`.
    pub fn uuid_str(&self) -> String {
        let b = &self.uuid;
        let hex = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "{}-{}-{}-{}-{}",
            hex(&b[..4]),
            hex(&b[4..6]),
            hex(&b[6..8]),
            hex(&b[8..10]),
            hex(&b[10..])
        )
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct SeedClient {
    conn: TcpStream,
}

impl SeedClient {
    /// `Connect(address, port)`.
    pub async fn connect(addr: SocketAddr) -> SeedClient {
        let conn = TcpStream::connect(addr)
            .await
            .expect("connect to smq.listen");
        SeedClient { conn }
    }

    /// `WriteCommand`: `NAME p1 p2\n`, or `NAME\n`.
    pub async fn write_command(&mut self, name: &str, params: &[&str]) {
        let line = if params.is_empty() {
            format!("{name}\n")
        } else {
            format!("{name} {}\n", params.join(" "))
        };
        self.conn
            .write_all(line.as_bytes())
            .await
            .expect("write command");
    }

    /// `WriteCommand(Subscribe(topic, channel))`.
    pub async fn subscribe(&mut self, topic: &str, channel: &str) {
        self.write_command("SUB", &[topic, channel]).await;
    }

    /// `ReadResponse`: `GET`, then one frame read as the seed reads it.
    pub async fn get(&mut self) -> SeedMessage {
        self.write_command("GET", &[]).await;
        let payload = tokio::time::timeout(DEADLINE, self.read_frame())
            .await
            .expect("GET answered within the deadline");
        assert!(payload.len() >= 16, "a message frame: {payload:?}");
        SeedMessage {
            uuid: payload[..16].try_into().unwrap(),
            body: payload[16..].to_vec(),
        }
    }

    /// A size, then a single read of the payload, as `ReadResponse` does;
    /// fails if that one read did not return the whole payload.
    pub async fn read_frame(&mut self) -> Vec<u8> {
        let size = self.conn.read_i32().await.expect("read frame size");
        let mut buf = vec![0u8; size as usize];
        let n = self.conn.read(&mut buf).await.expect("read frame payload");
        assert_eq!(n, buf.len(), "the frame's payload arrives with one read");
        buf
    }

    /// A frame that must be an error string, e.g. `E_INVALID`.
    pub async fn read_error(&mut self) -> String {
        let payload = tokio::time::timeout(DEADLINE, self.read_frame())
            .await
            .expect("an error frame within the deadline");
        String::from_utf8(payload).expect("error strings are text")
    }

    /// `WriteCommand(Finish(UuidToStr(msg.Uuid())))`.
    pub async fn finish(&mut self, msg: &SeedMessage) {
        self.write_command("FIN", &[&msg.uuid_str()]).await;
    }

    /// `WriteCommand(Requeue(UuidToStr(msg.Uuid())))`.
    pub async fn requeue(&mut self, msg: &SeedMessage) {
        self.write_command("REQ", &[&msg.uuid_str()]).await;
    }

    /// Raw bytes, for malformed lines.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).await.expect("write");
    }

    /// True once the gateway has closed the connection (EOF), within the deadline.
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(DEADLINE, self.conn.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

/// POST `/put?topic=…` with `body`; status and response body.
pub async fn smq_put(http: SocketAddr, query: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(http).await.expect("connect http");
    let head = format!(
        "POST /put?{query} HTTP/1.1\r\nHost: {http}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `/put` that must answer `OK`.
pub async fn put_ok(gw: &Gateway, topic: &str, body: &str) {
    let (status, text) = smq_put(gw.http_addr, &format!("topic={topic}"), body.as_bytes()).await;
    assert_eq!((status, text.as_str()), (200, "OK"), "/put?topic={topic}");
}

pub async fn smq_stats(gw: &Gateway) -> serde_json::Value {
    let (status, body) = http_get(gw.http_addr, "/stats?format=json").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("stats are JSON")
}

/// One channel's figures from `/stats?format=json`, if it exists.
pub fn channel_stats(
    stats: &serde_json::Value,
    topic: &str,
    channel: &str,
) -> Option<serde_json::Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == channel)
        .cloned()
}

/// Waits until `/stats` shows `channel` of `topic` with `consumers`
/// consumers: a `SUB` has no answer, so this is how a test knows it took.
pub async fn await_consumers(gw: &Gateway, topic: &str, channel: &str, consumers: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stats = smq_stats(gw).await;
        if channel_stats(&stats, topic, channel).is_some_and(|c| c["consumers"] == consumers) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic}/{channel} never had {consumers} consumers: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `mosquitto_sub -t filter -v -d`, its lines on a channel.
pub struct MosquittoSub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl MosquittoSub {
    pub fn start(port: u16, filter: &str) -> MosquittoSub {
        MosquittoSub::start_at_qos(port, filter, 0)
    }

    /// The same, subscribing at `qos` (`-q`).
    pub fn start_at_qos(port: u16, filter: &str, qos: u8) -> MosquittoSub {
        MosquittoSub::start_with(port, filter, qos, &[])
    }

    /// The same, with more of mosquitto_sub's arguments (`-u`, `-P`, …).
    pub fn start_with(port: u16, filter: &str, qos: u8, extra: &[&str]) -> MosquittoSub {
        require_tool("mosquitto_sub");
        // stdbuf: mosquitto_sub block-buffers stdout into a pipe otherwise.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["-t", filter, "-v", "-d", "-q", &qos.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        MosquittoSub { child, lines }
    }

    /// Every line up to and including the first containing `needle`
    /// (blocking): what it printed before, to check what it did not get.
    pub fn lines_until(&self, needle: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(needle);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "mosquitto_sub printed no line with {needle:?} in time; it printed {seen:#?}"
                ),
            }
        }
    }

    /// The first line containing `needle` (blocking; call from spawn_blocking).
    pub fn await_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("mosquitto_sub printed no line with {needle:?} in time"),
            }
        }
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub -t topic -m message`; true when it exited 0.
pub fn mosquitto_pub_text(port: u16, topic: &str, message: &str) -> bool {
    require_tool("mosquitto_pub");
    Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            message,
        ])
        .status()
        .expect("run mosquitto_pub")
        .success()
}
