//! WebSocket clients of the gateway: the live feed (`/ws`) and users'
//! notifications (`/notification`).

use futures_util::StreamExt;
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
