//! WebSocket clients of the gateway: the live feed (`/ws`), users'
//! notifications (`/notification`), and the pub/sub proxy (`/message`) as
//! the seed's client talks to it.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::DEADLINE;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `ws://<http><path_and_query>`, e.g. `/ws?vehicle_ids=a,b`.
pub async fn ws_connect(http: std::net::SocketAddr, path_and_query: &str) -> Ws {
    let url = format!("ws://{http}{path_and_query}");
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects")
        .0
}

/// The next text frame; any other message (the gateway's liveness pings,
/// pongs) is skipped, as a WebSocket client does.
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => {}
            other => panic!("expected a text frame, the feed ended: {other:?}"),
        }
    }
}

/// The next text frame, as JSON.
pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).expect("frame is JSON")
}

/// A client of `/message`, as the seed's client talks.
pub struct SeedPubSub {
    pub ws: Ws,
}

impl SeedPubSub {
    pub async fn connect(gw: &fleetgate::Gateway) -> SeedPubSub {
        SeedPubSub::connect_at(gw.http_addr, "/message").await
    }

    /// The same at `path_and_query` (`/message?access_token=…`).
    pub async fn connect_at(http: std::net::SocketAddr, path_and_query: &str) -> SeedPubSub {
        SeedPubSub {
            ws: ws_connect(http, path_and_query).await,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("frame sent");
    }

    pub async fn subscribe(&mut self, topic: &str) {
        let req = json!({"action": "subscribe", "topic": topic});
        self.send_text(&req.to_string()).await;
    }

    pub async fn unsubscribe(&mut self, topic: &str) {
        let req = json!({"action": "unsubscribe", "topic": topic});
        self.send_text(&req.to_string()).await;
    }

    pub async fn publish(&mut self, topic: &str, message: &str) {
        let req = json!({"action": "publish", "topic": topic, "message": message});
        self.send_text(&req.to_string()).await;
    }

    pub async fn next(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    /// Publishes to its own `probe` topic (subscribed first) and waits for
    /// it: every subscription it queued before is then in the broker.
    pub async fn sync(&mut self, probe: &str) {
        self.subscribe(probe).await;
        self.publish(probe, "sync").await;
        let frame = self.next().await;
        assert_eq!(frame, publish_frame(probe, "sync"));
    }
}

/// What `/message` sends a subscriber of `topic`.
pub fn publish_frame(topic: &str, message: &str) -> Value {
    json!({"action": "publish", "topic": topic, "message": message})
}
